"""The monitor flow on live traffic, and the automation that turns its drift event into one retraining."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd
import pytest
import yaml
from evidently.ui.workspace import Workspace
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort
from prefect.events import emit_event
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from flows.automations import ensure_automations
from models import dashboard, monitoring
from slipway.catalog import DRIFT_EVENT, FLOWS, deployment_name
from slipway.processes import answers, free_port, running_server
from tests.conftest import REPO, write_params
from tests.promotion.conftest import Stage

pytestmark = pytest.mark.e2e  # starts real servers or processes


def monitor(stage: Stage, params: Path, seconds: float) -> tuple[int, str]:
    """Run the monitor flow over the last ``seconds`` of the prediction log, as a CLI user would.

    The window is counted from when the flow starts, some seconds after this call.
    """
    env = {**stage.served.env, "PREFECT_API_URL": stage.prefect_url}
    command = [sys.executable, "-m", "flows.cli", "run", "monitor", "--params", str(params), f"window_hours={seconds / 3600}"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout + done.stderr


def drifted_rows(stage: Stage, n: int) -> list[dict[str, object]]:
    """Held-out rows as a changed market would send them: more engagement, one new lead source."""
    rows = pd.DataFrame(stage.served.rows * (n // len(stage.served.rows) + 1)).head(n)
    rows["page_views"] = rows["page_views"] * 4 + 20
    rows["email_opens"] = rows["email_opens"] * 3 + 5
    rows["lead_source"] = "partner_referral"
    return [{str(k): (None if pd.isna(v) else v) for k, v in r.items()} for r in rows.to_dict("records")]


@pytest.fixture(scope="module")
def runner_params(stage: Stage) -> Path:
    raw = yaml.safe_load((stage.root / "params.yaml").read_text())
    raw["promotion"].update(service_url=stage.served.url, shadow_seconds=2, approval_timeout_seconds=5, min_shadow_samples=10)
    raw["monitor"] = {"min_rows": 200, "retrain_cooldown_seconds": 600}
    return write_params(stage.root / "runner.yaml", raw)


@pytest.fixture(scope="module")
def runner(stage: Stage, runner_params: Path) -> Iterator[None]:
    """Every flow served as a deployment, with the retraining automations, as ``slipway up`` sets them up."""
    env = {**stage.served.env, "PREFECT_API_URL": stage.prefect_url}
    command = [sys.executable, "-m", "flows.deployments", "--params", str(runner_params)]

    def registered() -> bool:  # every deployment, the automations' targets among them
        return all(httpx.get(f"{stage.prefect_url}/deployments/name/{deployment_name(f)}").status_code == 200 for f in FLOWS)

    with running_server(command, registered, stage.root / "runner.log", env=env, cwd=REPO):
        ensure_automations(stage.prefect_url, str(runner_params), {})
        assert (
            len(ensure_automations(stage.prefect_url, str(runner_params), {})) == 4
        )  # idempotent: still three retraining automations and the guard's (no alert channel)
        yield


def retrain_runs(stage: Stage) -> list[FlowRun]:
    with stage.prefect() as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["retrain"])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=20,
        )


def test_traffic_from_the_training_distribution_raises_no_drift(stage: Stage, runner_params: Path) -> None:
    day = stage.served.home.predictions / f"date={datetime.now(UTC):%Y-%m-%d}"
    day.mkdir(parents=True, exist_ok=True)
    (day / "L0-20000101T000000000000-damaged0.parquet").write_bytes(b"")  # what a full disk leaves behind
    time.sleep(8)  # the background traffic: held-out entities, same distribution as training
    code, out = monitor(stage, runner_params, 8)
    assert code == 0 and "no drift, no degradation" in out, out
    assert "damaged prediction-log file: date=" in out and "L0-20000101T000000000000-damaged0" in out, out  # skipped, said
    metrics = httpx.get(f"{stage.served.url}/metrics", timeout=10).text  # the service's compactor set it aside
    assert re.search(r"slipway_prediction_log_damaged_files(\{[^}]*\})? 1\.0", metrics), metrics[-2000:]
    report = sorted((stage.served.home.reports / "monitor").glob("*/evidently.html"))
    assert report and report[-1].stat().st_size > 10_000


def test_drift_is_reported_and_a_burst_of_events_retrains_once(stage: Stage, runner: None, runner_params: Path) -> None:
    stage.reset(champion="1", challenger="2")
    versions_before = len(stage.served.client().search_model_versions(f"name='{stage.name}'"))
    started = time.monotonic()
    rows = drifted_rows(stage, 3000)
    for i in range(0, len(rows), 100):
        assert httpx.post(f"{stage.served.url}/predict", json={"rows": rows[i : i + 100]}, timeout=30).status_code == 200
    time.sleep(1)
    code, out = monitor(stage, runner_params, time.monotonic() - started + 120)  # generous: the CLI starts slowly under load
    assert code == 0 and "page_views: PSI" in out and "lead_source: PSI" in out, out
    verdicts = sorted((stage.served.home.reports / "monitor").glob("*/verdict.json"))
    assert "page_views" in verdicts[-1].read_text()
    for _ in range(2):  # the same alarm again at once: a burst
        emit_event(event=DRIFT_EVENT, resource={"prefect.resource.id": f"slipway.model.{stage.name}"}, payload={"burst": True})

    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        runs = retrain_runs(stage)
        if len(runs) >= 3 and all(r.state and r.state.is_final() for r in runs):
            break
        time.sleep(2)
    else:
        pytest.fail(f"retrain runs did not all finish: {[(r.name, r.state) for r in retrain_runs(stage)]}")
    completed = [r for r in runs if r.state and r.state.is_completed()]
    assert len(runs) == 3 and completed, [(r.name, r.state) for r in runs]
    assert all(r.parameters["reason"] == DRIFT_EVENT for r in runs)  # started by the automation, not by us
    versions_after = len(stage.served.client().search_model_versions(f"name='{stage.name}'"))
    assert versions_after == versions_before + 1, "a burst of drift events must retrain exactly once"
    log = (stage.root / "runner.log").read_text()
    assert "retrain skipped" in log or any(r.state and r.state.is_cancelled() for r in runs), log[-3000:]
    deadline = time.monotonic() + 120  # the promotion the retraining requested ends unanswered (5 s timeout)
    while (run := stage.latest_promote_run()) and run.state and not run.state.is_final():
        assert time.monotonic() < deadline, f"the requested promotion did not end: {run.state}"
        time.sleep(2)


def test_the_evidently_dashboard_shows_every_monitor_run(stage: Stage, browser: webdriver.Chrome, tmp_path: Path) -> None:
    """After the monitor runs above: one snapshot each in the model's project, its dashboard drawn with data."""
    workspace = stage.served.home.evidently
    runs = list((stage.served.home.reports / "monitor").glob(f"*/{monitoring.SNAPSHOT}"))
    assert len(runs) >= 2, runs
    (project,) = Workspace(str(workspace)).search_project(dashboard.project_name(stage.name))
    assert len(Workspace(str(workspace)).list_runs(project.id)) == len(runs)  # one snapshot per monitor run that judged
    port = free_port()
    command = [str(Path(sys.executable).parent / "evidently"), "ui", "--workspace", str(workspace), "--port", str(port)]
    with running_server(command, answers(f"http://127.0.0.1:{port}"), tmp_path / "evidently-ui.log"):
        browser.get(f"http://127.0.0.1:{port}/projects/{project.id}")
        WebDriverWait(browser, 60).until(
            expected_conditions.presence_of_element_located((By.XPATH, "//*[contains(text(), 'PSI per feature')]"))
        )
        WebDriverWait(browser, 60).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "svg")) >= 10)  # the plots drawn
        time.sleep(2)  # let the last plots draw
        page = browser.find_element(By.TAG_NAME, "body").text
        shot = stage.root / "evidently-dashboard.png"
        browser.save_screenshot(str(shot))
    panels = (
        "Share of drifted features",
        "PSI per feature",
        "Score distribution",
        "Rows per window",
        "ROC-AUC",
        "Conversion rate",
    )
    for title in panels:
        assert title in page, page[:2000]
    assert "page_views" in page  # a feature's PSI line is in a legend
    assert shot.stat().st_size > 50_000, shot.stat().st_size  # drawn plots, not a blank page
    print(f"dashboard screenshot: {shot}")
