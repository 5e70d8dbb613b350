"""MLflow set-up: the tracking URI from the environment, artifacts under the home."""

from __future__ import annotations

import mlflow

from slipway.paths import Home


def use_experiment(name: str, home: Home) -> str:
    """Select (creating if needed) the experiment; return its id.

    With the embedded SQLite store, artifacts go under ``SLIPWAY_HOME`` rather than
    MLflow's ``./mlruns`` default; a tracking server decides for itself.
    """
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        mlflow.set_experiment(experiment_id=experiment.experiment_id)
        return str(experiment.experiment_id)
    location = None
    if mlflow.get_tracking_uri().startswith("sqlite:"):
        location = (home.mlflow / "artifacts").as_uri()
    experiment_id = mlflow.create_experiment(name, artifact_location=location)
    mlflow.set_experiment(experiment_id=experiment_id)
    return str(experiment_id)
