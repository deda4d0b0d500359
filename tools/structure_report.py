"""Prints the package's structure figures (issue 28): the largest modules
in lines of code (docstrings, comments and blank lines excluded), the
package imports made inside functions, and the import edges that point up
the layer stack (with the layer each former flat module moved to, so the
figures of an older checkout compare with today's).

Run from a checkout: ``python tools/structure_report.py [PACKAGE_DIR]``.
"""

import ast
import io
import pathlib
import sys
import tokenize

NAME = "speechbrain_unipet"
LAYERS = {
    "utils": 0,
    "pet": 1,
    "backbones": 1,
    "lobes": 2,
    "data": 3,
    "scoring": 4,
    "training": 5,
    "evaluation": 6,
}
#: Layer of each former flat module (where its code lives now).
FORMER = {
    "audio": 0,
    "precision": 0,
    "embedding": 2,
    "data_prep": 3,
    "metrics": 4,
    "scoring": 4,
    "store": 4,
    "calibration": 4,
    "recipe": 5,
    "checkpoints": 5,
    "losses": 5,
    "schedules": 5,
    "extraction": 6,
    "conditions": 6,
    "evaluation": 6,
    "plotting": 6,
}
SHIM_MARK = "kept as an import path"


def code_lines(text):
    """Lines holding code: no blank, comment or docstring lines."""
    tree = ast.parse(text)
    doc_lines = set()
    for node in ast.walk(tree):
        if isinstance(
            node,
            (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef),
        ):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                doc_lines.update(range(body[0].lineno, body[0].end_lineno + 1))
    lines = set()
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type in (
            tokenize.COMMENT,
            tokenize.NL,
            tokenize.NEWLINE,
            tokenize.INDENT,
            tokenize.DEDENT,
            tokenize.ENDMARKER,
        ):
            continue
        lines.update(range(tok.start[0], tok.end[0] + 1))
    return len(lines - doc_lines)


def layer(parts):
    """Layer of a module given as name parts below the package."""
    if not parts:
        return 7
    if parts[0] in LAYERS:
        return LAYERS[parts[0]]
    return FORMER.get(parts[0], 7)


def main(package):
    """Prints the figures of one package folder.

    Arguments
    ---------
    package : str or pathlib.Path
        The ``speechbrain_unipet`` folder of a checkout.
    """
    package = pathlib.Path(package)
    sizes, inner, up = [], [], set()
    for path in sorted(package.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(package).with_suffix("").parts
        rel = rel[:-1] if rel[-1] == "__init__" else rel
        if SHIM_MARK in text[:400]:
            continue  # a former path, re-exports only
        tree = ast.parse(text)
        sizes.append(
            (code_lines(text), "/".join(path.relative_to(package).parts))
        )
        funcs = [
            n
            for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
        ]
        inside = {
            id(i)
            for f in funcs
            for i in ast.walk(f)
            if isinstance(i, (ast.Import, ast.ImportFrom))
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                if node.level:
                    base = list(rel if path.name == "__init__.py" else rel[:-1])
                    base = base[: len(base) - node.level + 1]
                    target = base + (module.split(".") if module else [])
                elif module.startswith(NAME + "."):
                    target = module.split(".")[1:]
                else:
                    continue
            elif isinstance(node, ast.Import):
                names = [
                    a.name for a in node.names if a.name.startswith(NAME + ".")
                ]
                if not names:
                    continue
                target = names[0].split(".")[1:]
            else:
                continue
            if id(node) in inside:
                inner.append(f"{'.'.join(rel)}: {ast.unparse(node)}")
            if layer(target) > layer(list(rel)):
                up.add(f"{'.'.join(rel)} -> {'.'.join(target[:2])}")
    sizes.sort(reverse=True)
    print(f"modules: {len(sizes)} (former paths kept as re-exports excluded)")
    print("largest modules, lines of code (no docstrings/comments/blanks):")
    for loc, name in sizes[:5]:
        print(f"  {loc:5d}  {name}")
    print(f"package imports inside functions: {len(inner)}")
    for line in inner:
        print("  " + line)
    print(f"import edges pointing up the layers: {len(up)}")
    for line in sorted(up):
        print("  " + line)


if __name__ == "__main__":
    here = pathlib.Path(__file__).resolve().parents[1] / NAME
    main(sys.argv[1] if len(sys.argv) > 1 else here)
