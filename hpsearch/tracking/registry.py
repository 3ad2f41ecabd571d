"""The model registry: a study's delivered models are versions of ``<study>-best``, the newest aliased
``champion`` (``models:/<study>-best@champion``, what :func:`~hpsearch.tracking.reading.load_best` loads)."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException


def registry_name(study_name: str) -> str:
    """The registered-model name of a study's best model (alias ``champion``)."""
    return f"{study_name}-best"


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    """Create the registered model ``name`` unless it exists."""
    try:
        client.create_registered_model(name, tags={"hpsearch.role": "best"})
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise


def register_champion(client: MlflowClient, name: str, run_id: str) -> None:
    """A new version of ``name`` from the run's model (``model/``), with the alias ``champion``."""
    ensure_registered_model(client, name)
    version = client.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id)
    client.set_registered_model_alias(name, "champion", version.version)
