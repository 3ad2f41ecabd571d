"""``tracking.system_metrics: true``: MLflow's system metrics (``system/cpu_utilization_percentage``, memory,
disk, network; GPU where MLflow can read one) sampled every few seconds on the study run, which spans the whole
study. Trial runs get none: most last a few seconds, under MLflow's sampling interval."""

from __future__ import annotations

import logging

from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

_log = logging.getLogger(__name__)
SAMPLING_SECONDS = 5.0


class SystemMetrics:
    """One MLflow system-metrics monitor (a thread of this process) on the study run."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._monitor: SystemMetricsMonitor | None = None

    def start(self, run_id: str) -> None:
        if self._monitor is None:
            self._monitor = SystemMetricsMonitor(run_id, sampling_interval=SAMPLING_SECONDS, resume_logging=True,
                                                 tracking_uri=self.tracking_uri)
            self._monitor.start()

    def stop(self) -> None:
        """Stop sampling (what was sampled is logged first)."""
        if self._monitor is not None:
            try:
                self._monitor.finish()
            except Exception as exc:  # noqa: BLE001  (a monitor that fails never fails the study)
                _log.warning("hpsearch: the system metrics monitor stopped with an error: %s", exc)
            self._monitor = None
