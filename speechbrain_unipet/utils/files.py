"""Small file helpers shared by every stage: atomic writes and plain YAML.

Authors
 * speechbrain-unipet contributors 2026
"""

import io
import os
import pathlib

from ruamel.yaml import YAML


def atomic_write(path, text):
    """Writes ``text`` to ``path`` through a temporary file in the same
    folder and a rename, so readers never see a partial file.

    Arguments
    ---------
    path : str or pathlib.Path
        Destination.
    text : str
        Content (UTF-8).

    Example
    -------
    >>> p = getfixture("tmp_path") / "r.json"
    >>> atomic_write(p, "{}")
    >>> p.read_text()
    '{}'
    """
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def dump_yaml(data):
    """Plain YAML text of a mapping."""
    out = io.StringIO()
    YAML().dump(data, out)
    return out.getvalue()
