"""The layer rule of docs/architecture.md, checked on the source tree: imports point down
(or sideways within a layer, without cycles between packages), and entry points live in
the top layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Bottom to top; a package may import its own layer and the layers below it.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"schemas"}),
    frozenset({"core"}),
    frozenset({"slide_io", "quality", "model_zoo", "catalog"}),
    frozenset({"storage", "qc", "scanner", "compute", "his", "viewer", "distribution", "terminal"}),
    frozenset({"agents", "slidestream", "infra", "bench"}),
)
LEVEL = {package: level for level, layer in enumerate(LAYERS) for package in layer}
ENTRY_POINT_NAMES = {"cli.py", "demo.py", "worker.py", "workers.py", "__main__.py"}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) of every absolute import in ``path``, function-level ones too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def violations(root: Path) -> list[str]:
    """Every upward import and every misplaced entry point under ``root``."""
    problems = []
    for package, level in LEVEL.items():
        for path in sorted((root / package).rglob("*.py")):
            where = path.relative_to(root)
            if path.name in ENTRY_POINT_NAMES and level != len(LAYERS) - 1:
                problems.append(f"{where}: an entry point below the top layer")
            for line, module in imports_of(path):
                target = module.split(".")[0]
                if LEVEL.get(target, -1) > level:
                    problems.append(f"{where}:{line}: {package} (layer {level}) imports {module} "
                                    f"(layer {LEVEL[target]})")
    return problems


def package_cycles(root: Path) -> list[list[str]]:
    """Cycles in the graph of imports between packages (of any layer)."""
    edges: dict[str, set[str]] = {package: set() for package in LEVEL}
    for package in LEVEL:
        for path in (root / package).rglob("*.py"):
            for _, module in imports_of(path):
                target = module.split(".")[0]
                if target in LEVEL and target != package:
                    edges[package].add(target)
    cycles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        for nxt in sorted(edges[node]):
            if nxt in trail:
                cycle = trail[trail.index(nxt):]
                if min(cycle) == cycle[0]:  # report each cycle once
                    cycles.append(cycle)
            elif len(trail) < len(LEVEL):
                visit(nxt, trail + [nxt])

    for start in sorted(LEVEL):
        visit(start, [start])
    return cycles


def module_cycles(root: Path) -> list[list[str]]:
    """Cycles among the module-level imports of the project's modules (a package counts as
    its ``__init__``); function-level and ``TYPE_CHECKING`` imports are deliberate breaks."""
    modules: dict[str, Path] = {}
    for package in LEVEL:
        for path in (root / package).rglob("*.py"):
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            modules[name.removesuffix(".__init__")] = path
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.parse(path.read_text()).body:
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            edges[name] |= {t for t in targets if t in modules and t != name}
    cycles: list[list[str]] = []
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> None:
        for nxt in sorted(edges[node]):
            if nxt in trail:
                cycle = trail[trail.index(nxt):]
                if min(cycle) == cycle[0] and cycle not in cycles:
                    cycles.append(cycle)
            elif nxt not in done:
                visit(nxt, trail + [nxt])
        done.add(node)

    for start in sorted(modules):
        if start not in done:
            visit(start, [start])
    return cycles


def test_modules_import_each_other_without_cycles() -> None:
    assert module_cycles(ROOT) == []


def test_every_package_has_a_layer() -> None:
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert packages == set(LEVEL), "add new packages to LAYERS here and to docs/architecture.md"


def test_imports_point_down_and_entry_points_are_on_top() -> None:
    assert violations(ROOT) == []


def test_packages_import_each_other_without_cycles() -> None:
    assert package_cycles(ROOT) == []


@pytest.fixture
def wrong_tree(tmp_path: Path) -> Path:
    """A copy of the package layout in which the domain imports a service."""
    for package in LEVEL:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "catalog" / "repository.py").write_text("def f():\n    from storage.objects import ObjectStore\n")
    (tmp_path / "storage" / "demo.py").write_text("import schemas\n")
    (tmp_path / "storage" / "save.py").write_text("from his.adapter import y\n")
    (tmp_path / "his" / "adapter.py").write_text("from storage.save import x\n")
    return tmp_path


def test_the_checks_catch_a_wrong_import_an_entry_point_and_a_cycle(wrong_tree: Path) -> None:
    assert violations(wrong_tree) == [
        "catalog/repository.py:2: catalog (layer 2) imports storage.objects (layer 3)",
        "storage/demo.py: an entry point below the top layer",
    ]
    assert package_cycles(wrong_tree) == [["his", "storage"]]
    assert module_cycles(wrong_tree) == [["his.adapter", "storage.save"]]
