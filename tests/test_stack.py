"""``slipway up`` / ``down``: the local stack as real processes, deployments run from the Prefect API."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from slipway.processes import free_port
from tests.conftest import slipway, small_params, write_demo_params

pytestmark = pytest.mark.e2e  # starts real servers or processes


def test_up_serves_every_flow_as_a_deployment_and_down_stops_it(tmp_path: Path, prefect_server: str) -> None:
    raw = small_params(tmp_path, rows=1500)
    raw["promotion"]["service_url"] = f"http://127.0.0.1:{free_port()}"
    params = write_demo_params(tmp_path / "params.yaml", raw)
    home = tmp_path / "home"
    env = {
        **os.environ,
        "SLIPWAY_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        "PREFECT_API_URL": prefect_server,
    }
    ports = ["--mlflow-port", str(free_port()), "--dashboard-port", str(free_port())]
    up = slipway(["up", "--params", str(params), *ports], env)
    stack = json.loads((home / "stack" / "stack.json").read_text()) if up.returncode == 0 else {}
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert set(stack) == {"prefect", "mlflow", "dashboard", "scoring", "deployments"} and stack["prefect"]["pid"] is None
        assert httpx.get(stack["mlflow"]["url"]).status_code == 200
        assert httpx.get(f"{stack['dashboard']['url']}/api/projects").status_code == 200  # the Evidently UI's API
        assert httpx.get(f"{stack['scoring']['url']}/livez").status_code == 200
        with SyncPrefectClient(prefect_server) as client:
            promote = client.read_deployment_by_name("promote/promote")
        schema = (promote.parameter_openapi_schema or {})["properties"]
        assert schema["requested_by"]["type"] == "string" and promote.parameters == {"params": str(params)}
        with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
            run = run_deployment("ingest/ingest", timeout=300)
        assert isinstance(run, FlowRun)
        assert run.state is not None and run.state.is_completed(), run.state
        assert any((home / "lake" / "silver").rglob("*.parquet"))
    finally:
        down = slipway(["down", "--params", str(params)], env)
    assert down.returncode == 0 and "stopped: deployments, scoring, dashboard, mlflow" in down.stdout, down.stdout + down.stderr
    for name in ("mlflow", "dashboard", "scoring", "deployments"):
        with pytest.raises(ProcessLookupError):
            os.killpg(stack[name]["pid"], 0)
