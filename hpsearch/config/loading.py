"""Reading a study file: safe YAML (no tags, bounded depth and size), ``--set`` overrides, presets merged
in, then the schema; every error is one paragraph that names the field or the file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from yaml.composer import ComposerError

from hpsearch.config.schema import ExecutionConfig, SearchConfig, StudyConfig, short_repr
from hpsearch.errors import ConfigError, did_you_mean

MAX_DEPTH = 40  # nesting levels a study document may have
MAX_VALUES = 100_000  # values a study document may hold once its YAML aliases are expanded


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
    return f"{where}: {message} (got {short_repr(error['input'])})"


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


def parse_execution(raw: dict[str, Any]) -> ExecutionConfig:
    """Validate ``SearchCV(execution={...})``: a study file's ``execution`` section."""
    return _validate(ExecutionConfig, raw, "invalid execution settings")


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
