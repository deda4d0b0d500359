"""SpeechBrain's docstring gate, applied to the package, tools/ and recipes/.

The gate is SpeechBrain's ``tests/utils/check_docstrings.py``
(speechbrain/speechbrain@9c826ef3937bac885c8a6ca86c6889a30f256fb5), which
``tests/consistency/test_docstrings.py`` runs in CI (``pytest
tests/consistency`` in ``.github/workflows/pythonapp.yml``) on every ``.py``
path under the repository that contains ``speechbrain``, ``tools`` or
``templates`` (a substring match, ``get_all_files``' ``match_or``), skipping
any path that contains ``__``. SpeechBrain's recipes are not checked. Here
the same rule runs on ``speechbrain_unipet/`` and ``tools/`` (what it would
select in this repository), and on ``recipes/`` and the ``__init__.py`` /
``__main__.py`` files too (ours hold code).

``gate_errors`` writes SpeechBrain's rule anew, quirks included. It reads a
file line by line (``check_docstrings``, lines 63-137):

* each line is stripped; lines that are empty, start with ``#``, or contain
  ``>>>`` or ``...`` anywhere are skipped, as if absent (lines 79-87);
* the first remaining line of the file must start with ``"`` or ``r"``
  (the module docstring);
* a line starting with ``def`` that matches ``def\\s(.*)\\(.*\\):`` (the
  whole signature on one line, ``)`` right before ``:``, so no return
  annotation) opens a function, unless its name starts with ``_``; a line
  starting with ``class`` that matches ``class\\s(.*):`` opens a class
  (lines 28-31 and 126-137). Indentation is stripped, so methods and nested
  functions count; so do such lines inside strings and docstrings;
* the next remaining line after an opening must start with ``"`` or ``r"``
  (lines 89-124). A docstring whose first line holds ``...`` is skipped
  like any such line, so the line after it is the one checked: it counts as
  missing unless that line starts with ``"`` too. Single-quoted docstrings
  count as missing.

Since that regex misses the ``def`` lines of signatures that span several
lines or carry a return annotation (most of ruff-formatted code), the
``ast`` check ``missing_docstrings`` runs as well: every module, class and
function or method (nested ones too) whose name does not start with ``_``
has a docstring. Both only check presence; the NumPy-style sections
(Arguments, Returns, Example) asked for by SpeechBrain's ``DOCSTRINGS.md``
are not enforced there, so not here either.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECK_FOLDERS = ["speechbrain_unipet", "tools", "recipes"]
FILES = sorted(
    path.relative_to(ROOT).as_posix()
    for folder in CHECK_FOLDERS
    for path in (ROOT / folder).rglob("*.py")
)

DEF_RE = re.compile(r"def\s(.*)\(.*\):")
CLASS_RE = re.compile(r"class\s(.*):")


def gate_errors(source):
    """Lists what SpeechBrain's line-based docstring gate rejects.

    Arguments
    ---------
    source : str
        The Python source of the module.

    Returns
    -------
    list of str
        One line per rejection, e.g. ``"function f (line 3: return 1)"``:
        what lacks a docstring, and the line read in its place.

    Example
    -------
    >>> gate_errors('"Doc."\\ndef f(x):\\n    return x')
    ['function f (line 3: return x)']

    A first docstring line holding an ellipsis is skipped, so it counts as
    missing, unless the next line starts with a quote:

    >>> q = '"' * 3
    >>> gate_errors(f'"Doc."\\ndef f(x):\\n    {q}Maps [..., d].{q}\\n    pass')
    ['function f (line 4: pass)']
    >>> gate_errors(f'"Doc."\\ndef f(x):\\n    {q}Maps [..., d].\\n    {q}')
    []

    Single quotes do not count; ``r"`` does; private names are skipped:

    >>> gate_errors("'Doc.'\\nclass A:\\n    r'''Doc.'''")
    ["module (line 1: 'Doc.')", "class A (line 3: r'''Doc.''')"]
    >>> gate_errors('r"Doc."\\ndef _f(x):\\n    pass')
    []

    Signatures over several lines or with a return annotation are not seen
    (``missing_docstrings`` catches those):

    >>> gate_errors('"Doc."\\ndef f(x) -> int:\\n    return x')
    []
    """
    errors = []
    expected = "module"  # what the next line read must document
    for lineno, raw in enumerate(source.split("\n"), start=1):
        line = raw.strip()
        if not line or line[0] == "#" or ">>>" in line or "..." in line:
            continue
        if expected:
            if not line.startswith(('"', 'r"')):
                errors.append(f"{expected} (line {lineno}: {line[:60]})")
            expected = None
            continue
        if line.startswith("def"):
            name = "".join(DEF_RE.findall(line))
            if name.startswith("_"):
                continue
            if name:
                expected = f"function {name}"
        elif line.startswith("class"):
            name = "".join(CLASS_RE.findall(line))
            if name:
                expected = f"class {name}"
    return errors


def missing_docstrings(source):
    """Lists the public objects of one module's source without a docstring.

    Arguments
    ---------
    source : str
        The Python source of the module.

    Returns
    -------
    list of str
        One line per object without a docstring, e.g. ``"function f"``.

    Example
    -------
    >>> missing_docstrings("'Doc.'\\nclass A:\\n    def f(self): pass")
    ['class A', 'function A.f']
    >>> missing_docstrings("def _private(): pass")
    ['module']
    """
    tree = ast.parse(source)
    missing = [] if ast.get_docstring(tree) else ["module"]

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                kind, public = "class", True
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                kind, public = "function", not child.name.startswith("_")
            else:
                visit(child, prefix)  # defs inside if/try/with blocks
                continue
            name = prefix + child.name
            if public and not ast.get_docstring(child):
                missing.append(f"{kind} {name}")
            visit(child, name + ".")

    visit(tree, "")
    return missing


def test_files_found():
    # Guards against the parametrisation silently going empty.
    assert "speechbrain_unipet/__init__.py" in FILES
    for folder in CHECK_FOLDERS:
        assert any(f.startswith(folder + "/") for f in FILES), folder


@pytest.mark.parametrize("path", FILES)
def test_speechbrain_gate(path):
    errors = gate_errors((ROOT / path).read_text(encoding="utf-8"))
    assert not errors, (
        f"{path}: SpeechBrain's check_docstrings finds no docstring for: "
        + "; ".join(errors)
    )


@pytest.mark.parametrize("path", FILES)
def test_docstrings(path):
    missing = missing_docstrings((ROOT / path).read_text(encoding="utf-8"))
    assert not missing, f"{path} lacks docstrings: " + ", ".join(missing)
