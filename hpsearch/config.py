"""The study file: a validated schema, safe YAML loading, ``--set`` overrides, errors that name the field."""

from __future__ import annotations

import copy
import itertools
import math
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from yaml.composer import ComposerError

from hpsearch.dimensions import Categorical, Dimension, Fixed, Float, Int, parse_dimension
from hpsearch.errors import ConfigError, did_you_mean
from hpsearch.presets import PRESETS, SPACES, merge

Task = Literal["regression", "binary", "multiclass", "multilabel"]
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_OPTUNA_STORAGE = "sqlite:///optuna.db"
# Parameters the scikeras wrapper consumes itself; everything else goes to the model factory.
WRAPPER_PARAMS = frozenset({"batch_size", "epochs", "shuffle", "class_weight"})
MAX_DEPTH = 40  # nesting levels a study document may have
MAX_VALUES = 100_000  # values a study document may hold once its YAML aliases are expanded
# The builtin mlp's hidden layers may hold at most this many weights (model.max_params): a study that could
# build a bigger one (n_neurons: 1000000 with n_hidden: 50) is refused before anything is allocated.
DEFAULT_MAX_PARAMS = 100_000_000
MLP_DEFAULTS = {"n_hidden": 1, "n_neurons": 30}  # build_mlp's own defaults (hpsearch.models.mlp)


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


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load`` that also reads ``3e-4`` as a float (YAML 1.2), not as a string, and refuses
    documents nested deeper than :data:`MAX_DEPTH`, aliases inside the value they name (a value that
    contains itself) and aliases that expand to more than :data:`MAX_VALUES` values ("billion laughs")."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._open: list[str | None] = []  # anchors of the nodes being composed, outermost first
        self._sizes: dict[int, int] = {}  # id(node) -> how many values it holds, aliases expanded

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) and event.anchor in self._open:
            raise ComposerError(None, None, f"the alias *{event.anchor} is inside the value it names",
                                event.start_mark)
        if len(self._open) >= MAX_DEPTH:
            raise ComposerError(None, None, f"values are nested more than {MAX_DEPTH} levels deep", event.start_mark)
        self._open.append(getattr(event, "anchor", None))
        try:
            node = super().compose_node(parent, index)
        finally:
            self._open.pop()
        if id(node) not in self._sizes:  # an alias's node is counted already
            children = node.value if isinstance(node, yaml.SequenceNode) else \
                [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
            self._sizes[id(node)] = 1 + sum(self._sizes[id(child)] for child in children)
            if self._sizes[id(node)] > MAX_VALUES:
                raise ComposerError(None, None, f"the document holds more than {MAX_VALUES} values once its "
                                    "aliases are expanded", event.start_mark)
        return node


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def safe_load(text: str) -> Any:
    """Parse YAML safely (no object construction), with YAML 1.2 floats."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506  (_Loader is a SafeLoader)


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
            raise ValueError(f"class weights must be finite numbers > 0, got {_short(value)}")
        return value


class SearchConfig(_Strict):
    """Which strategy searches which space, and how candidates are scored."""

    # The defaults are what delivered the best test score soonest (benchmarks/RESULTS.md): Optuna TPE with
    # Hyperband pruning, scored on the validation split (holdout), the greedy ensemble as the delivered model.
    strategy: Literal["random", "grid", "optuna"] = "optuna"
    n_trials: int = Field(10, ge=1, le=100_000)
    cv: int | None = Field(None, ge=2, le=100)
    scoring: str | None = None
    space: dict[str, Any] = Field(default_factory=dict)
    grid_points: int = Field(3, ge=2, le=100)
    sampler: Literal["tpe", "random", "cmaes", "qmc"] = "tpe"
    pruner: Literal["none", "median", "successive_halving", "hyperband"] = "hyperband"
    storage: str | None = Field(default_factory=default_storage)
    heartbeat: int = Field(30, ge=1, le=3600)
    timeout: float | None = Field(None, gt=0, allow_inf_nan=False)  # seconds of searching (hpsearch.budget)
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

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    seed: int = Field(42, ge=0, le=2**32 - 1)
    preset: Literal[tuple(PRESETS)] | None = None  # type: ignore[valid-type]

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
            count, shape = sum((a + 1) * b for a, b in itertools.pairwise(sizes)), _short(list(map(int, width)))
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


def _short(value: Any, limit: int = 120) -> str:
    """``repr(value)``, cut to ``limit`` characters (a message must stay one readable paragraph)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _model_at(root: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The schema class that owns the field at ``loc`` (for 'did you mean' suggestions)."""
    model: Any = root
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return None
    return model


def _format_error(error: dict, root: type[BaseModel]) -> str:
    loc = tuple(error["loc"])
    where = ".".join(str(p) if str(p).isprintable() else repr(str(p)) for p in loc) or "study"  # one line
    if error["type"] == "extra_forbidden":
        owner = _model_at(root, loc[:-1])
        hint = did_you_mean(str(loc[-1]), owner.model_fields) if owner else ""
        return f"{where}: unknown key{hint}"
    if error["type"] == "missing":
        return f"{where}: required field is missing"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "value_error":
        return f"{where}: {message}"
    return f"{where}: {message} (got {_short(error['input'])})"


def _validate(schema: type[BaseModel], raw: dict, what: str) -> Any:
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        errors = "; ".join(_format_error(e, schema) for e in exc.errors())
        raise ConfigError(f"{what}: {errors}") from None


def parse_study(raw: Any, source: str = "study") -> StudyConfig:
    """Validate a study mapping; raise :class:`ConfigError` naming every bad field."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a YAML mapping (key: value lines), got {type(raw).__name__}")
    return _validate(StudyConfig, raw, f"{source} is not a valid study")


def parse_search(raw: dict[str, Any]) -> SearchConfig:
    """Validate search settings given as keyword arguments (the Python API's ``SearchCV``)."""
    return _validate(SearchConfig, raw, "invalid search settings")


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a study mapping."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not all(key.split(".")):  # no "=", or an empty name in the path (a..b, .a, a.)
            raise ConfigError(f"--set expects key.path=value, got {item!r}")
        try:
            value = safe_load(text)
        except yaml.YAMLError:
            value = text
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item}: {part!r} is not a mapping", field=key)
            node = child
        node[parts[-1]] = value
    return raw


def read_yaml(path: Path) -> Any:
    """Read a YAML file safely; errors name the file and the line."""
    if not path.is_file():
        raise ConfigError(f"study file {path} does not exist")
    try:
        return safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text: {exc.reason}") from None


def load_study(path: str | Path, overrides: list[str] = ()) -> StudyConfig:
    """Load, override and validate a study file."""
    path = Path(path)
    raw = read_yaml(path)
    if isinstance(raw, dict):
        raw = apply_overrides(raw, list(overrides))
    return parse_study(raw, source=str(path))
