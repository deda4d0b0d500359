"""speechbrain-unipet: parameter-efficient tuning of SSL speech encoders for
speaker verification, as SpeechBrain lobes and recipes."""

import logging
import warnings
from importlib import metadata

from packaging.specifiers import SpecifierSet
from packaging.version import Version

__version__ = "0.1.0"


def _not_torchvision_notice(record):
    """False for SpeechBrain's import-time notice that torchvision (an
    optional dependency for saving image samples, which no recipe here
    does) is missing: nobody can act on it, and it shows on every run."""
    return "torchvision is not available" not in record.getMessage()


logging.getLogger("speechbrain.utils.train_logger").addFilter(
    _not_torchvision_notice
)

# The exact versions CI installs (constraints.txt pins them) and the tests
# pass with. setup.cfg's install_requires allows wider ranges; the backbone
# code relies on HF's calling conventions (layer outputs, attention masks,
# feature extractor) and on SpeechBrain's lobes, which change between minor
# releases, so an import outside the tested minor release warns.
# tests/test_versions.py checks that these equal constraints.txt's pins.
TESTED_VERSIONS = {
    "transformers": "5.23.0",
    "speechbrain": "1.1.2",
}


def range_tested(name):
    """The range of ``name`` that counts as tested: the tested version up to
    the next minor release (patch releases only fix bugs).

    Arguments
    ---------
    name : str
        A package of ``TESTED_VERSIONS``.

    Returns
    -------
    str
        A version specifier, e.g. ``">=5.23.0,<5.24"``.

    Example
    -------
    >>> range_tested("transformers")
    '>=5.23.0,<5.24'
    """
    tested = Version(TESTED_VERSIONS[name])
    return f">={tested},<{tested.major}.{tested.minor + 1}"


def check_versions(versions=None):
    """Warns about each dependency installed outside its tested range
    (``range_tested``: the ``TESTED_VERSIONS`` minor release).

    Runs once at ``import speechbrain_unipet``. It reads package metadata
    only (no import of ``transformers``), so it costs nothing noticeable.

    Arguments
    ---------
    versions : dict, optional
        Package name -> installed version string. ``None`` looks the
        packages of ``TESTED_VERSIONS`` up with ``importlib.metadata``; a
        package that is not installed is skipped (its import fails later,
        with its own error).

    Returns
    -------
    list of str
        The warning messages, one per package outside its tested range
        (each also emitted as a ``UserWarning``).

    Example
    -------
    >>> check_versions({"transformers": "5.23.1", "speechbrain": "1.1.2"})
    []
    >>> import warnings
    >>> with warnings.catch_warnings(record=True):
    ...     messages = check_versions({"transformers": "4.40.0"})
    >>> print(messages[0])  # doctest: +ELLIPSIS
    speechbrain-unipet was tested with transformers 5.23.0, but transformers 4.40.0 is installed; ...
    """
    if versions is None:
        versions = {}
        for name in TESTED_VERSIONS:
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                pass
    messages = []
    for name, installed in versions.items():
        # prereleases=True: a 5.23.1.dev0 build is still the tested series.
        if SpecifierSet(range_tested(name)).contains(
            installed, prereleases=True
        ):
            continue
        tested = TESTED_VERSIONS[name]
        message = (
            f"speechbrain-unipet was tested with {name} {tested}, but {name} "
            f"{installed} is installed; the SSL backbones may break or "
            f"behave differently. Install the tested version with: "
            f"pip install '{name}=={tested}' (or the whole tested set with "
            f"-c constraints.txt from the repository)"
        )
        warnings.warn(message, UserWarning, stacklevel=2)
        messages.append(message)
    return messages


check_versions()
