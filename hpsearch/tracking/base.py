"""The tracker contract the evaluator and runner rely on, and the tracker that records nothing."""

from __future__ import annotations

from typing import Any, Protocol

from hpsearch.results import DataSplits, StudyResult, TrialResult


class TrialRun(Protocol):
    """An open trial record: curves and tags go in as they come; neither raises when the server is down."""

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None: ...
    def set_tags(self, tags: dict[str, Any]) -> None: ...


class Tracker(Protocol):
    """Records a study: one study record, one trial record per candidate (see :mod:`hpsearch.tracking`)."""

    tracking_uri: str | None
    experiment_id: str | None

    def check_reachable(self) -> None: ...
    def start_study(self, name: str, params: dict[str, Any], study_text: str, resume: bool,
                    run_id: str | None = None) -> str | None: ...
    def log_datasets(self, data: DataSplits) -> None:
        """Record the study's data on the study record, and on each trial record from now on what it used."""

    def close_killed_trials(self, numbers: list[int]) -> None: ...
    def start_trial(self, number: int, params: dict[str, Any]) -> TrialRun: ...
    def end_trial(self, run: TrialRun, result: TrialResult, model: Any = None) -> None:
        """Close the trial's record; sets ``result.run_id`` when the record has an id."""

    def start_report(self) -> None: ...
    def wait(self) -> None: ...
    def end_study(self, result: StudyResult, extra: dict[str, Any], status: str = "FINISHED") -> None: ...
    def abort(self, reason: str, status: str = "KILLED") -> None: ...
    def log_range_test(self, study_name: str, test: Any, plot_path: Any) -> str | None: ...
    def trial_model(self, run_id: str) -> Any:
        """The fitted model a trial record holds (trained in another process or run), or None."""


class _NullRun:
    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        pass

    def set_tags(self, tags: dict[str, Any]) -> None:
        pass


class NullTracker:
    """A Tracker that records nothing (``SearchCV(tracking=False)``): pure in-memory searches."""

    tracking_uri = None
    experiment_id = None

    def check_reachable(self) -> None:
        pass

    def start_study(self, name: str, params: dict[str, Any], study_text: str, resume: bool,
                    run_id: str | None = None) -> None:
        return None

    def log_datasets(self, data: DataSplits) -> None:
        pass

    def close_killed_trials(self, numbers: list[int]) -> None:
        pass

    def start_trial(self, number: int, params: dict[str, Any]) -> _NullRun:
        return _NullRun()

    def end_trial(self, run: TrialRun, result: TrialResult, model: Any = None) -> None:
        pass

    def start_report(self) -> None:
        pass

    def wait(self) -> None:
        pass

    def end_study(self, result: StudyResult, extra: dict[str, Any], status: str = "FINISHED") -> None:
        pass

    def abort(self, reason: str, status: str = "KILLED") -> None:
        pass

    def log_range_test(self, study_name: str, test: Any, plot_path: Any) -> None:
        return None

    def trial_model(self, run_id: str) -> None:
        return None
