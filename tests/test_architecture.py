"""The layout rules of the package, read from its source: dependencies point one way
(cli -> runner -> strategies -> {space, models, tracking} -> config), and only thin adapter modules
import the engines (Optuna, scikeras, Keras/TensorFlow, MLflow)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hpsearch"
# top to bottom: a module may import its own layer (without cycles) and the layers below it
LAYERS = [
    {"__main__", "cli"},
    {"runner", "search_cv", "lr_finder", "sync"},
    {"strategies", "evaluation", "execution", "fitting", "ensemble", "ledger", "progress", "advice", "report"},
    {"space", "models", "tracking", "tracking_base", "importance", "data"},
    {"config", "dimensions", "errors", "presets", "results", "recorded", "budget"},
]
ADAPTERS = {
    "optuna": {"strategies.optuna_search", "importance", "report"},
    "scikeras": {"models.wrappers"},
    "keras": {"models.backend", "models._patches", "data"},  # data: only Keras' own Fashion-MNIST loader
    "tensorflow": {"models.backend", "models._patches"},
    "mlflow": {"tracking", "sync"},
}


def _modules() -> dict[str, ast.Module]:
    """Every module of the package by its dotted name under ``hpsearch`` (the package itself: ``""``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(encoding="utf-8"))
    return found


def _runtime_imports(tree: ast.Module) -> set[str]:
    """Absolute names imported anywhere in ``tree`` (functions included), except under ``if TYPE_CHECKING:``."""
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                   for child in node.body for n in ast.walk(child)}
    names = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


MODULES = _modules()


def _internal(names: set[str]) -> set[str]:
    """The package's modules among ``names`` (``hpsearch.models.backend`` -> ``models.backend``)."""
    inside = {n.removeprefix("hpsearch.") for n in names if n.startswith("hpsearch.")}
    return {n for n in inside if n in MODULES}


def _layer(module: str) -> int:
    top = module.split(".")[0]
    return next(i for i, layer in enumerate(LAYERS) if top in layer)


def test_every_module_has_a_layer():
    assert [m for m in MODULES if m and not any(m.split(".")[0] in layer for layer in LAYERS)] == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m))
def test_dependencies_point_down(module):
    upward = {d for d in _internal(_runtime_imports(MODULES[module])) if _layer(d) < _layer(module)}
    assert upward == set(), f"{module} (layer {_layer(module)}) imports from a layer above it"


def test_no_import_cycles():
    graph = {m: _internal(_runtime_imports(tree)) - {m} for m, tree in MODULES.items()}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for dependency in sorted(graph[module]):
            if state.get(dependency) == "open":
                pytest.fail("import cycle: " + " -> ".join(path[path.index(dependency):] + [dependency]))
            if dependency not in state:
                visit(dependency, path + [dependency])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("engine", sorted(ADAPTERS))
def test_only_adapter_modules_import_the_engines(engine):
    importers = {m for m, tree in MODULES.items()
                 if any(n == engine or n.startswith(engine + ".") for n in _runtime_imports(tree))}
    assert importers <= ADAPTERS[engine]
