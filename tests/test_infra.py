"""The production monitoring wiring: Prometheus rules that promtool accepts and that fire when they should, a Grafana
dashboard with the panels asked for, and compose mounts that exist. That the rules and the dashboard query only metrics
a live service exports is checked against a real ``/metrics`` in ``tests/bentos/test_service.py``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

INFRA = REPO / "infra"
PROMETHEUS = INFRA / "prometheus"
DASHBOARD = INFRA / "grafana" / "dashboards" / "slipway.json"
METRIC = re.compile(r"\b(?:slipway|bentoml)_[a-z_]+\b")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        if os.environ.get("SLIPWAY_REQUIRE_SERVICES"):
            pytest.fail("promtool is required here: apt-get install prometheus")
        pytest.skip("promtool (Debian's prometheus package) is not installed")
    return subprocess.run([binary, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)


def referenced_metrics() -> set[str]:
    """Every metric name the alert rules and the dashboard query."""
    rules = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    exprs = [r["expr"] for group in rules["groups"] for r in group["rules"]]
    exprs += [t["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for t in panel["targets"]]
    return {name for expr in exprs for name in METRIC.findall(expr)}


def test_the_alert_rules_pass_promtool_check() -> None:
    done = promtool("check", "rules", "rules.yml")
    assert done.returncode == 0 and "SUCCESS: 7 rules found" in done.stdout, done.stdout + done.stderr
    config = promtool("check", "config", "--syntax-only", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_each_alert_fires_on_the_series_that_should_raise_it_and_only_then() -> None:
    done = promtool("test", "rules", "rules_test.yml")
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr
    tested = {
        t["alertname"]
        for case in yaml.safe_load((PROMETHEUS / "rules_test.yml").read_text())["tests"]
        for t in case["alert_rule_test"]
    }
    declared = {r["alert"] for g in yaml.safe_load((PROMETHEUS / "rules.yml").read_text())["groups"] for r in g["rules"]}
    assert declared - tested <= {"SlipwayModelErrors", "SlipwayPredictionLogDamaged"}, declared - tested


def test_the_dashboard_shows_what_the_issue_asks_for_from_the_provisioned_datasource() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = [p["title"] for p in dashboard["panels"]]
    for wanted in ("Requests/s", "Latency p50 / p99", "Errors/s", "Canary share", "Prediction-log drops"):
        assert any(t.startswith(wanted) for t in titles), titles
    datasource = yaml.safe_load((INFRA / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    uid = datasource["datasources"][0]["uid"]
    assert all(
        p["datasource"]["uid"] == uid and all(t["datasource"]["uid"] == uid for t in p["targets"]) for p in dashboard["panels"]
    )
    assert len({p["id"] for p in dashboard["panels"]}) == len(titles)


def test_compose_mounts_only_files_that_exist() -> None:
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    mounts = [v.split(":")[0] for s in compose["services"].values() for v in s.get("volumes", []) if v.startswith("./")]
    assert {"./prometheus", "./grafana/provisioning", "./grafana/dashboards"} <= set(mounts)
    assert all((INFRA / m).exists() for m in mounts), [m for m in mounts if not (INFRA / m).exists()]
    assert set(compose["secrets"]) == {s for service in compose["services"].values() for s in service.get("secrets", [])}


def test_the_dask_manifests_start_a_cluster_the_score_flow_reaches_with_what_its_workers_need() -> None:
    from dask.utils import parse_bytes
    from distributed.cli import dask_scheduler, dask_worker

    docs = {d["metadata"]["name"] + "/" + d["kind"]: d for d in yaml.safe_load_all((INFRA / "k8s" / "dask.yaml").read_text())}
    scoring = next(d for d in yaml.safe_load_all((INFRA / "k8s" / "scoring.yaml").read_text()) if d["kind"] == "Deployment")
    shared = {d["metadata"]["name"] for d in yaml.safe_load_all((INFRA / "k8s" / "shared.yaml").read_text())}

    def container(name: str) -> dict[str, object]:
        return docs[f"{name}/Deployment"]["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]

    scheduler, worker = container("dask-scheduler"), container("dask-worker")
    # the arguments are ones the installed `dask scheduler` / `dask worker` accept (click raises on a typo)
    s = dask_scheduler.main.make_context("dask scheduler", list(scheduler["args"][1:])).params  # type: ignore[index]
    w = dask_worker.main.make_context("dask worker", list(worker["args"][1:])).params  # type: ignore[index]
    assert scheduler["command"] == worker["command"] == ["dask"] and scheduler["args"][0] == "scheduler"  # type: ignore[index]
    service = docs["dask-scheduler/Service"]["spec"]
    comm = next(p for p in service["ports"] if p["name"] == "tcp-comm")
    assert w["scheduler"] == f"tcp://dask-scheduler:{comm['port']}" and comm["port"] == int(s["port"]) == 8786
    labels = docs["dask-scheduler/Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()  # the Service reaches the scheduler's pod
    assert "DASK_SCHEDULER_ADDRESS: tcp://dask-scheduler:8786" in (INFRA / "compose.yaml").read_text()  # same address
    # Dask manages memory against the container's own limit, so it spills and pauses before the kernel kills it
    limits = worker["resources"]["limits"]  # type: ignore[index]
    assert parse_bytes(w["memory_limit"]) == parse_bytes(limits["memory"].replace("Gi", "GiB")) and w["nthreads"] == 1
    # same image and credentials as the service; the run folders and batch log on the shared volume at SLIPWAY_HOME
    assert worker["image"] == scheduler["image"] == scoring["spec"]["template"]["spec"]["containers"][0]["image"]
    assert worker["envFrom"] == [{"secretRef": {"name": "slipway-production"}}]
    home = re.search(r"SLIPWAY_HOME=(\S+)", (INFRA / "Dockerfile").read_text())
    assert home is not None and {"name": "slipway-home", "mountPath": home.group(1)} in worker["volumeMounts"]  # type: ignore[operator]
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in docs["dask-worker/Deployment"]["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"slipway-home"} <= shared
