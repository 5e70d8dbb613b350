"""The Redis online store (infra/feast profile): serving through it, and its faults."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml

from models.sample import clean_leads
from slipway import lake
from slipway.feature_store import OnlineReader, open_store
from slipway.paths import Home
from slipway.settings import load_settings
from tests.conftest import REPO, slipway, small_params, write_params
from tests.services.conftest import PrefectOnPostgres, RedisServer, feast_profile
from tests.serving import sample_service

pytestmark = pytest.mark.services


def probe_paths() -> set[str]:
    manifests = yaml.safe_load_all((REPO / "infra" / "k8s" / "scoring.yaml").read_text())
    deployment = next(d for d in manifests if d["kind"] == "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["serve", "--host", "0.0.0.0", "--port", str(container["ports"][0]["containerPort"])]
    probes = [container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe", "startupProbe")]
    assert probes[:2] == ["/readyz", "/livez"]
    return set(probes)


def test_entity_lookups_answer_503_fast_while_redis_is_down_and_recover(
    redis_server: RedisServer, new_database: Callable[[str], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in feast_profile(new_database("feast"), redis_server.connection_string).items():
        monkeypatch.setenv(key, value)
    with sample_service(tmp_path, {"lookup_timeout_seconds": 1.0}) as served:
        ids = served.entity_ids[:10]

        def ask() -> tuple[httpx.Response, float]:
            started = time.monotonic()
            response = httpx.post(f"{served.url}/predict_entities", json={"entity_ids": ids}, timeout=30)
            return response, time.monotonic() - started

        first, _ = ask()
        assert first.status_code == 200
        for path in probe_paths():  # what infra/k8s/scoring.yaml asks of every replica
            assert httpx.get(f"{served.url}{path}", timeout=10).status_code == 200, path
        assert redis_server.keys() >= len(set(served.entity_ids))  # the features live in this Redis

        assert redis_server.process is not None
        redis_server.process.send_signal(signal.SIGSTOP)  # hung: connections open, nothing answers
        try:
            hung, waited = ask()
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        assert hung.status_code == 503 and "feature store unavailable" in hung.json()["error"]  # the cause, not internals
        assert "feature store unavailable" in (tmp_path / "bentoml.log").read_text()
        assert waited < 3, f"a hung Redis held the request for {waited:.1f}s (lookup_timeout_seconds: 1)"

        redis_server.stop()  # gone: connections refused
        down, waited = ask()
        assert down.status_code == 503
        assert waited < 3, f"a stopped Redis held the request for {waited:.1f}s (lookup_timeout_seconds: 1)"
        rows = httpx.post(f"{served.url}/predict", json={"rows": served.rows[:3]}, timeout=30)
        assert rows.status_code == 200  # scoring sent rows needs no feature store

        redis_server.start()  # the same data comes back from its dump file
        deadline = time.monotonic() + 30
        again, _ = ask()
        while again.status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
            again, _ = ask()
        assert again.status_code == 200, again.text
        assert served.process.poll() is None  # recovered by itself: the same service process
        np.testing.assert_allclose(
            [p["score"] for p in again.json()["predictions"]], [p["score"] for p in first.json()["predictions"]]
        )


def test_a_failed_materialization_rerun_leaves_the_online_store_complete(
    redis_server: RedisServer,
    new_database: Callable[[str], str],
    prefect_on_postgres: PrefectOnPostgres,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    params = write_params(tmp_path / "params.yaml", small_params(tmp_path, rows=3000))
    settings = load_settings(params)
    data = settings.data
    home = Home(tmp_path / "home")
    lake.write_parquet(clean_leads(settings), home.silver / "batch.parquet")  # silver as ingest leaves it
    profile = feast_profile(new_database("feast"), redis_server.connection_string)
    env = {**os.environ, **profile, "SLIPWAY_HOME": str(home.root), "PREFECT_API_URL": prefect_on_postgres.api_url}

    # Redis runs out of memory part-way through the load.
    redis_server.limit_memory(300_000)
    failed = slipway(["run", "materialize", "--params", str(params)], env)
    assert failed.returncode != 0, failed.stdout
    assert "OutOfMemoryError" in failed.stderr and "maxmemory" in failed.stderr
    features = pd.read_parquet(home.gold / "features.parquet")
    entities = features[data.entity].nunique()
    partial = redis_server.keys()
    assert 0 < partial < entities  # some entities were written, not all

    redis_server.limit_memory(None)
    rerun = slipway(["run", "materialize", "--params", str(params)], env)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert redis_server.keys() == entities

    latest = features.sort_values(data.timestamp).groupby(data.entity).tail(1).set_index(data.entity).sort_index()
    for key, value in {**profile, "SLIPWAY_HOME": str(home.root)}.items():
        monkeypatch.setenv(key, value)
    store = open_store()
    ids = list(latest.index)
    online = store.get_online_features(
        features=store.get_feature_service(settings.features.service), entity_rows=[{data.entity: e} for e in ids]
    ).to_df()
    online = online.set_index(data.entity).loc[ids]
    for column in data.numeric:
        np.testing.assert_allclose(online[column].to_numpy(float), latest[column].to_numpy(float), err_msg=column)
    for column in data.categorical:
        assert (online[column].to_numpy() == latest[column].to_numpy()).all(), column
    reader = OnlineReader(store, settings.features.service, data.features)  # the service's lower-level read
    rows = reader.read([*ids, "no-such-entity"])
    assert rows[-1] is None and pd.DataFrame(rows[:-1], index=ids).equals(online[data.features])

    async def service_reads() -> list[list[dict[str, object] | None]]:  # one loop, as in the service (its client is bound to it)
        return [await reader.read_async(batch) for batch in ([*ids, "no-such-entity"], [ids[0]], ["no-such-entity"])]

    many, one, unknown = asyncio.run(service_reads())  # several ids: one pipeline; one id: a plain HMGET
    assert reader.native_async and many == rows and one == rows[:1] and unknown == [None]
