"""Prefect work pools on the PostgreSQL-backed server: a process worker runs a flow; the Kubernetes template registers."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from slipway.catalog import FLOWS
from slipway.processes import running_server
from tests.conftest import REPO, run_command, small_params, write_params
from tests.services.conftest import BIN, PrefectOnPostgres

pytestmark = pytest.mark.services

TEMPLATE = REPO / "infra" / "prefect" / "kubernetes-job-template.json"


def run(command: list[str], env: dict[str, str]) -> str:
    return run_command(command, env, timeout=300, check=True).stdout


def register(env: dict[str, str], params: str, pool: str, *extra: str) -> str:
    return run([sys.executable, "-m", "flows.deployments", "--params", params, "--work-pool", pool, *extra], env)


def test_a_process_worker_runs_a_flow_from_the_postgres_backed_server(
    prefect_on_postgres: PrefectOnPostgres, tmp_path: Path
) -> None:
    params = str(write_params(tmp_path / "params.yaml", small_params(tmp_path, rows=1500)))
    env = {**os.environ, "PREFECT_API_URL": prefect_on_postgres.api_url, "SLIPWAY_HOME": str(tmp_path / "home")}
    run([str(BIN / "slipway"), "generate", "--params", params], env)
    run([str(BIN / "prefect"), "work-pool", "create", "slipway-process", "--type", "process", "--overwrite"], env)
    out = register(env, str(Path(params).resolve()), "slipway-process")
    assert f"registered {len(FLOWS)} deployments on work pool 'slipway-process'" in out

    worker = [str(BIN / "prefect"), "worker", "start", "--pool", "slipway-process", "--type", "process", "--limit", "1"]

    def online() -> bool:
        with SyncPrefectClient(prefect_on_postgres.api_url) as client:
            return any(w.status == "ONLINE" for w in client.read_workers_for_work_pool("slipway-process"))

    with (
        running_server(worker, online, tmp_path / "worker.log", env=env, cwd=REPO),
        temporary_settings(updates={PREFECT_API_URL: prefect_on_postgres.api_url}),
    ):
        flow_run = run_deployment("ingest/ingest", timeout=300)
    assert isinstance(flow_run, FlowRun)
    assert flow_run.state is not None and flow_run.state.is_completed(), (tmp_path / "worker.log").read_text()[-3000:]
    assert "rows_accepted" in (tmp_path / "worker.log").read_text()  # the worker's process printed ingest's reconciliation
    assert any((tmp_path / "home" / "lake" / "silver").rglob("*.parquet"))


def test_the_kubernetes_job_template_is_accepted_and_deployments_carry_the_image(
    prefect_on_postgres: PrefectOnPostgres, tmp_path: Path
) -> None:
    env = {**os.environ, "PREFECT_API_URL": prefect_on_postgres.api_url, "SLIPWAY_HOME": str(tmp_path / "home")}
    create = [str(BIN / "prefect"), "work-pool", "create", "slipway-k8s", "--type", "kubernetes"]
    run([*create, "--base-job-template", str(TEMPLATE), "--overwrite"], env)
    out = register(env, "params.yaml", "slipway-k8s", "--image", "registry.example.com/slipway:1.2.3")
    assert f"registered {len(FLOWS)} deployments on work pool 'slipway-k8s'" in out

    with SyncPrefectClient(prefect_on_postgres.api_url) as client:
        pool = client.read_work_pool("slipway-k8s")
        train = client.read_deployment_by_name("train/train")
    assert pool.base_job_template == json.loads(TEMPLATE.read_text())  # stored as written, placeholders intact
    container = pool.base_job_template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "{{ profile_secret }}"}}]  # the profile, from a Secret
    assert train.work_pool_name == "slipway-k8s"
    assert train.job_variables == {"image": "registry.example.com/slipway:1.2.3"}
    assert train.parameters == {"params": "params.yaml"}  # a path inside the image
