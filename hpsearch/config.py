"""The study file: a validated schema, safe YAML loading, ``--set`` overrides, errors that name the field."""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hpsearch.dimensions import Dimension, parse_dimension
from hpsearch.errors import ConfigError
from hpsearch.presets import PRESETS, SPACES, merge

Task = Literal["regression", "binary", "multiclass", "multilabel"]
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_OPTUNA_STORAGE = "sqlite:///optuna.db"
# Parameters the scikeras wrapper consumes itself; everything else goes to the model factory.
WRAPPER_PARAMS = frozenset({"batch_size", "epochs", "shuffle", "class_weight"})


def absolute_sqlite(url: str) -> str:
    """``sqlite:///relative.db`` -> ``sqlite:////abs/path/relative.db`` (MLflow and SQLAlchemy cache one
    store per URL string, so a relative path would keep pointing at the first working directory)."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and ":memory:" not in url:
        return "sqlite:///" + str(Path(url.removeprefix("sqlite:///")).resolve())
    return url


def tracking_uri(explicit: str | None = None) -> str:
    """The MLflow tracking URI in force: ``explicit``, else ``$MLFLOW_TRACKING_URI``, else ``./mlflow.db``."""
    return absolute_sqlite(explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI)


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load`` that also reads ``3e-4`` as a float (YAML 1.2), not as a string."""


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
    early_stopping: EarlyStoppingConfig | None = Field(default_factory=EarlyStoppingConfig)
    class_weight: Literal["balanced"] | dict[Any, float] | None = None

    @field_validator("early_stopping", mode="before")
    @classmethod
    def _bool_shorthand(cls, value: Any) -> Any:
        if value is True:
            return {}
        return None if value is False else value


class SearchConfig(_Strict):
    """Which strategy searches which space, and how candidates are scored."""

    strategy: Literal["random", "grid", "optuna"] = "random"
    n_trials: int = Field(10, ge=1, le=100_000)
    cv: int | None = Field(3, ge=2, le=100)
    scoring: str | None = None
    space: dict[str, Any] = Field(default_factory=dict)
    grid_points: int = Field(3, ge=2, le=100)
    sampler: Literal["tpe", "random", "cmaes", "qmc"] = "tpe"
    pruner: Literal["none", "median", "successive_halving", "hyperband"] = "median"
    storage: str | None = DEFAULT_OPTUNA_STORAGE
    heartbeat: int = Field(30, ge=1, le=3600)

    @field_validator("space", mode="before")
    @classmethod
    def _parse_space(cls, value: Any) -> dict[str, Dimension]:
        if value is None:
            return {}
        if isinstance(value, str):
            if value not in SPACES:
                raise ValueError(f"unknown preset space {value!r}{_did_you_mean(value, SPACES)}; "
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
            raise ValueError(f"unknown scorer {value!r}{_did_you_mean(value, get_scorer_names())}")
        return value


class TrackingConfig(_Strict):
    """Where MLflow records the study (embedded SQLite + local artifacts by default)."""

    uri: str | None = None
    experiment: str | None = None
    log_models: bool = True

    def resolved_uri(self) -> str:
        """The tracking URI in force: the study file's, else ``MLFLOW_TRACKING_URI``, else local SQLite."""
        return tracking_uri(self.uri)


class StudyConfig(_Strict):
    """A whole study file."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    seed: int = Field(42, ge=0, le=2**32 - 1)
    preset: Literal[tuple(PRESETS)] | None = None  # type: ignore[valid-type]

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or raw.get("preset") not in PRESETS:
            return raw
        merged = merge(PRESETS[raw["preset"]], raw)
        searched = (raw.get("search") or {}).get("space") or {}
        own_params = (raw.get("model") or {}).get("params") or {}
        for name in searched if isinstance(searched, dict) else ():
            if name not in own_params:  # the user searches what the preset fixes: the search wins
                merged["model"]["params"].pop(name, None)
        return merged

    @model_validator(mode="after")
    def _cross_checks(self) -> StudyConfig:
        both = sorted(set(self.model.params) & set(self.search.space))
        if both:
            raise ValueError(f"{both} are both fixed in model.params and searched in search.space; keep one")
        if self.search.cv is None and self.data.valid_size == 0:
            raise ValueError("search.cv is null (holdout) but data.valid_size is 0: there is nothing to score on")
        return self

    @property
    def experiment_name(self) -> str:
        return self.tracking.experiment or self.name


def _did_you_mean(word: str, candidates: Any) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
    where = ".".join(str(p) for p in loc) or "study"
    if error["type"] == "extra_forbidden":
        owner = _model_at(root, loc[:-1])
        hint = _did_you_mean(str(loc[-1]), owner.model_fields) if owner else ""
        return f"{where}: unknown key{hint}"
    if error["type"] == "missing":
        return f"{where}: required field is missing"
    message = error["msg"].removeprefix("Value error, ")
    return f"{where}: {message} (got {error['input']!r})" if error["type"] != "value_error" else f"{where}: {message}"


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
        if not sep or not key:
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
