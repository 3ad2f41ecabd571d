"""The study file's schema: pydantic sections (data, model, training, search, tracking, execution) that
validate every field and name it in the error, and the defaults a study file does not have to spell out."""

from __future__ import annotations

import copy
import itertools
import math
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hpsearch.config.presets import PRESETS, SPACES, merge
from hpsearch.errors import did_you_mean
from hpsearch.space.dimensions import Categorical, Dimension, Fixed, Float, Int, parse_dimension

Task = Literal["regression", "binary", "multiclass", "multilabel"]
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_OPTUNA_STORAGE = "sqlite:///optuna.db"
# Parameters the scikeras wrapper consumes itself; everything else goes to the model factory.
WRAPPER_PARAMS = frozenset({"batch_size", "epochs", "shuffle", "class_weight"})
# The builtin mlp's hidden layers may hold at most this many weights (model.max_params): a study that could
# build a bigger one (n_neurons: 1000000 with n_hidden: 50) is refused before anything is allocated.
DEFAULT_MAX_PARAMS = 100_000_000
# The builtin mlp's defaults, the chapter's: one place for build_mlp, KerasMLPRegressor/Classifier and the
# max_params check (a study that does not search or fix one of these gets this value).
MLP_DEFAULTS = {"n_hidden": 1, "n_neurons": 30, "activation": "relu", "optimizer": "sgd", "learning_rate": 3e-3}


def absolute_sqlite(url: str) -> str:
    """``sqlite:///relative.db`` -> ``sqlite:////abs/path/relative.db`` (MLflow and SQLAlchemy cache one
    store per URL string, so a relative path would keep pointing at the first working directory)."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and ":memory:" not in url:
        return "sqlite:///" + str(Path(url.removeprefix("sqlite:///")).resolve())
    return url


def tracking_uri(explicit: str | None = None) -> str:
    """The MLflow tracking URI in force: ``explicit``, else ``$MLFLOW_TRACKING_URI``, else ``./mlflow.db``."""
    return absolute_sqlite(explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI)


def default_storage() -> str:
    """``search.storage`` when the study file does not set it: ``$HPSEARCH_STORAGE``, else ``./optuna.db``
    (an explicit ``storage: null`` stays in memory)."""
    return os.environ.get("HPSEARCH_STORAGE") or DEFAULT_OPTUNA_STORAGE


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_default=True)


class DataConfig(_Strict):
    """Where the data comes from and how it is split (the chapter's split by default)."""

    dataset: str | None = None
    path: Path | None = None
    target: str | list[str] | None = None
    features: list[str] | None = None
    task: Task | None = None
    test_size: float = Field(0.25, gt=0, lt=1)
    valid_size: float = Field(0.25, ge=0, lt=1)
    scale: Literal["standard", "minmax", "none"] = "standard"
    max_rows: int | None = Field(None, ge=10)
    seed: int | None = Field(None, ge=0, le=2**32 - 1)  # the split's (and subsample's) seed; the study's if unset

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.dataset is None and self.path is None:
            raise ValueError("give either data.dataset (a builtin name) or data.path (a csv/parquet/npz file)")
        if self.dataset not in (None, "california_housing") and self.path is not None:
            raise ValueError("give data.dataset or data.path, not both")
        return self


class ModelConfig(_Strict):
    """The ``build_model`` factory: a builtin name (``mlp``) or ``package.module:function``."""

    factory: str = "mlp"
    params: dict[str, Any] = Field(default_factory=dict)
    max_params: int = Field(DEFAULT_MAX_PARAMS, ge=1)

    @field_validator("factory")
    @classmethod
    def _factory_form(cls, value: str) -> str:
        if ":" in value:
            module, _, function = value.partition(":")
            if not (module and function.isidentifier() and all(p.isidentifier() for p in module.split("."))):
                raise ValueError(f"expected a builtin name or 'package.module:function', got {value!r}")
        return value


class EarlyStoppingConfig(_Strict):
    """Keras EarlyStopping; on by default, restoring the best weights (the chapter's advice)."""

    patience: int = Field(10, ge=1)
    restore_best_weights: bool = True
    monitor: str = "val_loss"
    min_delta: float = Field(0.0, ge=0)


class TrainingConfig(_Strict):
    """How each trial trains."""

    epochs: int = Field(100, ge=1, le=100_000)
    batch_size: int = Field(32, ge=1)
    # Batches per call into TensorFlow: the same training, far less per-batch overhead for small models.
    steps_per_execution: int = Field(32, ge=1, le=100_000)
    early_stopping: EarlyStoppingConfig | None = Field(default_factory=EarlyStoppingConfig)
    # The Keras backend (hpsearch.models.backend_choice): auto picks JAX for long fits, TensorFlow for short ones.
    backend: Literal["auto", "tensorflow", "jax", "torch"] = "auto"
    class_weight: Literal["balanced"] | dict[Any, float] | None = None

    @field_validator("early_stopping", mode="before")
    @classmethod
    def _bool_shorthand(cls, value: Any) -> Any:
        if value is True:
            return {}
        return None if value is False else value

    @field_validator("class_weight")
    @classmethod
    def _positive_weights(cls, value: Any) -> Any:
        if isinstance(value, dict) and not all(math.isfinite(w) and w > 0 for w in value.values()):
            raise ValueError(f"class weights must be finite numbers > 0, got {short_repr(value)}")
        return value


class SearchConfig(_Strict):
    """Which strategy searches which space, and how candidates are scored."""

    # The defaults are what delivered the best validation and test scores soonest (benchmarks/RESULTS.md): Optuna
    # TPE without pruning (the ablation: every trial finished beat Hyperband's pruning at 60 s and 300 s), scored on
    # the validation split (holdout), the greedy ensemble as the delivered model.
    strategy: Literal["random", "grid", "optuna", "halving"] = "optuna"
    n_trials: int = Field(10, ge=1, le=100_000)
    cv: int | None = Field(None, ge=2, le=100)
    scoring: str | None = None
    space: dict[str, Any] = Field(default_factory=dict)
    grid_points: int = Field(3, ge=2, le=100)
    halving_factor: int = Field(3, ge=2, le=100)  # halving: 1/factor of the candidates go on, for factor x epochs
    sampler: Literal["tpe", "random", "cmaes", "qmc"] = "tpe"
    pruner: Literal["none", "median", "successive_halving", "hyperband"] = "none"
    storage: str | None = Field(default_factory=default_storage)
    heartbeat: int = Field(30, ge=1, le=3600)
    timeout: float | None = Field(None, gt=0, allow_inf_nan=False)  # seconds of searching (hpsearch.evaluation.budget)
    patience: int | None = Field(None, ge=1)  # finished trials in a row without improving by min_delta
    min_delta: float = Field(0.0, ge=0, allow_inf_nan=False)
    # The delivered model: the best trial's own (holdout's default), its params refitted (cv's default), or the
    # greedy ensemble of the ensemble_size best trials' models (holdout only).
    final: Literal["auto", "best_trial", "refit", "ensemble"] = "auto"
    ensemble_size: int = Field(5, ge=1, le=100)

    @field_validator("space", mode="before")
    @classmethod
    def _parse_space(cls, value: Any) -> dict[str, Dimension]:
        if value is None:
            return {}
        if isinstance(value, str):
            if value not in SPACES:
                raise ValueError(f"unknown preset space {value!r}{did_you_mean(value, SPACES)}; "
                                 f"presets: {', '.join(SPACES)}")
            value = SPACES[value]
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping of parameter names to ranges, got {type(value).__name__}")
        parsed = {}
        for name, raw in value.items():
            try:
                parsed[str(name)] = parse_dimension(raw)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{name}: {exc}") from None
        return parsed

    @field_validator("scoring")
    @classmethod
    def _known_scorer(cls, value: str | None) -> str | None:
        from sklearn.metrics import get_scorer_names

        if value is not None and value not in get_scorer_names():
            raise ValueError(f"unknown scorer {value!r}{did_you_mean(value, get_scorer_names())}")
        return value


class TrackingConfig(_Strict):
    """Where MLflow records the study (embedded SQLite + local artifacts by default)."""

    enabled: bool = True
    uri: str | None = None
    experiment: str | None = None
    log_models: bool = True
    report: bool = True
    system_metrics: bool = False  # MLflow's system metrics (CPU, memory, disk, network) on the study run

    def resolved_uri(self) -> str:
        """The tracking URI in force: the study file's, else ``MLFLOW_TRACKING_URI``, else local SQLite."""
        return tracking_uri(self.uri)


class ExecutionConfig(_Strict):
    """Where a random/grid search's (candidate, fold) fits run (Optuna scales with workers instead).

    ``trials_per_process``: ``hpsearch run`` (or each worker) starts itself afresh after this many trials of
    an Optuna study and goes on from its storage: everything a user's factory left in memory is returned.
    """

    backend: Literal["local", "dask"] = "local"
    n_jobs: int = Field(1, ge=1, le=4096)
    address: str | None = None
    threads: int | None = Field(None, ge=1, le=1024)
    trials_per_process: int | None = Field(None, ge=1, le=100_000)

    @model_validator(mode="after")
    def _address_needs_dask(self) -> ExecutionConfig:
        if self.address is not None and self.backend != "dask":
            raise ValueError("execution.address is a Dask scheduler (tcp://host:8786): set execution.backend: dask")
        return self

    @property
    def parallel(self) -> bool:
        return self.backend == "dask" or self.n_jobs > 1


class StudyConfig(_Strict):
    """A whole study file."""

    name: str
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    seed: int = Field(42, ge=0, le=2**32 - 1)
    preset: Literal[tuple(PRESETS)] | None = None  # type: ignore[valid-type]

    @field_validator("name")
    @classmethod
    def _name_in_words(cls, value: str) -> str:
        allowed = all(c.isalnum() or c in "_.-" for c in value) and value[:1].isalnum()
        if not (allowed and len(value) <= 100):
            raise ValueError(f"a study name is 1 to 100 letters (of any alphabet), digits, '_', '.' or '-', starting "
                             f"with a letter or a digit (it names the MLflow experiment, the Optuna study and the "
                             f"registered model); got {short_repr(value)}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or not isinstance(raw.get("preset"), str) or raw["preset"] not in PRESETS:
            return raw
        model, search = raw.get("model") or {}, raw.get("search") or {}
        if not (isinstance(model, dict) and isinstance(search, dict)):
            return raw  # validation names the section of the wrong type
        merged = merge(copy.deepcopy(PRESETS[raw["preset"]]), raw)  # a copy: the preset itself stays intact
        searched, fixed = search.get("space") or {}, (merged.get("model") or {}).get("params")
        own_params = model.get("params") or {}
        if all(isinstance(v, dict) for v in (searched, fixed, own_params)):
            for name in searched:
                if name not in own_params:  # the user searches what the preset fixes: the search wins
                    fixed.pop(name, None)
        return merged

    @model_validator(mode="after")
    def _cross_checks(self) -> StudyConfig:
        both = sorted(set(self.model.params) & set(self.search.space))
        if both:
            raise ValueError(f"{both} are both fixed in model.params and searched in search.space; keep one")
        if self.execution.parallel and self.search.strategy == "optuna":
            raise ValueError("execution runs random/grid searches in parallel; an optuna study scales with "
                             "workers sharing search.storage instead: hpsearch run --workers N")
        if self.execution.trials_per_process and (self.search.strategy != "optuna" or not self.search.storage):
            raise ValueError("execution.trials_per_process starts the process afresh and goes on from the stored "
                             "Optuna study: set search.strategy: optuna and search.storage")
        if self.search.cv is None and self.data.valid_size == 0:
            raise ValueError("search.cv is null (holdout) but data.valid_size is 0: there is nothing to score on")
        if self.model.factory == "mlp":
            weights, layers = _largest_mlp(self.model.params, self.search.space)
            if weights > self.model.max_params:
                raise ValueError(f"model.params and search.space can build an mlp with hidden layers {layers}, about "
                                 f"{_approx(weights)} weights before the input layer, above model.max_params="
                                 f"{_approx(self.model.max_params)}; narrow n_hidden / n_neurons, or raise "
                                 "model.max_params if the machine has the memory")
        return self

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name


def _possible(name: str, fixed: dict[str, Any], space: dict[str, Dimension]) -> list[Any]:
    """The values a builtin-mlp argument can take: each choice, the top of a range, else its fixed value."""
    dim = space.get(name)
    if isinstance(dim, (Int, Float)):
        return [dim.high]
    if isinstance(dim, Categorical):
        return list(dim.choices)
    if isinstance(dim, Fixed):
        return [dim.value]
    return [fixed.get(name, MLP_DEFAULTS[name])]


def _largest_mlp(fixed: dict[str, Any], space: dict[str, Dimension]) -> tuple[int, str]:
    """The most weights (and biases) the builtin mlp's hidden layers can have, from one input to one output,
    and those layers (``'50 x 1000000'`` or ``[300, 100]``); values the mlp would refuse are skipped."""
    def whole(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0

    depths = [int(d) for d in _possible("n_hidden", fixed, space) if whole(d)] or [MLP_DEFAULTS["n_hidden"]]
    largest, layers = 0, ""
    for width in _possible("n_neurons", fixed, space):
        if isinstance(width, (list, tuple)) and all(whole(w) for w in width):
            sizes = [1, *(int(w) for w in width), 1]
            count, shape = sum((a + 1) * b for a, b in itertools.pairwise(sizes)), short_repr(list(map(int, width)))
        elif whole(width):
            w, depth = int(width), max(depths)
            count, shape = (2 * w + (depth - 1) * (w + 1) * w + w + 1, f"{depth} x {w}") if depth else (2, "[]")
        else:
            continue
        if count > largest:
            largest, layers = count, shape
    return largest, layers


def _approx(number: int) -> str:
    """``1.23e+08`` (also for integers too big for a float)."""
    return f"{number:.3g}" if number < 1e300 else f"1e+{len(str(number)) - 1}"


def short_repr(value: Any, limit: int = 120) -> str:
    """``repr(value)``, cut to ``limit`` characters (a message must stay one readable paragraph)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
