"""The one base class of the errors a user can fix.

Every error this package raises about its input (a setting, a file, a
folder, a trial list, audio...) derives from ``UserError`` and says what to
fix. The command line and the recipe scripts catch ``UserError`` once and
print its message without a traceback; anything else is a bug and keeps
its traceback.

Authors
 * speechbrain-unipet contributors 2026
"""


class UserError(Exception):
    """An input that cannot work; the message names it and the fix.

    Example
    -------
    >>> class BadSetting(UserError, ValueError):
    ...     pass
    >>> try:
    ...     raise BadSetting("lr must be positive: give --lr=0.001")
    ... except UserError as err:
    ...     print(err)
    lr must be positive: give --lr=0.001
    """


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named (or a run must hold) is missing.

    Example
    -------
    >>> isinstance(MissingFileError("no hyperparams.yaml"), FileNotFoundError)
    True
    """
