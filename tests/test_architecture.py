"""The layout rules of the package, read from its source: dependencies point one way
(cli -> run -> {strategies, evaluation, guidance} -> {tracking, models, space, data} -> {config, errors,
results, space.dimensions}), with no cycles, counting every import (in functions and under TYPE_CHECKING
too); only thin adapter modules import the engines (Optuna, scikeras, Keras/TensorFlow, MLflow); and no
module grows past MAX_LINES."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hpsearch"
# top to bottom: a module may import its own layer (without cycles) and the layers below it. A module's layer
# is that of its longest listed prefix: space.dimensions (the vocabulary the study file is written in) sits
# below the rest of space/.
LAYERS = [
    {"__main__", "cli"},
    {"run"},
    {"strategies", "evaluation", "guidance"},
    {"tracking", "models", "space", "data"},
    {"config", "errors", "results", "space.dimensions"},
]
ADAPTERS = {
    "optuna": {"strategies.optuna_search", "guidance.importance", "guidance.html_report"},
    "scikeras": {"models.wrappers"},
    "keras": {"models.backend", "models._patches", "data.builtin"},  # data: only Keras' own Fashion-MNIST loader
    "tensorflow": {"models.backend", "models._patches"},
    "mlflow": {"tracking.mlflow_tracker", "tracking._run", "tracking._retry", "tracking.reading", "tracking.registry",
               "tracking.sync", "tracking.datasets", "tracking.lr_find_run", "tracking.system_metrics"},
}
MAX_LINES = 400


def _modules() -> dict[str, ast.Module]:
    """Every module of the package by its dotted name under ``hpsearch`` (the package itself: ``""``)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(encoding="utf-8"))
    return found


def _imports(tree: ast.Module) -> set[str]:
    """Absolute names imported anywhere in ``tree``: at the top, in functions and under ``if TYPE_CHECKING:``."""
    names = set()
    for node in ast.walk(tree):
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


def _layer(module: str) -> int | None:
    """The layer of ``module``: that of its longest prefix named in LAYERS (None: in no layer)."""
    parts = module.split(".")
    for size in range(len(parts), 0, -1):
        prefix = ".".join(parts[:size])
        for index, layer in enumerate(LAYERS):
            if prefix in layer:
                return index
    return None


def test_every_module_has_a_layer():
    assert [m for m in MODULES if m and _layer(m) is None] == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m))
def test_dependencies_point_down(module):
    upward = {d for d in _internal(_imports(MODULES[module])) if _layer(d) < _layer(module)}
    assert upward == set(), f"{module} (layer {_layer(module)}) imports from a layer above it"


def test_no_import_cycles():
    graph = {m: _internal(_imports(tree)) - {m} for m, tree in MODULES.items()}
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
                 if any(n == engine or n.startswith(engine + ".") for n in _imports(tree))}
    assert importers <= ADAPTERS[engine]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module):
    path = PACKAGE / Path(*module.split(".")) if module else PACKAGE
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module or 'hpsearch'} has {lines} lines; split it by job"


def test_importing_hpsearch_changes_no_process_settings():
    """MLflow's environment defaults and logger levels are set when a tracker is made, not on import."""
    import os
    import subprocess
    import sys

    probe = ("import logging, os; {imports}; print(sorted(k for k in os.environ if k.startswith('MLFLOW_')), "
             "[logging.getLogger(n).level for n in ('mlflow', 'mlflow.sklearn', 'alembic')])")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}

    def settings(imports: str) -> str:
        done = subprocess.run([sys.executable, "-c", probe.format(imports=imports)], env=env, capture_output=True,
                              text=True, timeout=120, check=True)
        return done.stdout.strip().splitlines()[-1]

    stock = settings("import mlflow, mlflow.sklearn")
    assert settings("import hpsearch.tracking.mlflow_tracker, hpsearch.tracking.reading, hpsearch.tracking.sync"
                    ) == stock
