"""Where Slipway keeps its local state.

Everything lives under ``SLIPWAY_HOME`` (default ``.slipway/`` in the working
directory) so one variable relocates the lake, the MLflow store, the Feast stores,
Optuna studies, validation results and reports together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Home:
    """The local-state layout rooted at one directory."""

    root: Path

    @classmethod
    def current(cls) -> Home:
        """The home named by ``SLIPWAY_HOME``, else ``./.slipway``."""
        return cls(Path(os.environ.get("SLIPWAY_HOME", ".slipway")).resolve())

    @property
    def lake(self) -> Path:
        return self.root / "lake"

    @property
    def bronze(self) -> Path:
        return self.lake / "bronze"

    @property
    def silver(self) -> Path:
        return self.lake / "silver"

    @property
    def quarantine(self) -> Path:
        return self.lake / "quarantine"

    @property
    def gold(self) -> Path:
        return self.lake / "gold"

    @property
    def validations(self) -> Path:
        return self.root / "validations"

    @property
    def mlflow(self) -> Path:
        return self.root / "mlflow"

    @property
    def feast(self) -> Path:
        return self.root / "feast"

    @property
    def optuna(self) -> Path:
        return self.root / "optuna"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit" / "audit.jsonl"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def batch_predictions(self) -> Path:
        """Batch-scored rows with typed feature columns, read by the monitor next to the live log."""
        return self.root / "batch-predictions"

    @property
    def scores(self) -> Path:
        """Default output of batch score runs."""
        return self.lake / "scores"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def evidently(self) -> Path:
        """The Evidently UI's workspace: one project per model, one snapshot per monitor run."""
        return self.root / "evidently"

    @property
    def prefect(self) -> Path:
        return self.root / "prefect"


OPTUNA_STORAGE_ENV = "SLIPWAY_OPTUNA_STORAGE"


def optuna_storage(home: Home) -> str:
    """The Optuna storage URL: ``SLIPWAY_OPTUNA_STORAGE`` (e.g. PostgreSQL), else SQLite under the home.

    Optuna has no environment variable of its own for this.
    """
    url = os.environ.get(OPTUNA_STORAGE_ENV)
    if url:
        return url
    home.optuna.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home.optuna / 'optuna.db'}"


def prepare_environment() -> Home:
    """Pin every tool's local state under the Slipway home before the tools are imported.

    Standard variables set by the user (``MLFLOW_TRACKING_URI``, ``PREFECT_API_URL``,
    ``PREFECT_HOME``) win; only missing ones get embedded defaults.
    """
    home = Home.current()
    home.root.mkdir(parents=True, exist_ok=True)
    os.environ["SLIPWAY_HOME"] = str(home.root)
    os.environ.setdefault("PREFECT_HOME", str(home.prefect))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{home.mlflow / 'mlflow.db'}")
    # The first start of the embedded Prefect server migrates a new SQLite database,
    # which takes longer than Prefect's 20 s default on a small machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("FEAST_USAGE", "False")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("BENTOML_HOME", str(home.root / "bentoml"))
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    home.mlflow.mkdir(parents=True, exist_ok=True)
    return home
