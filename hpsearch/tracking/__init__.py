"""Tracking a study: the contract and the null tracker (:mod:`.base`), what MLflow holds (:mod:`.layout`), the
MLflow tracker (:mod:`.mlflow_tracker`, with :mod:`._run` and :mod:`._retry`), reading studies back
(:mod:`.reading`, :mod:`.recorded`) and offline sync (:mod:`.sync`). Only this package imports MLflow."""
