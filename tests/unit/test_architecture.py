"""The package's layering, read from its source: imports only go down the
stack, no package import hides inside a function, nothing imports the
former module paths, and ``transformers`` stays in ``backbones/``.

Layers, bottom first (a module may import its own layer and below, and a
layer's own imports must not form a cycle):

0. ``utils``: audio, files, errors, precision;
1. ``pet``, ``backbones``: PET components, HF SSL backbones;
2. ``lobes``: the encoder, back-ends and the embedding path;
3. ``data``: layouts, trials, preparation;
4. ``scoring``: metrics, cosine / AS-norm, store, calibration;
5. ``training``: hparams, pipelines, validator, warm start, runs...;
6. ``evaluation``: utterances, extraction, conditions, reports, plots;
7. the entry points: ``export``, ``inference``, ``cli``, ``demo``.
"""

import ast
import importlib.util
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = REPO / "speechbrain_unipet"
NAME = "speechbrain_unipet"


def _structure_report():
    """``tools/structure_report.py`` as a module: the one layer table."""
    spec = importlib.util.spec_from_file_location(
        "structure_report", REPO / "tools" / "structure_report.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LAYERS = _structure_report().LAYERS
TOP = 7

#: Former flat modules, kept as re-exports for saved hyperparams.yaml files,
#: exported folders and user scripts. Nothing in the package imports them.
FORMER_PATHS = {
    "audio",
    "calibration",
    "checkpoints",
    "conditions",
    "data_prep",
    "embedding",
    "extraction",
    "losses",
    "metrics",
    "plotting",
    "precision",
    "recipe",
    "schedules",
    "store",
}

#: Imports a function may make: optional dependencies, loaded on use.
OPTIONAL = {"matplotlib", "tensorboard", "onnx", "onnxruntime", "pyannote"}


def module_name(path):
    """Dotted name of a package file."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_modules():
    """Dotted name -> parsed tree of every module, former paths excluded."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        if name.split(".")[1:2] and name.split(".")[1] in FORMER_PATHS:
            continue
        out[name] = ast.parse(path.read_text(encoding="utf-8"))
    return out


def imported(node, here, is_package):
    """Absolute module names an import statement names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = here.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    if module in (NAME,) or not node.level and not module.startswith(NAME):
        return [module]
    # "from speechbrain_unipet.scoring import cosine" names a submodule
    return [module] + [f"{module}.{a.name}" for a in node.names]


def layer(module):
    """The layer of a package module (its first component below the
    package), ``TOP`` for the entry points."""
    parts = module.split(".")
    if len(parts) < 2:
        return TOP
    return LAYERS.get(parts[1], TOP)


def resolve(target, modules):
    """The package module an import names: the longest known prefix of
    ``target`` (a name imported from a module is not a module), or
    ``target`` itself when none is known (a former path)."""
    parts = target.split(".")
    for end in range(len(parts), 1, -1):
        if ".".join(parts[:end]) in modules:
            return ".".join(parts[:end])
    return target


def package_edges(modules):
    """(importer, imported module) for every package import, and the
    function-level import statements apart, as (module, statement)."""
    edges, in_functions = set(), []
    for name, tree in modules.items():
        is_package = (PACKAGE.parent / name.replace(".", "/")).is_dir()
        inner = {
            id(i)
            for f in ast.walk(tree)
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
            for i in ast.walk(f)
            if isinstance(i, (ast.Import, ast.ImportFrom))
        }
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets = [
                t
                for t in imported(node, name, is_package)
                if t.split(".")[0] == NAME and t != NAME
            ]
            if id(node) in inner and targets:
                in_functions.append((name, ast.unparse(node)))
            for target in targets:
                target = resolve(target, modules)
                if target != name:
                    edges.add((name, target))
    return sorted(edges), in_functions


def upward_edges(edges):
    """Edges from a lower layer to a higher one."""
    return sorted({(a, b) for a, b in edges if layer(b) > layer(a)})


def cycles(edges):
    """Strongly connected groups of more than one module."""
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def test_imports_only_go_down():
    edges, _ = package_edges(package_modules())
    assert upward_edges(edges) == []


def test_no_import_cycle():
    edges, _ = package_edges(package_modules())
    # a package's __init__ re-exporting its own modules is not a cycle
    own = [
        (a, b)
        for a, b in edges
        if not (b.startswith(a + ".") or a.startswith(b + "."))
    ]
    assert cycles(own) == []


def test_no_function_level_package_import():
    _, in_functions = package_edges(package_modules())
    assert in_functions == []


def test_nothing_imports_a_former_path():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if parts[0] == NAME and len(parts) == 2:
                    if parts[1] in FORMER_PATHS:
                        offenders.append((module_name(path), node.module))
    assert offenders == []


def test_the_rules_see_a_violation():
    """The checks above on a made-up graph: an upward edge and a cycle."""
    edges = [
        ("speechbrain_unipet.utils.audio", "speechbrain_unipet.training.runs"),
        ("speechbrain_unipet.export", "speechbrain_unipet.inference"),
        ("speechbrain_unipet.inference", "speechbrain_unipet.export"),
    ]
    assert upward_edges(edges) == [edges[0]]
    assert cycles(edges) == [
        ["speechbrain_unipet.export", "speechbrain_unipet.inference"]
    ]
