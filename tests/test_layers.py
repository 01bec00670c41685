"""The import graph reads top to bottom: no module imports from a layer above its own.

Layers, lowest first (a module may import from its own layer and every layer below):

    0 foundation     engine.errors, io, registry, config, record, layout (and the engine package
                     itself): no torch model, no data; every layer may use them
    1 data, models   datasets, clip: the dataset classes and CLIP, on the foundation only
    2 run core       the other engine modules (data, features, trainer, checkpoint, models, and
                     describe and recipes, which read a method's facts and its recipe, ...):
                     engine/data.py and engine/features.py build datasets and engine/models.py
                     loads CLIP, so datasets and clip sit below the engine modules that use them
    3 methods        trainers, and dassl (the compatibility package for reference trainers)
    4 train.py       one run
    5 tools          sweep.py, analysis (tables, curves, log parsing)
    6 studies        studies (they import train.py and analysis), parse_test_res.py
    7 study.py       the study command line
    8 helpers        synthetic (demo data and runs), benchmarks

Imports inside functions count as well. Discovery by name (engine/registry.py imports the
package a registry names on first use, trainers/__init__.py its modules) is not an import
edge: it only reaches the layer that registered into the core.
"""
import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FOUNDATION = ("engine.errors", "engine.io", "engine.registry", "engine.config", "engine.record", "engine.layout")
LAYERS = [  # (module or package prefix, layer); the longest matching prefix decides
    ("engine", 2), *((m, 0) for m in FOUNDATION),
    ("datasets", 1), ("clip", 1),
    ("trainers", 3), ("dassl", 3),
    ("train", 4),
    ("sweep", 5), ("analysis", 5),
    ("studies", 6), ("parse_test_res", 6),
    ("study", 7),
    ("synthetic", 8), ("benchmarks", 8), ("prepare_datasets", 8),
]
SKIP_DIRS = {"tests", "scripts", "configs", "docs", "__pycache__"}


def layer(module):
    best = None
    for prefix, n in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, n)
    return None if best is None else best[1]


def modules():
    """{module name: file path} of the repository's Python files outside tests."""
    found = {}
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS)
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                found[module[:-len(".__init__")] if module.endswith(".__init__") else module] = path
    return found


def imported(module, path, known):
    """[(line, imported module)] of every import in the file, at any depth, resolved to a known module."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package
                for _ in range(node.level - 1):
                    parent = parent.rpartition(".")[0]
                base = f"{parent}.{base}" if base else parent
            names += [(node.lineno, base)] + [(node.lineno, f"{base}.{a.name}") for a in node.names]
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names.append((node.lineno, node.args[0].value))  # a literal name is an import too
    out = set()
    for line, name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            out.add((line, name))
    return sorted(out)


def test_every_module_has_a_layer():
    assert [m for m in modules() if layer(m) is None] == []


def test_no_module_imports_from_a_layer_above_its_own():
    known = modules()
    climbs = []
    for module, path in sorted(known.items()):
        for line, target in imported(module, path, known):
            if layer(target) > layer(module):
                climbs.append(f"{os.path.relpath(path, REPO)}:{line}: {module} (layer {layer(module)}) imports "
                              f"{target} (layer {layer(target)})")
    assert climbs == [], "\n".join(climbs)


def test_the_graph_check_sees_lazy_and_relative_imports(tmp_path):
    path = tmp_path / "mod.py"
    path.write_text("def f():\n    from .plan import Run\n    import train\n")
    known = {"studies.worker": str(path), "studies.plan": "", "train": ""}
    assert imported("studies.worker", str(path), known) == [(2, "studies.plan"), (3, "train")]
