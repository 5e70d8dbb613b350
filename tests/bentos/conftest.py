"""A registry with two versions, a Feast online store, and a real ``bentoml serve`` process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from features import feast_defs, gold, validation
from models import registry, training
from models.pyfunc import ScoringModel
from slipway import lake
from slipway.datagen import generate_leads
from slipway.feature_store import open_store
from slipway.paths import Home
from slipway.settings import Settings, load_settings
from slipway.tracking import use_experiment
from tests.conftest import _free_port, small_params, write_params


@dataclass
class Served:
    url: str
    settings: Settings
    home: Home
    rows: list[dict[str, Any]]
    entity_ids: list[str]
    env: dict[str, str]

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.env["MLFLOW_TRACKING_URI"])


def _prepare(root: Path) -> tuple[Settings, Home, pd.DataFrame]:
    """Silver → gold → Feast (offline + online) → two registered versions, without Prefect."""
    raw = small_params(root, rows=2000, n_trials=1)
    raw["serving"]["poll_seconds"] = 0.5
    raw["serving"]["log_flush_seconds"] = 0.2
    settings = load_settings(write_params(root / "params.yaml", raw))
    data, home = settings.data, Home.current()
    assert settings.generate is not None
    typed = validation.type_batch(generate_leads(settings.generate).frame.astype(str), data).frame
    typed[data.label] = typed[data.label].astype("int8")
    lake.write_parquet(gold.build_features(typed, data), home.gold / "features.parquet")
    store = open_store()
    store.apply(feast_defs.build_definitions(data, settings.features, home).all())
    stamps = typed[data.timestamp]
    store.materialize(stamps.min().to_pydatetime(), datetime.now(UTC))
    frame = gold.build_labels(typed, data).merge(gold.build_features(typed, data), on=[data.entity, data.timestamp])
    split = training.time_split(frame, data, settings.train, data.timestamp)
    use_experiment("service-tests", home)
    champion = training.fit_baseline(split.train, data, settings.train)
    challenger = training.refit_xgboost(split.train, data, settings.train, {"max_depth": 3}, 40)
    versions = []
    for pipeline in (champion, challenger):
        with mlflow.start_run() as run:
            versions.append(
                registry.log_and_register(
                    run, ScoringModel(pipeline, data), split.test.X.head(3), settings.registry.model_name, {}
                )
            )
    registry.set_alias(versions[0], registry.CHAMPION)
    registry.set_alias(versions[1], registry.CHALLENGER)
    return settings, home, split.test.X.assign(**{data.entity: frame.loc[split.test.X.index, data.entity]})


@pytest.fixture(scope="package")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("served")
    env = {
        **os.environ,
        "SLIPWAY_HOME": str(root / "home"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'home' / 'mlflow' / 'mlflow.db'}",
        "SLIPWAY_PARAMS": str(root / "params.yaml"),
    }
    with pytest.MonkeyPatch.context() as patch:
        for key in ("SLIPWAY_HOME", "MLFLOW_TRACKING_URI", "SLIPWAY_PARAMS"):
            patch.setenv(key, env[key])
        from slipway.paths import prepare_environment

        prepare_environment()
        settings, home, test = _prepare(root)
        port = _free_port()
        bentoml = str(Path(sys.executable).parent / "bentoml")
        log = open(root / "bentoml.log", "w")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(
            [bentoml, "serve", "bentos.service:Scoring", "--port", str(port), "--host", "127.0.0.1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[2],
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((root / "bentoml.log").read_text()[-3000:])
                time.sleep(0.5)
            data = settings.data
            rows: list[dict[str, Any]] = [
                {str(k): v for k, v in r.items()} for r in test[data.features].head(40).to_dict("records")
            ]
            yield Served(url, settings, home, rows, test[data.entity].tolist(), env)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()
