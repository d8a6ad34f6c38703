"""The package's shape: each folder of helpers/ holds one stage of the data flow, and a module imports
only from its own level or lower ones (read from the source with ``ast``, imports inside functions
included), with no cycle between modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "helpers"

# Level of each module, lowest first; a module's level is that of its longest listed prefix.
LEVELS = {
    "helpers": 0,  # the package itself (helpers/__init__.py)
    "helpers.config": 0, "helpers.io": 0, "helpers.runs": 0, "helpers.hardware": 0, "helpers.notebook": 0,  # foundation
    "helpers.data": 1,  # index, cache, demo, download, source, splits, pipeline, augment, stain, slides
    "helpers.lesson": 1,  # a notebook's settings from its parameters cell (needs helpers.data.source)
    "helpers.models": 2, "helpers.train": 2, "helpers.evaluate": 2, "helpers.results": 2,  # core
    "helpers.cam": 2, "helpers.plots": 2, "helpers.reference": 2,
    "helpers.imagesets": 3, "helpers.breakhis": 3, "helpers.thyroid": 3,  # the other data sets' tracks
    "helpers.studies": 4,  # experiment, study, tuning, compare, leak
    "helpers.recipes": 5,  # a recipe may pretrain on BreakHis
    "helpers.tools": 6,  # run_all, site, bench, estimate, app
    "helpers.__main__": 7,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def level(module: str) -> int:
    prefixes = [p for p in LEVELS if module == p or module.startswith(p + ".")]
    if not prefixes:
        raise KeyError(f"{module} has no level in LEVELS")
    return LEVELS[max(prefixes, key=len)]


def imports(path: Path, known: set[str]) -> set[str]:
    """The helpers modules that the module at ``path`` imports, wherever the import statement is."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # "from package import module" imports the module; "from module import name" the module
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                       for alias in node.names]
        else:
            continue
        for target in targets:
            if target == "helpers" or target.startswith("helpers."):
                while target not in known:  # "import helpers.data.index.x": the longest known module
                    target = target.rpartition(".")[0]
                found.add(target)
    found.discard(name)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, set(found)) for name, path in found.items()}


def test_every_module_has_a_level():
    missing = [name for name in modules() if not any(name == p or name.startswith(p + ".") for p in LEVELS)]
    assert not missing, f"modules without a level in LEVELS: {missing}"


def test_no_upward_import():
    upward = [f"{name} (level {level(name)}) imports {target} (level {level(target)})"
              for name, targets in graph().items() for target in sorted(targets)
              if level(target) > level(name)]
    assert not upward, "imports from a higher level:\n" + "\n".join(upward)


def test_no_import_cycle():
    edges = graph()
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> list[str] | None:
        if name in path:
            return path[path.index(name):] + [name]
        if name in done:
            return None
        for target in sorted(edges[name]):
            cycle = visit(target, path + [name])
            if cycle:
                return cycle
        done.add(name)
        return None

    for name in sorted(edges):
        cycle = visit(name, [])
        if cycle:
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_graph_is_read():
    """The checks above see real edges: relative, absolute and function-level imports."""
    edges = graph()
    assert "helpers.data.splits" in edges["helpers.studies.experiment"]  # module level, relative
    assert "helpers.data.source" in edges["helpers.recipes.recipe"]  # inside a function, a module from its package
    assert "helpers.breakhis.track" in edges["helpers.recipes.recipe"]  # inside a function
