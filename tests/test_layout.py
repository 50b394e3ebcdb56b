"""The package layout is the architecture: wings in layers, imports only downwards, no circles.

Every import of every module under bench/ is parsed from the source (those inside functions too), so
the picture in bench/__init__.py (LAYERS), the wings' __init__.py and the README cannot drift from the
code. A wing may import itself and the wings below it in LAYERS; the top-level modules (cli,
__main__) may import any wing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bench

ROOT = Path(bench.__file__).parent
TOP = len(bench.LAYERS)  # the layer of the top-level modules


def module_name(path: Path, root: Path = ROOT) -> str:
    """``bench/run/runner.py`` -> ``bench.run.runner``; a package's ``__init__.py`` -> the package."""
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str], root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, module) for each bench module ``path`` imports; ``from P import x`` counts as ``P.x``
    where that is a module, else as ``P``. Relative imports are resolved against the file's package."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for a in node.names:
                found.append((node.lineno, f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base))
    return [(line, m) for line, m in found if m == "bench" or m.startswith("bench.")]


def wing_of(module: str) -> str | None:
    """The wing of a module (``bench.run.runner`` -> ``run``), or None for bench's top-level modules."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and (ROOT / parts[1]).is_dir()) else None


def layer_of(module: str) -> int:
    wing = wing_of(module)
    return TOP if wing is None else bench.LAYERS.index(wing)


def source_files() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def import_graph() -> dict[str, list[tuple[int, str]]]:
    modules = {module_name(p) for p in source_files()}
    return {module_name(p): imported_modules(p, modules) for p in source_files()}


def test_every_wing_is_a_layer_and_every_layer_a_wing():
    wings = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}
    assert wings == set(bench.LAYERS), "bench.LAYERS must list every wing (folder) of bench/ once"
    assert len(bench.LAYERS) == len(set(bench.LAYERS))


def test_no_wing_imports_a_wing_above_it():
    upward = [f"{m}:{line} imports {target} ({wing_of(target) or 'top level'})"
              for m, targets in import_graph().items() for line, target in targets
              if layer_of(target) > layer_of(m)]
    assert not upward, "imports that point up the layers (bench.LAYERS):\n" + "\n".join(upward)


def test_no_import_circles():
    graph = {m: {t for _, t in targets if t != m} for m, targets in import_graph().items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return path + [m, t]
            if t in graph and not state.get(t):
                if cycle := visit(t, path + [m]):
                    return cycle
        state[m] = 2
        return None

    for m in sorted(graph):
        if not state.get(m):
            cycle = visit(m, [])
            assert cycle is None, "import circle: " + " -> ".join(cycle[cycle.index(cycle[-1]):])


@pytest.mark.parametrize("wing", bench.LAYERS)
def test_wing_init_says_what_it_is_for_and_imports_nothing(wing):
    init = ROOT / wing / "__init__.py"
    tree = ast.parse(init.read_text())
    doc = ast.get_docstring(tree)
    assert doc and doc.startswith(f"{wing}:"), f"{init}: the docstring starts with '{wing}: what it is for'"
    assert "May import:" in doc, f"{init}: the docstring says which wings it may import"
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))], f"{init} imports"


def test_the_check_sees_imports_inside_functions(tmp_path):
    """The parser finds a lazy, a relative and a ``from bench import`` import (else the test above
    could pass on nothing)."""
    sample = tmp_path / "bench" / "core" / "x.py"
    sample.parent.mkdir(parents=True)
    sample.write_text("def f():\n    from bench.run.runner import run_case\n    from . import files\n"
                      "from bench import cli\n")
    found = dict((m, line) for line, m in imported_modules(sample, {"bench.core.files", "bench.cli"}, tmp_path / "bench"))
    assert found == {"bench.run.runner": 2, "bench.core.files": 3, "bench.cli": 4}
    assert {m: layer_of(m) > layer_of("bench.core.x") for m in found} == \
        {"bench.run.runner": True, "bench.core.files": False, "bench.cli": True}
