"""A sample deployment (two registered versions, a Feast online store) behind a real ``bentoml serve`` process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow import MlflowClient

from models.sample import build_sample_deployment
from slipway.paths import Home
from slipway.processes import answers, free_port, running_server
from slipway.settings import Settings, load_settings
from tests.conftest import preserved_environment, small_params, write_params


@dataclass
class Served:
    url: str
    settings: Settings
    home: Home
    rows: list[dict[str, Any]]
    entity_ids: list[str]
    env: dict[str, str]
    process: subprocess.Popen[bytes]

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.env["MLFLOW_TRACKING_URI"])


def _prepare(root: Path, serving: dict[str, Any]) -> tuple[Settings, Home, pd.DataFrame]:
    raw = small_params(root, rows=2000, n_trials=1)
    raw["serving"].update({"poll_seconds": 0.5, "log_flush_seconds": 0.2, **serving})
    settings = load_settings(write_params(root / "params.yaml", raw))
    return settings, Home.current(), build_sample_deployment(settings)


@contextmanager
def sample_service(
    root: Path, serving: dict[str, Any] | None = None, tracking_uri: str | None = None, ready: str = "/readyz"
) -> Iterator[Served]:
    """Build the sample deployment under ``root`` and serve it until the block ends.

    ``serving``: params overrides; ``tracking_uri``: the registry the service reads, if not the
    deployment's own database (an MLflow server in front of it); ``ready``: the path awaited.
    """
    env = {
        **os.environ,
        "SLIPWAY_HOME": str(root / "home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'home' / 'mlflow' / 'mlflow.db'}",
        "SLIPWAY_PARAMS": str(root / "params.yaml"),
    }
    with preserved_environment():
        for key in ("SLIPWAY_HOME", "MLFLOW_TRACKING_URI", "SLIPWAY_PARAMS"):
            os.environ[key] = env[key]
        from slipway.paths import prepare_environment

        prepare_environment()
        settings, home, test = _prepare(root, serving or {})
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [
            str(Path(sys.executable).parent / "bentoml"),
            "serve",
            "bentos.service:Scoring",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
        ]
        served_env = {**env, "MLFLOW_TRACKING_URI": tracking_uri or env["MLFLOW_TRACKING_URI"]}
        with running_server(
            command, answers(f"{url}{ready}"), root / "bentoml.log", env=served_env, cwd=Path(__file__).resolve().parents[1]
        ) as process:
            data = settings.data
            rows: list[dict[str, Any]] = [
                {str(k): v for k, v in r.items()} for r in test[data.features].head(40).to_dict("records")
            ]
            yield Served(url, settings, home, rows, test[data.entity].tolist(), env, process)
