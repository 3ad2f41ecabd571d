"""Which Keras backend a study trains on, chosen before Keras is imported (Keras fixes it on first import).

The choice travels in ``$KERAS_BACKEND``, so every process hpsearch starts from here (``--workers``,
``trials_per_process`` restarts, joblib and local Dask workers, the report child) trains on the same backend.
This module imports no engine: it only reads the study and sets the environment.

Why ``auto`` prefers JAX for long fits and TensorFlow for short ones (measured on 2 cores, the chapter's MLP on
California, batch 32; ``benchmarks/RESULTS.md``): Keras on JAX runs an epoch in ~0.015 s against ~0.07 s on
hpsearch's TensorFlow path, but compiles every new model in ~0.5-1 s where TensorFlow traces it in ~0.4 s. So JAX
wins once a fit runs more than about :data:`JAX_MIN_STEPS` batches (epochs x batches per epoch).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from hpsearch.errors import ConfigError

BACKENDS = ("tensorflow", "jax", "torch")
JAX_MIN_STEPS = 3000  # batches per fit above which JAX's faster steps repay its compilation (see the docstring)
_USES_TENSORFLOW = re.compile(r"^\s*(import\s+tensorflow|from\s+tensorflow[\s.])", re.MULTILINE)


@dataclass(frozen=True)
class BackendChoice:
    """The backend a study trains on, and the reason in words (printed in the run summary)."""

    name: str
    why: str


def installed(name: str) -> bool:
    """Whether the backend's package can be imported here."""
    return importlib.util.find_spec(name) is not None


def running_backend() -> str | None:
    """The backend Keras already runs on in this process; None while Keras is not imported."""
    keras = sys.modules.get("keras")
    config = getattr(keras, "config", None)
    return config.backend() if config is not None else None


def intended_backend() -> str | None:
    """The backend this process trains on: Keras' once imported, else the one :func:`use_backend` set."""
    return running_backend() or os.environ.get("KERAS_BACKEND")


def join_backend(name: str | None) -> str | None:
    """In a worker process (joblib, Dask) about to fit for a study on ``name``: run Keras on it too. Returns why
    it cannot (Keras already runs on another backend here), else None."""
    running = running_backend()
    if name is None or running == name:
        return None
    if running is None and installed(name):
        use_backend(name)
        return None
    why = f"Keras runs on {running}" if running else f"{name} is not installed"
    return (f"this worker cannot train on the study's Keras backend {name}: {why} here; start the workers with "
            f"KERAS_BACKEND={name} (and {name} installed), or set training.backend to match them")


def factory_uses_tensorflow(spec: str) -> bool:
    """Whether the module of a user's ``package.module:function`` factory imports TensorFlow (read, not run)."""
    module = spec.partition(":")[0]
    try:
        found = importlib.util.find_spec(module) if ":" in spec else None
    except (ImportError, ValueError):
        return False
    origin = getattr(found, "origin", None)
    if not origin or not origin.endswith(".py"):
        return False
    try:
        return bool(_USES_TENSORFLOW.search(Path(origin).read_text(encoding="utf-8", errors="replace")))
    except OSError:
        return False


def choose_backend(requested: str, factory: str, steps_per_fit: int) -> BackendChoice:
    """The backend for a study: ``$KERAS_BACKEND`` or the study's explicit choice, else ``auto``'s.

    ``steps_per_fit``: epochs x batches per epoch of one trial's fit (the work JAX's compilation has to repay).
    """
    running = running_backend()
    if running is not None and requested in ("auto", running):
        return BackendChoice(running, "Keras was already running on it in this process")
    if requested != "auto":
        return BackendChoice(requested, "training.backend")
    explicit = os.environ.get("KERAS_BACKEND")
    if explicit:
        return BackendChoice(explicit, "$KERAS_BACKEND")
    if not installed("jax"):
        return BackendChoice("tensorflow", "jax is not installed")
    if factory_uses_tensorflow(factory):
        return BackendChoice("tensorflow", f"the factory's module ({factory.partition(':')[0]}) imports tensorflow")
    if steps_per_fit < JAX_MIN_STEPS:
        return BackendChoice("tensorflow", f"short fits ({steps_per_fit} batches each, under {JAX_MIN_STEPS}): "
                                           "JAX's compilation of every new model would not pay off")
    return BackendChoice("jax", f"long fits ({steps_per_fit} batches each): JAX's faster steps repay its "
                                "compilation of every new model")


def use_backend(name: str, field: str = "training.backend") -> None:
    """Make ``name`` the Keras backend of this process and of every process it starts.

    Raises :class:`ConfigError` (naming ``field``) for an unknown or uninstalled backend, or when Keras already
    runs on another one here. On JAX, compiled models are cached on disk across processes and runs
    (``$JAX_COMPILATION_CACHE_DIR``, default ``~/.cache/hpsearch/jax``) and XLA skips its slow LLVM optimisations
    (``--xla_backend_optimization_level=0``: compilation ~35 % faster, the same speed per epoch for these models)
    unless ``$XLA_FLAGS`` says otherwise.
    """
    if name not in BACKENDS:
        raise ConfigError(f"unknown Keras backend {name!r}; choose auto, {', '.join(BACKENDS)}", field=field)
    if not installed(name):
        how = f"pip install {name}" + (" (its CPU build: --index-url https://download.pytorch.org/whl/cpu)"
                                       if name == "torch" else "")
        raise ConfigError(f"the {name} backend is not installed here: {how}", field=field)
    running = running_backend()
    if running is not None and running != name:
        raise ConfigError(f"Keras already runs on {running} in this process and cannot switch to {name}; set "
                          f"KERAS_BACKEND={name} before anything imports keras (or hpsearch's estimators)",
                          field=field)
    os.environ["KERAS_BACKEND"] = name
    if name == "jax":
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hpsearch" / "jax"
        os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache))
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
        os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
