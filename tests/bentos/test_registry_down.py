"""A replica started while the MLflow server is down: alive at once, ready by itself once the registry is back."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import httpx
import pytest

from slipway.processes import answers, free_port, running_server
from tests.serving import sample_service

pytestmark = pytest.mark.e2e  # starts real servers or processes


def test_a_replica_started_while_mlflow_is_down_is_alive_at_once_and_serves_once_it_is_back(tmp_path: Path) -> None:
    port = free_port()
    registry = f"http://127.0.0.1:{port}"  # nothing listens there yet
    with sample_service(tmp_path, tracking_uri=registry, ready="/livez") as served:  # waits for /livez only
        assert httpx.get(f"{served.url}/livez", timeout=5).status_code == 200
        assert httpx.get(f"{served.url}/readyz", timeout=5).status_code == 503  # no traffic before a champion loads
        refused = httpx.post(f"{served.url}/predict", json={"rows": served.rows[:1]}, timeout=10)
        assert refused.status_code == 503, refused.text

        database = served.env["MLFLOW_TRACKING_URI"]  # the deployment's own registry, now behind a server
        command = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", database]
        command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        with running_server(command, answers(f"{registry}/health"), tmp_path / "mlflow.log", env=served.env):
            deadline = time.monotonic() + 120
            while httpx.get(f"{served.url}/readyz", timeout=5).status_code != 200:
                assert time.monotonic() < deadline, "the replica did not become ready once the registry was back"
                time.sleep(1)
            scored = httpx.post(f"{served.url}/predict", json={"rows": served.rows[:3]}, timeout=10)
        assert scored.status_code == 200, scored.text
        assert {p["model_version"] for p in scored.json()["predictions"]} == {"1"}
