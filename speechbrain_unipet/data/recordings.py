"""What a data layout lists: ``Recording`` (one utterance of a corpus), the
audio files under a folder, and the error every layout raises for data that
cannot be used. The layouts (``layouts``, ``cnceleb``) build on it.

Authors
 * speechbrain-unipet contributors 2026
"""

import dataclasses
import os
import re

from speechbrain_unipet.utils.errors import UserError

AUDIO_EXTENSIONS = (
    ".wav",
    ".flac",
    ".ogg",
    ".opus",
    ".mp3",
    ".m4a",
    ".aac",
    ".sph",
)


_WHITESPACE = re.compile(r"\s+")


class DataPreparationError(UserError, ValueError):
    """Raised for data that cannot be used, with the file and the fix."""


@dataclasses.dataclass
class Recording:
    """One utterance of the corpus: a file, or a region of it (seconds).

    ``origin`` is where it was listed (``file:line``, named in errors);
    ``group`` the unit within which short utterances of the speaker may be
    combined (per layout: ``speechbrain_unipet.data.layouts``), ``""`` for
    none.
    """

    uid: str
    path: str
    speaker: str
    start: float | None = None
    stop: float | None = None
    origin: str = ""
    group: str = ""


def audio_files(root):
    """``(relative path without extension, full path)`` of every audio file
    under ``root``, sorted (string operations: this runs once per file)."""
    root = str(root)
    for dirpath, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        rel_dir = os.path.relpath(dirpath, root)
        prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        for name in sorted(files):
            stem, ext = os.path.splitext(name)
            if ext.lower() in AUDIO_EXTENSIONS:
                # Trial lists are whitespace-separated: no spaces in ids.
                uid = _WHITESPACE.sub("_", prefix + stem)
                yield uid, os.path.join(dirpath, name)


def _read_text(path):
    """A text file's content; a wrong encoding is an error naming it."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return f.read()
    except UnicodeDecodeError as err:
        raise DataPreparationError(
            f"'{path}' is not UTF-8 text ({err}); save it as UTF-8"
        ) from err


def listed(problems, limit=5):
    """The first ``limit`` of ``problems`` as indented lines, and how many
    more there are (for errors that name every bad file of a corpus).

    Arguments
    ---------
    problems : list of str
    limit : int

    Returns
    -------
    str

    Example
    -------
    >>> print(listed(["a.wav: empty", "b.wav: empty", "c.wav: empty"], 2))
    <BLANKLINE>
      a.wav: empty
      b.wav: empty
      ... and 1 more
    """
    more = len(problems) - limit
    return (
        "\n  "
        + "\n  ".join(problems[:limit])
        + (f"\n  ... and {more} more" if more > 0 else "")
    )
