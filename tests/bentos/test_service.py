"""The scoring service over HTTP, against a real ``bentoml serve`` process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest

from models.routing import Mode, Routing
from slipway.prediction_log import feature_frame, read_prediction_log
from slipway.service_metrics import read_state
from tests.serving import Served
from tests.test_infra import referenced_metrics

pytestmark = pytest.mark.e2e  # starts real servers or processes


def post(served: Served, path: str, body: Any, **headers: str) -> httpx.Response:
    return httpx.post(f"{served.url}{path}", json=body, headers=headers, timeout=30)


def set_routing(served: Served, routing: Routing) -> None:
    client = served.client()
    for key, value in routing.to_tags().items():
        client.set_registered_model_tag(served.settings.registry.model_name, key, value)
    time.sleep(served.settings.serving.poll_seconds * 3)  # within a few polling intervals


def test_scores_equal_the_registered_pyfunc(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    response = post(served, "/predict", {"rows": served.rows})
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert {p["model_version"] for p in predictions} == {"1"}
    assert len({p["request_id"] for p in predictions}) == len(served.rows)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", served.env["MLFLOW_TRACKING_URI"])  # not set_tracking_uri: that is process-wide
    expected = mlflow.pyfunc.load_model(f"models:/{served.settings.registry.model_name}/1").predict(pd.DataFrame(served.rows))
    np.testing.assert_allclose([p["score"] for p in predictions], expected, rtol=1e-6)


def test_entities_are_scored_with_online_features(served: Served) -> None:
    ids = served.entity_ids[:5]
    by_entity = post(served, "/predict_entities", {"entity_ids": ids})
    assert by_entity.status_code == 200
    scores = [p["score"] for p in by_entity.json()["predictions"]]
    by_rows = post(served, "/predict", {"rows": served.rows[:5]})
    np.testing.assert_allclose(scores, [p["score"] for p in by_rows.json()["predictions"]], rtol=1e-6)


def test_unknown_entities_are_404_naming_them(served: Served) -> None:
    response = post(served, "/predict_entities", {"entity_ids": [served.entity_ids[0], "ghost-1", "ghost-2"]})
    assert response.status_code == 404
    assert "ghost-1" in response.text and "ghost-2" in response.text


@pytest.mark.parametrize(
    ("body", "media", "status"),
    [
        ('{"rows": [{"page_views": NaN}]}', "application/json", 400),
        ('{"rows": "all"}', "application/json", 400),
        ('{"entity_ids": []}', "application/json", 400),
        (b"\x80\x04\x95\x00", "application/vnd.bentoml+pickle", 415),
        ("{}", "text/plain", 415),
        ('{"rows": [' + "1," * 600_000 + "1]}", "application/json", 413),
    ],
)
def test_bad_input_is_a_client_error_over_http(served: Served, body: str | bytes, media: str, status: int) -> None:
    path = "/predict_entities" if "entity_ids" in str(body) else "/predict"
    response = httpx.post(f"{served.url}{path}", content=body, headers={"content-type": media}, timeout=30)
    assert response.status_code == status
    assert "error" in response.json()


def test_openapi_metrics_and_probes(served: Served) -> None:
    spec = httpx.get(f"{served.url}/docs.json").json()
    text = json.dumps(spec)
    for feature in served.settings.data.features:
        assert f'"{feature}"' in text
    assert "/predict_entities" in spec["paths"]
    assert httpx.get(f"{served.url}/livez").status_code == 200
    post(served, "/predict", {"rows": served.rows[:2]})
    metrics = httpx.get(f"{served.url}/metrics").text
    counted = [line for line in metrics.splitlines() if line.startswith("slipway_predictions_total{")]
    assert any('model_version="1"' in c and 'route="champion"' in c and float(c.rsplit(" ", 1)[1]) >= 2 for c in counted), counted
    assert "slipway_prediction_latency_seconds_bucket" in metrics
    exported = {line.split("{")[0].split(" ")[0] for line in metrics.splitlines() if line and not line.startswith("#")}
    exported |= {line.split()[2] for line in metrics.splitlines() if line.startswith("# TYPE ")}
    missing = referenced_metrics() - exported  # what infra/'s alert rules and Grafana dashboard query
    assert missing <= {"slipway_model_errors_total"}, missing  # a labelled counter shows once a challenger has failed
    state = read_state(served.url)
    assert (state.champion, state.challenger, state.canary_percent, state.shadow) == ("1", None, 0, False)


def test_routing_follows_the_registry_without_restart(served: Served) -> None:
    log_dir = served.home.predictions
    set_routing(served, Routing(Mode.SHADOW))
    response = post(served, "/predict", {"rows": served.rows[:10]})
    assert {p["model_version"] for p in response.json()["predictions"]} == {"1"}  # shadow is never returned
    ids = {p["request_id"] for p in response.json()["predictions"]}
    time.sleep(1.5)
    logged = read_prediction_log(log_dir).set_index("request_id").loc[sorted(ids)]
    assert (logged["shadow_version"] == "2").all() and logged["shadow_score"].between(0, 1).all()
    assert (logged["served_version"] == "1").all() and (logged["latency_ms"] > 0).all()
    data = served.settings.data
    sent = {r: row for r, row in zip([p["request_id"] for p in response.json()["predictions"]], served.rows[:10], strict=True)}
    features = feature_frame(logged, data.features)  # typed columns, one per declared feature
    for request_id, row in sent.items():
        got = features.loc[request_id]
        assert all(got[c] == pytest.approx(float(row[c])) for c in data.numeric if row.get(c) is not None), (row, got)
        assert all(got[c] == row[c] for c in data.categorical if row.get(c) is not None), (row, got)

    assert read_state(served.url).shadow and read_state(served.url).challenger == "2"
    set_routing(served, Routing(Mode.CANARY, 10))
    assert read_state(served.url).canary_percent == 10
    ids_all = served.entity_ids[:300]
    first = post(served, "/predict_entities", {"entity_ids": ids_all}).json()["predictions"]
    again = post(served, "/predict_entities", {"entity_ids": ids_all}).json()["predictions"]
    share = sum(p["model_version"] == "2" for p in first) / len(first)
    assert 0.03 < share < 0.2
    assert [p["model_version"] for p in first] == [p["model_version"] for p in again]  # sticky per entity

    set_routing(served, Routing())
    back = post(served, "/predict_entities", {"entity_ids": ids_all}).json()["predictions"]
    assert {p["model_version"] for p in back} == {"1"}


def test_fuzzing_finds_no_server_error(served: Served, tmp_path: Path) -> None:
    st = str(Path(sys.executable).parent / "schemathesis")
    result = subprocess.run(
        [
            st,
            "run",
            f"{served.url}/docs.json",
            "--checks",
            "not_a_server_error",
            "-n",
            "40",
            "--seed",
            "7",
            "--include-path-regex",
            "^/predict",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "Tested: 2" in result.stdout, result.stdout[-2000:]  # both scoring endpoints were exercised


MATERIALIZE_LOOP = """
import sys, time
from datetime import datetime, timezone
from slipway.paths import prepare_environment
prepare_environment()
from slipway.feature_store import open_store

store = open_store()
deadline = time.monotonic() + float(sys.argv[1])
runs = 0
while time.monotonic() < deadline:
    store.materialize(datetime(2026, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc))
    runs += 1
print("RUNS", runs)
"""


def test_entities_keep_answering_while_features_materialize(served: Served) -> None:
    """Feast refuses reads of a view in MATERIALIZING state unless told to serve the last values."""
    ids = served.entity_ids[:20]
    expected = [p["score"] for p in post(served, "/predict_entities", {"entity_ids": ids}).json()["predictions"]]
    loop = subprocess.Popen([sys.executable, "-c", MATERIALIZE_LOOP, "12"], env=served.env, stdout=subprocess.PIPE, text=True)
    statuses: list[int] = []
    try:
        while loop.poll() is None:
            response = post(served, "/predict_entities", {"entity_ids": ids})
            statuses.append(response.status_code)
            if response.status_code == 200:
                np.testing.assert_allclose([p["score"] for p in response.json()["predictions"]], expected, rtol=1e-6)
    finally:
        out, _ = loop.communicate(timeout=60)
    runs = int(out.rsplit("RUNS", 1)[1])
    assert loop.returncode == 0 and runs >= 2  # several materializations overlapped the requests
    assert len(statuses) > 20
    assert set(statuses) == {200}, f"{sum(s != 200 for s in statuses)} of {len(statuses)} lookups failed"


WRITE_ONLINE = """
import json, sys
from datetime import datetime, timezone
import pandas as pd
from slipway.paths import prepare_environment
prepare_environment()
from slipway.feature_store import open_store

store = open_store()
view = store.get_feature_service(sys.argv[2]).feature_view_projections[0].name
store.write_to_online_store(view, pd.DataFrame([{**json.loads(sys.argv[1]), sys.argv[3]: datetime.now(timezone.utc)}]))
"""


def test_values_written_to_the_online_store_are_served_at_once(served: Served) -> None:
    """The service reads the online store on every lookup: nothing is cached that materialization could leave stale."""
    data, i = served.settings.data, 7
    entity, row = served.entity_ids[i], dict(served.rows[i])
    before = post(served, "/predict_entities", {"entity_ids": [entity]}).json()["predictions"][0]["score"]
    changed = {**row, **{c: float(row[c] or 0) * 2 + 3 for c in data.numeric}}
    written = subprocess.run(
        [
            sys.executable,
            "-c",
            WRITE_ONLINE,
            json.dumps({data.entity: entity, **changed}),
            served.settings.features.service,
            data.timestamp,
        ],
        env=served.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert written.returncode == 0, written.stderr[-2000:]
    after = post(served, "/predict_entities", {"entity_ids": [entity]}).json()["predictions"][0]["score"]
    expected = post(served, "/predict", {"rows": [changed]}).json()["predictions"][0]["score"]
    assert after == pytest.approx(expected, rel=1e-6) and after != pytest.approx(before, rel=1e-3)


def test_bentoml_build_works_from_the_repository(tmp_path: Path) -> None:
    import os

    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    bentoml = str(Path(sys.executable).parent / "bentoml")
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [bentoml, "build", "-f", "bentos/bentofile.yaml", "."], cwd=repo, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "slipway-scoring" in result.stdout + result.stderr
    [src] = (tmp_path / "bentoml" / "bentos" / "slipway-scoring").glob("*/src")
    assert (src / "infra" / "feast" / "feature_store.yaml").is_file()  # the production profile's store travels along


def test_feature_store_failure_is_503_and_recovers(served: Served) -> None:
    import sqlite3

    table = f"slipway_{served.settings.features.view}"  # Feast's SQLite table: <project>_<view>
    online = sqlite3.connect(served.home.feast / "online.db")
    online.execute(f"ALTER TABLE {table} RENAME TO {table}_away")  # the store loses the view: reads fail
    online.commit()
    try:
        response = post(served, "/predict_entities", {"entity_ids": served.entity_ids[:2]})
        assert response.status_code == 503, response.text
        assert post(served, "/predict", {"rows": served.rows[:1]}).status_code == 200  # rows need no store
    finally:
        online.execute(f"ALTER TABLE {table}_away RENAME TO {table}")
        online.commit()
        online.close()
    assert post(served, "/predict_entities", {"entity_ids": served.entity_ids[:2]}).status_code == 200  # no restart


def test_slipway_serve_starts_the_service(served: Served, tmp_path: Path) -> None:
    from slipway.processes import answers, free_port, running_server

    port = free_port()
    slipway = str(Path(sys.executable).parent / "slipway")
    command = [slipway, "serve", "--params", served.env["SLIPWAY_PARAMS"], "--port", str(port)]
    with running_server(command, answers(f"http://127.0.0.1:{port}/readyz"), tmp_path / "serve.log", env=served.env, timeout=120):
        response = httpx.post(f"http://127.0.0.1:{port}/predict", json={"rows": served.rows[:1]}, timeout=10)
        assert response.status_code == 200 and response.json()["predictions"][0]["model_version"] == "1"
    time.sleep(2)
    with pytest.raises(httpx.HTTPError):  # the server went down with the command: nothing left behind
        httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2)
