"""``slipway demo``: the whole loop on generated data, with embedded defaults.

stack up → pipeline (ingest → materialize → train) → promote v1 → package →
live traffic → monitor (no drift) → a drifted batch arrives → monitor → drift
event → the automation starts retraining → the new challenger goes through
shadow, approval and canary → champion.

Every flow runs as a deployment run on the local Prefect server, exactly as from
the UI. Approvals are answered by the demo itself, as approver ``slipway-demo``
with a comment saying so, signed with a key the demo makes for itself. Timings
(shadow, bake, trials) are shortened in a derived params file under
``SLIPWAY_HOME/demo/``; the stack stays up afterwards for a look around
(``slipway down`` stops it).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from mlflow import MlflowClient
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.stack import up
from models.decision import KEY_ENV
from models.policy import Answer, Request
from models.registry import CHALLENGER, CHAMPION, alias_version, holdout_auc
from models.watch import read_watch
from slipway import lake, signing
from slipway.datagen import generate_leads, write_generated
from slipway.orchestration import resume_paused
from slipway.paths import Home
from slipway.processes import free_port, port_is_free
from slipway.settings import Settings, SettingsError, load_settings
from slipway.traffic import Traffic

DEMO_APPROVER = "slipway-demo"
DEMO_REQUESTER = "demo"
DEMO_OVERRIDES: dict[str, dict[str, Any]] = {
    "train": {"n_trials": 8},
    "promotion": {
        "shadow_seconds": 15,
        "canary_steps": [25, 100],
        "bake_seconds": 8,
        "min_shadow_samples": 100,
        "min_canary_samples": 20,
        "min_auc_gain": 0.0,  # "no worse" on the drifted window
        "max_score_psi": 1.0,  # the retrained model scores the changed market differently, on purpose
        "approval_timeout_seconds": 600,
    },
    "monitor": {"min_rows": 200, "retrain_cooldown_seconds": 600},
    "serving": {"poll_seconds": 1.0, "log_flush_seconds": 0.5},
}


SHORTENED = {"n_trials", "shadow_seconds", "bake_seconds", "min_shadow_samples", "approval_timeout_seconds"}  # never lengthened


def demo_settings(raw: dict[str, Any]) -> dict[str, Any]:
    """The given params with the demo's overrides; durations and budgets are only ever shortened."""
    out = dict(raw)
    for section, values in DEMO_OVERRIDES.items():
        given = dict(raw.get(section) or {})
        merged = {**given, **values}
        for key in SHORTENED & given.keys() & values.keys():
            merged[key] = min(given[key], values[key])
        out[section] = merged
    return out


class Demo:
    def __init__(self, params: str) -> None:
        self.started = time.monotonic()
        self.home = Home.current()
        self.dir = self.home.root / "demo"
        self.dir.mkdir(parents=True, exist_ok=True)
        raw = demo_settings(yaml.safe_load(Path(params).read_text()))
        raw["promotion"]["approvers"] = sorted({*raw["promotion"].get("approvers", []), DEMO_APPROVER})
        self.key = signing.new_private_key()  # the demo's own approver key; its answers are signed like anyone's
        keys = {**raw["promotion"].get("approver_keys", {}), DEMO_APPROVER: signing.public_text(self.key.public_key())}
        raw["promotion"]["approver_keys"] = keys
        self.requester_key = signing.new_private_key()  # the demo requests its first promotion signed, as a person would
        requesters = {
            **raw["promotion"].get("requester_keys", {}),
            DEMO_REQUESTER: signing.public_text(self.requester_key.public_key()),
        }
        raw["promotion"]["requester_keys"] = requesters
        # The promotion key: the flows sign every switch and routing record with it, the service holds its public half.
        promotion_key = signing.new_private_key()
        key_file = self.dir / "promotion_key.pem"
        key_file.write_text(signing.private_pem(promotion_key))
        key_file.chmod(0o600)
        os.environ[KEY_ENV] = str(key_file)  # the stack's flows run with it; the scoring service does not get it
        raw["promotion"]["decision_key"] = signing.public_text(promotion_key.public_key())
        raw["promotion"]["service_url"] = f"http://127.0.0.1:{free_port()}"
        raw["data"]["source"] = str(self.dir / "leads.csv")  # generated data lives apart from any real source
        self.params = self.dir / "params.yaml"
        self.params.write_text(yaml.safe_dump(raw, sort_keys=False))
        self.settings: Settings = load_settings(self.params)
        if self.settings.generate is None:
            raise SettingsError(f"{params}: slipway demo runs on generated data and needs a generate: section")
        self.api = ""
        self.lines: list[str] = []

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:5.0f}s] {message}", flush=True)

    def run(self, deployment: str, **parameters: Any) -> FlowRun:
        run = run_deployment(f"{deployment}/{deployment}", parameters={"params": str(self.params), **parameters}, timeout=1800)
        assert isinstance(run, FlowRun)
        if not (run.state and run.state.is_completed()):
            raise RuntimeError(f"the {deployment} run {run.name} ended {run.state}; see {self.api.removesuffix('/api')}/runs")
        return run

    def client(self) -> SyncPrefectClient:
        return SyncPrefectClient(self.api)

    def latest(self, deployment: str) -> FlowRun | None:
        with self.client() as client:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[deployment])),
                sort=FlowRunSort.EXPECTED_START_TIME_DESC,
                limit=1,
            )
        return runs[0] if runs else None

    def wait_for(self, deployment: str, done: str, after: FlowRun | None, timeout: float = 900) -> FlowRun:
        """The newest run of ``deployment`` (other than ``after``) once it is ``done`` (paused or final)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.latest(deployment)
            state = run.state if run and (after is None or run.id != after.id) else None
            if run and state and (state.is_final() or (done == "paused" and state.is_paused())):
                return run
            time.sleep(1)
        raise RuntimeError(f"no {deployment} run reached '{done}' within {timeout:.0f}s")

    def approve(self, run: FlowRun, what: str) -> FlowRun:
        if not (run.state and run.state.is_paused()):
            raise RuntimeError(f"promotion run {run.name} ended {run.state} before asking for approval (see its logs)")
        self.say(f"   approval form waiting in the Prefect UI: {self.api.removesuffix('/api')}/runs/flow-run/{run.id}")
        answer = Answer(DEMO_APPROVER, True, f"answered automatically by slipway demo ({what})", "")
        signature = signing.sign(self.key, answer.message(str(run.id)))
        resume_paused(str(run.id), {**asdict(answer), "signature": signature})
        self.say(f"   approved by '{DEMO_APPROVER}', signed with its key (the demo answering for a human approver)")
        final = self.wait_for("promote", "final", None)
        if not (final.state and final.state.is_completed()):
            raise RuntimeError(f"promotion run {final.name} ended {final.state}")
        return final

    def logged_since(self, traffic: Traffic, rows: int, timeout: float = 240) -> datetime:
        """Start a monitoring window now and return once ``rows`` more requests were answered and logged.

        Waiting for rows, not for a fixed time, keeps the window full on a slow machine.
        """
        started, before = datetime.now(UTC), traffic.answered
        deadline = time.monotonic() + timeout
        while traffic.answered - before < rows:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {traffic.answered - before} of {rows} requests answered in {timeout:.0f}s")
            time.sleep(0.5)
        time.sleep(3 * self.settings.serving.log_flush_seconds)  # the last acknowledged rows reach the log
        return started

    def monitor(self, since: datetime) -> str:
        self.run("monitor", since=since.isoformat())
        verdicts = sorted((self.home.reports / "monitor").glob("*/verdict.json"))
        return verdicts[-1].read_text() if verdicts else "{}"


def _drifted_batch(settings: Settings, path: Path) -> pd.DataFrame:
    """A month of leads from a changed market: new channel mix, less engagement, a shifted conversion concept."""
    assert settings.generate is not None
    cfg = settings.generate.model_copy(
        update={
            "rows": min(8000, settings.generate.rows),
            "seed": settings.generate.seed + 1,
            "months": 1,
            "covariate_drift": 1.0,
            "concept_drift": 1.0,
        }
    )  # with the configured faults: ingest quarantines them, and the demo's traffic sends only the clean rows
    cfg = cfg.model_copy(update={"start": (pd.Timestamp(cfg.start) + pd.DateOffset(months=settings.generate.months)).date()})
    data = generate_leads(cfg)
    write_generated(data, str(path))
    return data.frame


def run_demo(params: str) -> None:
    demo = Demo(params)
    s, name = demo.settings, demo.settings.registry.model_name
    demo.say(f"slipway demo: the whole loop on generated data (params derived from {params}: {demo.params})")
    demo.say("1/8 local stack: Prefect server, scoring service, every flow as a deployment, retraining automations")
    prefect_port = 4200 if not os.environ.get("PREFECT_API_URL") and port_is_free(4200) else free_port()
    stack = up(str(demo.params), prefect_port, None, 8000 if port_is_free(8000) else free_port())
    demo.api = f"{stack['prefect']['url']}/api"
    traffic = Traffic(s.promotion.service_url, per_second=40)
    with temporary_settings(updates={PREFECT_API_URL: demo.api}):
        try:
            _loop(demo, traffic, name)
        finally:
            traffic.stop()
    _summary(demo, stack, traffic, name)


def _loop(demo: Demo, traffic: Traffic, name: str) -> None:
    s = demo.settings
    demo.say("2/8 pipeline: generated leads → ingest (GX) → materialize (Feast) → train (Optuna, MLflow)")
    assert s.generate is not None
    write_generated(generate_leads(s.generate), s.data.source)
    demo.say(f"   {s.generate.rows} leads generated into {s.data.source}")
    demo.run("pipeline")
    first = alias_version(name, CHALLENGER)
    demo.say(f"   {name} v{first} registered as challenger")
    demo.say("3/8 promote v1: policy → approval (first champion: no live traffic to shadow yet)")
    signed = Request(name, "challenger", DEMO_REQUESTER, datetime.now(UTC).isoformat()).signed(demo.requester_key)
    request = {"params": str(demo.params), "requested_by": DEMO_REQUESTER, "request_signature": signed}
    run_deployment("promote/promote", parameters=request, timeout=0)
    demo.approve(demo.wait_for("promote", "paused", None), "first champion")
    demo.say(f"   champion is v{alias_version(name, CHAMPION)}")
    demo.say("4/8 package the champion as a Bento; the running service already follows the registry")
    demo.run("package")
    labels = pd.read_parquet(demo.home.gold / "labels.parquet")
    traffic.entities(labels[s.data.entity].astype(str).tail(2000).tolist())
    demo.say("5/8 live traffic from the training distribution (entity lookups), then monitor")
    window_rows = 3 * s.monitor.min_rows  # a full window whatever the machine's speed
    window = demo.logged_since(traffic, window_rows)
    demo.lines.append("monitor (in-distribution): " + _verdict(demo.monitor(window)))
    demo.say("   " + demo.lines[-1])
    demo.say("6/8 a drifted month arrives: ingest it, and traffic now comes from it")
    drifted_path = demo.dir / "drifted_leads.csv"
    drifted = _drifted_batch(s, drifted_path)
    raw = yaml.safe_load(demo.params.read_text())
    raw["data"]["source"] = str(drifted_path)
    drift_params = demo.dir / "drifted-batch.yaml"
    drift_params.write_text(yaml.safe_dump(raw, sort_keys=False))
    run_deployment("ingest/ingest", parameters={"params": str(drift_params)}, timeout=1800)
    accepted = lake.read_table(demo.home.silver)
    clean = drifted[drifted[s.data.entity].isin(accepted[s.data.entity])]  # as a caller would send them: valid rows
    # the newer half of the month, where the market has moved (the generator ramps drift up over the month)
    newer = clean.tail(min(4000, max(1, len(clean) // 2)))
    rows = newer[s.data.features].astype(object).where(newer[s.data.features].notna(), None)
    traffic.rows([{str(k): v for k, v in r.items()} for r in rows.to_dict("records")])
    window = demo.logged_since(traffic, window_rows)  # opens once only drifted rows are sent
    demo.say("7/8 monitor → slipway.drift.detected → automation → retrain (materialize, train, request promotion)")
    before = demo.latest("retrain")
    demo.lines.append("monitor (drifted): " + _verdict(demo.monitor(window)))
    demo.say("   " + demo.lines[-1])
    retrain = demo.wait_for("retrain", "final", before)
    if not (retrain.state and retrain.state.is_completed()):
        raise RuntimeError(f"the retrain run {retrain.name} ended {retrain.state}")
    demo.say(f"   retrain run '{retrain.name}' was started by the automation; new challenger v{alias_version(name, CHALLENGER)}")
    demo.say("8/8 the new challenger: policy → shadow on live traffic → approval → canary → champion")
    paused = demo.wait_for("promote", "paused", None)
    demo.approve(paused, "retrained after drift")
    demo.say(f"   champion is v{alias_version(name, CHAMPION)}")


def _verdict(text: str) -> str:
    import json

    verdict = json.loads(text)
    reasons = verdict.get("drift", []) + verdict.get("degraded", [])
    return f"{verdict.get('rows', 0)} rows, " + ("; ".join(reasons[:4]) if reasons else "no drift")


def _summary(demo: Demo, stack: dict[str, dict[str, object]], traffic: Traffic, name: str) -> None:
    client = MlflowClient()
    versions = sorted(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    ui = str(stack["prefect"]["url"])
    print("\n── slipway demo summary ─────────────────────────────────────────")
    for v in versions:
        auc = holdout_auc(name, v.version)
        holdout = "-" if auc is None else f"{auc:.3f}"
        status = v.tags.get("slipway.promotion.status", "-")
        promoted = v.tags.get("slipway.promoted_by", "-")
        print(f"model     {name} v{v.version}  holdout roc_auc={holdout}  last step={status}  promoted by={promoted}")
    print(f"champion  v{alias_version(name, CHAMPION)}")
    if (watch := read_watch(name)) is not None:
        until = f"{watch.until:%Y-%m-%d %H:%M} UTC"
        print(f"guard     v{watch.version} watched beside v{watch.previous} (in shadow) until {until} by the guard deployment")
    for line in demo.lines:
        print(f"drift     {line}")
    print(f"traffic   {sum(traffic.statuses.values())} requests, statuses {traffic.statuses}")
    print(f"Prefect   {ui}  (flow runs, the approval forms, artifacts, automations)")
    print(f"MLflow    mlflow ui --backend-store-uri {client.tracking_uri}")
    print(f"dashboard {stack['dashboard']['url']}  (Evidently UI: the monitor runs of {name} over time)")
    print(f"reports   {demo.home.reports}   audit log {demo.home.audit_log}   history: slipway history")
    print(f"service   {demo.settings.promotion.service_url}/docs   (the stack keeps running; 'slipway down' stops it)")
    print(f"took      {time.monotonic() - demo.started:.0f}s")
