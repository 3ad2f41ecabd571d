"""What MLflow holds of one study, as plain data: read by :func:`hpsearch.tracking.reading.collect`, drawn by
:mod:`hpsearch.guidance.report` (in another process when a study draws its own report: the record travels as JSON)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from hpsearch.space.dimensions import is_number


@dataclass
class TrialRecord:
    """One trial run: parsed params, state, score (finished trials only), loss curves as (step, value)."""

    number: int
    state: str
    params: dict[str, Any]
    score: float | None
    curves: dict[str, list[tuple[int, float]]]

    @property
    def finished(self) -> bool:
        return self.state == "finished" and self.score is not None


@dataclass
class StudyRecord:
    """A study run and its trials; the curves are fold 0's when the study cross-validated (``cv``)."""

    experiment: str
    study_run_id: str
    name: str
    scoring: str
    cv: bool
    trials: list[TrialRecord]

    @property
    def finished(self) -> list[TrialRecord]:
        return [t for t in self.trials if t.finished]

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts and lists, for JSON (non-finite floats need JSON's NaN/Infinity, which Python reads)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StudyRecord:
        """The record :meth:`to_dict` gave (after a JSON round trip)."""
        data = dict(data)
        trials = [TrialRecord(**{**t, "curves": {k: [tuple(p) for p in v] for k, v in t["curves"].items()}})
                  for t in data.pop("trials")]
        return cls(**data, trials=trials)


def parse_param(text: str) -> Any:
    """An MLflow param string back to its number (or list of numbers); anything else stays a string."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if is_number(value) or (isinstance(value, list) and value and all(is_number(v) for v in value)):
        return value
    return text
