"""A sample deployment (two registered versions, a Feast online store) behind a real ``bentoml serve`` process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mlflow import MlflowClient

from models.decision import KEY_ENV
from models.registry import CHAMPION, alias_version, publish_decision
from models.routing import Routing
from models.sample import build_sample_deployment
from slipway import signing
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


def _prepare(root: Path, serving: dict[str, Any], key: Ed25519PrivateKey | None) -> tuple[Settings, Home, pd.DataFrame]:
    raw = small_params(root, rows=2000, n_trials=1)
    raw["serving"].update({"poll_seconds": 0.5, "log_flush_seconds": 0.2, **serving})
    if key is not None:
        raw["promotion"]["decision_key"] = signing.public_text(key.public_key())
    settings = load_settings(write_params(root / "params.yaml", raw))
    test = build_sample_deployment(settings)
    if key is not None:  # the sample's first champion, as 'slipway run switch' would sign it
        publish_decision(settings.registry.model_name, alias_version(settings.registry.model_name, CHAMPION), Routing(), key)
    return settings, Home.current(), test


@contextmanager
def sample_service(
    root: Path,
    serving: dict[str, Any] | None = None,
    tracking_uri: str | None = None,
    ready: str = "/readyz",
    promotion_key: Ed25519PrivateKey | None = None,
    extra_env: dict[str, str] | None = None,
    before_serve: Callable[[dict[str, str]], None] | None = None,
) -> Iterator[Served]:
    """Build the sample deployment under ``root`` and serve it until the block ends.

    ``serving``: params overrides; ``tracking_uri``: the registry the service reads, if not the
    deployment's own database (an MLflow server in front of it); ``ready``: the path awaited;
    ``promotion_key``: decisions are signed with it (``promotion.decision_key``), and the
    environment the flows get holds it (``SLIPWAY_PROMOTION_KEY``); ``extra_env``: added to the
    environment of the flows and the service; ``before_serve``: run with that environment once the
    deployment is built, before ``bentoml serve`` starts (e.g. ``slipway run package``).
    """
    env = {
        **os.environ,
        "SLIPWAY_HOME": str(root / "home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'home' / 'mlflow' / 'mlflow.db'}",
        "SLIPWAY_PARAMS": str(root / "params.yaml"),
        **(extra_env or {}),
    }
    if promotion_key is not None:
        env[KEY_ENV] = signing.private_pem(promotion_key)
    with preserved_environment():
        for key in ("SLIPWAY_HOME", "MLFLOW_TRACKING_URI", "SLIPWAY_PARAMS"):
            os.environ[key] = env[key]
        from slipway.paths import prepare_environment

        prepare_environment()
        settings, home, test = _prepare(root, serving or {}, promotion_key)
        if before_serve is not None:
            before_serve(env)
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
