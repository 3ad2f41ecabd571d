"""The run an LR range test is recorded in (``hpsearch lr-find``, and ``learning_rate: auto`` before a search)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from hpsearch.tracking._retry import Retry
from hpsearch.tracking._run import BufferedRun


def log_range_test(client: MlflowClient, retry: Retry, experiment_id: str, study_name: str, test: Any,
                   plot_path: Path) -> str:
    """One run (tag ``hpsearch.role=lr-find``, named ``lr-find-<optimizer>``): the loss and LR per step, the
    findings, the plot; returns its id."""
    suffix = f"-{test.optimizer}" if test.optimizer else ""
    tags = {"hpsearch.role": "lr-find", "hpsearch.study": study_name}
    run = BufferedRun(client, None, retry, f"lr-find{suffix}", create=lambda: client.create_run(
        experiment_id, run_name=f"lr-find{suffix}", tags=tags).info)
    run.log_params({"optimizer": test.optimizer, "start_lr": float(test.lrs[0]) if len(test.lrs) else None,
                    "iterations": len(test.lrs)})
    for step, (lr, loss) in enumerate(zip(test.lrs, test.losses)):
        values = {"lr": lr, "loss": loss}
        if step < len(test.smoothed):
            values["loss_smoothed"] = test.smoothed[step]
        run.log_metrics({k: v for k, v in values.items() if math.isfinite(v)}, step=step)
    findings = {k: getattr(test, k) for k in ("divergence_lr", "suggested_lr", "steepest_lr")}
    run.log_metrics({k: v for k, v in findings.items() if v is not None})
    if test.problems:
        run.set_tags({"hpsearch.problems": " | ".join(test.problems)})
    run.flush()
    retry("the range-test plot", lambda: client.log_artifact(run.run_id, str(plot_path)))
    run.finish(status="FINISHED")
    return run.run_id
