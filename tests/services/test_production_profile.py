"""The production profile end to end: only environment variables point Slipway at real servers.

PostgreSQL backs the Prefect server, the MLflow tracking server (and its basic-auth
users), the Optuna study and the Feast registry; Redis holds the online features;
S3 (moto's server) holds the raw batch and MLflow's artifacts. The ``slipway``
commands get the variables of ``infra/production.env.example`` and nothing else.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import optuna
import pandas as pd
import psycopg
import pytest
import redis
from mlflow import MlflowClient
from sqlalchemy import make_url

from slipway.paths import Home
from slipway.processes import answers, free_port, running_server
from slipway.settings import load_settings
from tests.conftest import REPO, slipway, small_params, write_params
from tests.services.conftest import BIN, PrefectOnPostgres, feast_profile, make_bucket, s3_keys, with_driver

pytestmark = pytest.mark.services

PROFILE = REPO / "infra" / "production.env.example"
REDIS_DB = 11  # the machine Redis' database these tests own (flushed at the start)


def profile_variables() -> set[str]:
    return {m.group(1) for m in re.finditer(r"^([A-Z_][A-Z0-9_]*)=", PROFILE.read_text(), re.MULTILINE)}


@pytest.fixture(scope="module")
def mlflow_server(
    new_database: Callable[[str], str], s3: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """infra/mlflow/start.sh as shipped: PostgreSQL stores, S3 artifacts, basic auth; yields (url, admin password)."""
    make_bucket(s3, "mlflow-artifacts")
    port = free_port()
    password = secrets.token_urlsafe(12)
    env = {
        **os.environ,
        **s3,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "MLFLOW_BACKEND_STORE_URI": with_driver(new_database("mlflow"), "psycopg"),
        "MLFLOW_AUTH_DATABASE_URI": with_driver(new_database("mlflow_auth"), "psycopg"),
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin",
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        "MLFLOW_ARTIFACTS_DESTINATION": "s3://mlflow-artifacts/mlflow",
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
    }
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("mlflow-server") / "mlflow.log"
    with running_server(["sh", str(REPO / "infra" / "mlflow" / "start.sh")], answers(f"{url}/health"), log, env=env):
        yield url, password


OWN = "slipway-test"  # application_name of the test's own connections
CONNECTION_BUDGET = 40  # Prefect 10 + MLflow (1 worker) 5 + its auth store + Optuna 6 + Feast + this test's own


@contextmanager
def peak_connections(url: str) -> Iterator[dict[str, int]]:
    """Sample ``pg_stat_activity`` every 0.2 s while the block runs: peak connections per database and in all."""
    admin = make_url(url).set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    peaks: dict[str, int] = defaultdict(int)
    stop = threading.Event()

    def sample() -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            while not stop.is_set():
                rows = conn.execute(
                    "select datname, count(*) from pg_stat_activity"
                    " where datname is not null and application_name <> %s group by datname",
                    (OWN,),
                ).fetchall()
                for name, count in rows:
                    peaks[name] = max(peaks[name], int(count))
                peaks["(all)"] = max(peaks["(all)"], sum(int(c) for _, c in rows))
                stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peaks
    finally:
        stop.set()
        sampler.join(10)


def test_training_on_the_production_backends_resumes_an_interrupted_study(
    prefect_on_postgres: PrefectOnPostgres,
    mlflow_server: tuple[str, str],
    new_database: Callable[[str], str],
    machine_redis: redis.Redis,
    s3: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mlflow_url, password = mlflow_server
    make_bucket(s3, "landing")
    optuna_url = with_driver(new_database("optuna"), "psycopg")
    # this test's own reads (left out of the connection count), through one storage: a URL per call
    # made a new engine and pool per poll, which under a slow start exhausted PostgreSQL's max_connections
    reader = optuna.storages.RDBStorage(f"{optuna_url}?application_name={OWN}")
    redis_kwargs = machine_redis.connection_pool.connection_kwargs
    online = redis.Redis(host=redis_kwargs["host"], port=redis_kwargs["port"], db=REDIS_DB)
    online.flushdb()
    home = Home(tmp_path / "home")
    profile = {
        "SLIPWAY_HOME": str(home.root),
        "PREFECT_API_URL": prefect_on_postgres.api_url,
        "MLFLOW_TRACKING_URI": mlflow_url,
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": password,
        "SLIPWAY_OPTUNA_STORAGE": optuna_url,
        **feast_profile(new_database("feast"), f"{redis_kwargs['host']}:{redis_kwargs['port']},db={REDIS_DB}"),
        **s3,
    }
    assert set(profile) == profile_variables(), "the test and infra/production.env.example name different variables"
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8", **profile}

    raw = small_params(tmp_path, rows=4000, n_trials=16)
    raw["data"]["source"] = "s3://landing/leads.csv"
    raw["train"]["workers"] = 2
    params = str(write_params(tmp_path / "params.yaml", raw))
    settings = load_settings(params)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return slipway([*args, "--params", params], env, check=True)

    run("generate")  # the raw batch lands in S3
    assert s3_keys(s3, "landing") == ["leads.csv"]
    run("run", "ingest")
    run("run", "materialize")
    gold = pd.read_parquet(home.gold / "features.parquet")
    assert online.dbsize() == gold[settings.data.entity].nunique()  # one Redis hash per entity

    # Training is killed part-way through its Optuna study (both worker processes with it).
    log = (tmp_path / "train-1.log").open("w")
    first = subprocess.Popen(
        [str(BIN / "slipway"), "run", "train", "--params", params],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    before: list[optuna.trial.FrozenTrial] = []
    deadline = time.monotonic() + 300
    while len(before) < 3:
        assert first.poll() is None, f"training ended before it could be interrupted: {(tmp_path / 'train-1.log').read_text()}"
        assert time.monotonic() < deadline, "no Optuna trial finished within 300s"
        time.sleep(0.3)
        names = optuna.get_all_study_names(storage=reader)
        if names:
            running = optuna.load_study(study_name=names[0], storage=reader)
            before = running.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    [study_name] = optuna.get_all_study_names(storage=reader)
    interrupted = optuna.load_study(study_name=study_name, storage=reader)
    assert len(interrupted.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))) < 16

    with peak_connections(optuna_url) as peaks:  # everything on this PostgreSQL while training resumes
        second = run("run", "train")
    assert f"resuming Optuna study {study_name}" in second.stdout + second.stderr
    optuna_db = str(make_url(optuna_url).database)
    assert peaks[optuna_db] <= 2 * (raw["train"]["workers"] + 1), peaks  # infra/README.md's connection budget
    assert peaks["(all)"] <= CONNECTION_BUDGET, peaks

    # Optuna: still one study on PostgreSQL; the trials finished before the kill are kept, not re-run.
    assert optuna.get_all_study_names(storage=reader) == [study_name]
    study = optuna.load_study(study_name=study_name, storage=reader)
    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    assert 16 <= len(finished) <= 17  # at most one worker's overshoot: the finished trials were not run again
    kept = {t.number: t.params for t in study.trials}
    assert all(kept[t.number] == t.params for t in before)
    assert len({t.user_attrs["pid"] for t in finished}) >= 3  # two workers per run, two runs

    # MLflow: the version is on the tracking server, its files in the S3 bucket, behind basic auth.
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    client = MlflowClient(tracking_uri=mlflow_url)
    version = client.get_model_version_by_alias(settings.registry.model_name, "challenger")
    assert version.run_id is not None
    tags = client.get_run(version.run_id).data.tags
    assert tags["optuna_study"] == study_name and tags["optuna_storage"] == optuna_url
    artifacts = s3_keys(s3, "mlflow-artifacts")
    assert any(key.endswith("/MLmodel") for key in artifacts), artifacts[:20]
    anonymous = httpx.get(f"{mlflow_url}/api/2.0/mlflow/registered-models/search", timeout=10)
    assert anonymous.status_code == 401

    # Prefect: the runs are recorded in the server's PostgreSQL database.
    with psycopg.connect(prefect_on_postgres.database_url) as conn:
        rows = conn.execute(
            "select f.name, r.state_type from flow_run r join flow f on f.id = r.flow_id where r.state_type = 'COMPLETED'"
        ).fetchall()
    completed = {name for name, _ in rows}
    assert {"ingest", "materialize", "train"} <= completed
