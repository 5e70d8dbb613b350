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
    assert done.returncode == 0 and "SUCCESS: 10 rules found" in done.stdout, done.stdout + done.stderr
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


OPERATOR_FILES = {"./params.yaml", "./promotion_key"}  # the operator makes these (compose.yaml's header says how)


def test_compose_mounts_only_files_that_exist_or_that_the_operator_makes_and_git_ignores() -> None:
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    mounts = [v.split(":")[0] for s in compose["services"].values() for v in s.get("volumes", []) if v.startswith("./")]
    files = [s["file"] for s in compose["secrets"].values() if "file" in s]
    assert {"./prometheus", "./grafana/provisioning", "./grafana/dashboards"} <= set(mounts)
    missing = [m for m in [*mounts, *files] if not (INFRA / m).exists()]
    assert set(missing) <= OPERATOR_FILES, missing
    ignored = (REPO / ".gitignore").read_text().split()
    assert all(f"infra/{f.removeprefix('./')}" in ignored for f in OPERATOR_FILES)  # no secret or local params committed
    header = (INFRA / "compose.yaml").read_text().split("name: slipway")[0]
    assert "cp params.yaml infra/params.yaml" in header and "-f infra/promotion_key" in header
    assert set(compose["secrets"]) == {s for service in compose["services"].values() for s in service.get("secrets", [])}


ADMIN_SECRETS = ("POSTGRES_PASSWORD", "AWS_ACCESS_KEY_ID}", "AWS_SECRET_ACCESS_KEY}", "MLFLOW_ADMIN_PASSWORD")


def test_compose_gives_each_container_only_the_credentials_it_needs() -> None:
    from flows.cli import build_parser

    text = (INFRA / "compose.yaml").read_text()
    services = yaml.safe_load(text)["services"]

    def env(name: str) -> dict[str, str]:
        return {k: str(v) for k, v in (services[name].get("environment") or {}).items()}

    administrators = {"postgres", "minio", "buckets", "mlflow", "mlflow-accounts"}  # the stores and their account set-up
    for name in set(services) - administrators:
        leaked = [k for k, v in env(name).items() for secret in ADMIN_SECRETS if secret in v]
        assert not leaked, f"{name} gets an administrator's secret: {leaked}"
    worker, scoring, dask_worker = env("worker"), env("scoring"), env("dask-worker")
    # the flows: MLflow's 'slipway' account (it owns the model), Prefect's auth, the promotion key as a secret file
    assert worker["MLFLOW_TRACKING_USERNAME"] == "slipway" and "PREFECT_API_AUTH_STRING" in worker
    assert worker["SLIPWAY_PROMOTION_KEY"] == "/run/secrets/promotion_key" and services["worker"]["secrets"] == ["promotion_key"]
    assert [n for n in services if "promotion_key" in services[n].get("secrets", [])] == ["worker"]
    # the public service: reads MLflow and the feature registry, no S3, no Prefect, no signing key, a token required
    assert scoring["MLFLOW_TRACKING_USERNAME"] == "scoring" and "slipway_reader:" in scoring["SLIPWAY_FEAST_REGISTRY_URL"]
    assert not [k for k in scoring if k.startswith(("AWS_", "PREFECT_", "SLIPWAY_OPTUNA", "SLIPWAY_PROMOTION"))]
    assert scoring["SLIPWAY_API_TOKEN"].startswith("${SLIPWAY_API_TOKEN:?")
    serve = build_parser().parse_args(services["scoring"]["command"])
    assert serve.command == "serve" and serve.host == "0.0.0.0" and serve.port == 3000
    assert dask_worker["MLFLOW_TRACKING_USERNAME"] == "scoring" and "PREFECT_API_AUTH_STRING" not in dask_worker
    # Prefect's server asks for basic auth, and its health check passes it
    prefect = env("prefect")
    assert prefect["PREFECT_SERVER_API_AUTH_STRING"] == worker["PREFECT_API_AUTH_STRING"]
    assert "PREFECT_SERVER_API_AUTH_STRING" in " ".join(services["prefect"]["healthcheck"]["test"])
    # Kubernetes: the service's own Secret (not the flows' slipway-production) and the params it verifies with
    deployment = next(d for d in yaml.safe_load_all((INFRA / "k8s" / "scoring.yaml").read_text()) if d["kind"] == "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"secretRef": {"name": "slipway-scoring"}}]
    assert build_parser().parse_args(container["args"]).host == "0.0.0.0"
    assert {"name": "params", "mountPath": "/app/params.yaml", "subPath": "params.yaml", "readOnly": True} in container[
        "volumeMounts"
    ]
    # every ${VAR} the file needs is in .env.example
    needed = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    documented = {line.split("=")[0] for line in (INFRA / ".env.example").read_text().splitlines() if "=" in line}
    assert needed <= documented, needed - documented


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
    # both import the scoring code when they start (the scheduler unpacks the graph), not during a run
    assert "models.batch" in s["preload"] and "models.batch" in w["preload"]
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())["services"]
    for service, command in (("dask-scheduler", dask_scheduler), ("dask-worker", dask_worker)):
        entry = compose[service]["entrypoint"]
        assert "models.batch" in command.main.make_context(entry[0], entry[2:]).params["preload"], service
    service = docs["dask-scheduler/Service"]["spec"]
    comm = next(p for p in service["ports"] if p["name"] == "tcp-comm")
    assert w["scheduler"] == f"tcp://dask-scheduler:{comm['port']}" and comm["port"] == int(s["port"]) == 8786
    labels = docs["dask-scheduler/Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()  # the Service reaches the scheduler's pod
    assert "DASK_SCHEDULER_ADDRESS: tcp://dask-scheduler:8786" in (INFRA / "compose.yaml").read_text()  # same address
    # Dask manages memory against the container's own limit, so it spills and pauses before the kernel kills it
    limits = worker["resources"]["limits"]  # type: ignore[index]
    assert parse_bytes(w["memory_limit"]) == parse_bytes(limits["memory"].replace("Gi", "GiB")) and w["nthreads"] == 1
    # same image as the service, the flows' credentials (S3); the run folders and batch log on the shared volume
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


def test_a_headless_service_names_every_ready_scoring_replica_for_the_promote_flow() -> None:
    docs = list(yaml.safe_load_all((INFRA / "k8s" / "scoring.yaml").read_text()))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    headless = next(d for d in docs if d["kind"] == "Service" and d["spec"].get("clusterIP") == "None")
    assert headless["spec"]["clusterIP"] == "None" and not headless["spec"].get("publishNotReadyAddresses", False)
    assert headless["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    [port] = headless["spec"]["ports"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert port["targetPort"] == container["ports"][0]["name"] and port["port"] == container["ports"][0]["containerPort"]
    assert f"http://{headless['metadata']['name']}:{port['port']}" in (INFRA / "README.md").read_text()
