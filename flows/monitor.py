"""Monitor flow: a window of the prediction log against the champion's training reference.

The computation lives in ``models/monitoring.py``; this flow reads the window and
the reference, publishes the verdict (report files, a Prefect table artifact, an
MLflow run) and emits ``slipway.drift.detected``, ``slipway.performance.degraded`` or
``slipway.business.degraded`` when a threshold is crossed, which Prefect automations
turn into retraining and alerts. Before that it checks the serving side: a registry changed
outside Slipway, and replicas that do not serve the champion, each alerted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import pandas as pd
from evidently.core.report import Snapshot
from mlflow import MlflowClient
from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import home, load_params
from flows.events import announce, report_unverified
from flows.labelled import latest_labels
from models import dashboard, drift, monitoring, registry
from slipway import lake
from slipway.catalog import BUSINESS_EVENT, DEGRADED_EVENT, DRIFT_EVENT, SERVING_EVENT
from slipway.prediction_log import LogScan, feature_column, features_by_name
from slipway.service_metrics import ServiceUnreachable, every_replica, read_state, replica_problems
from slipway.settings import Settings
from slipway.tracking import use_experiment


@dataclass(frozen=True)
class MonitorResult:
    champion: str
    verdict: drift.DriftVerdict
    report_dir: str
    events: list[str]
    damaged: list[str] = field(default_factory=list)  # prediction-log files skipped as damaged

    def line(self) -> str:
        reasons = "; ".join(self.verdict.drift + self.verdict.degraded + self.verdict.business) or "no drift, no degradation"
        skipped = f"; {len(self.damaged)} damaged log file(s) skipped" if self.damaged else ""
        events = ", ".join(self.events) or "none"
        return f"monitor v{self.champion}: {self.verdict.rows} rows: {reasons}; events: {events}{skipped}"


@task(cache_policy=NO_CACHE)
def reference_frame(settings: Settings, champion: str) -> pd.DataFrame:
    """Gold rows of the champion's training window (all of gold when it has none), with labels and its scores."""
    data, gold, name = settings.data, home().gold, settings.registry.model_name
    frame = pd.read_parquet(gold / "features.parquet").merge(
        pd.read_parquet(gold / "labels.parquet"), on=[data.entity, data.timestamp]
    )
    window = monitoring.in_training_window(frame, MlflowClient().get_model_version(name, champion).tags, data.timestamp)
    return monitoring.scored_reference(window, f"models:/{name}/{champion}", data, settings.monitor.sample_rows)


def scans(settings: Settings, since: datetime, columns: list[str] | None) -> tuple[LogScan, LogScan]:
    """The service's log and the batch runs' (the nightly population is traffic too) since ``since``."""
    data = settings.data
    live = None if columns is None else [feature_column(c) if c in data.features else c for c in columns]
    return LogScan(home().predictions, since, live), LogScan(home().batch_predictions, since, columns, compacted=False)


@task(cache_policy=NO_CACHE)
def count_rows(settings: Settings, since: datetime) -> int:
    """Logged rows since ``since`` (reads only their times)."""
    return sum(t.num_rows for scan in scans(settings, since, ["time"]) for t in scan.tables())


@task(cache_policy=NO_CACHE)
def read_window(settings: Settings, reference: pd.DataFrame, since: datetime) -> tuple[monitoring.Window, list[str]]:
    """Every logged row since ``since``, taken in file by file; the damaged files skipped on the way."""
    data, cfg = settings.data, settings.monitor
    window = monitoring.Window(reference, data, latest_labels(settings), cfg.sample_rows)
    live, batch = scans(settings, since, [*data.features, "entity", monitoring.SCORE])
    for table in live.tables():
        window.add(features_by_name(table))
    for table in batch.tables():
        window.add(table)
    return window, live.damaged + batch.damaged


@task(cache_policy=NO_CACHE)
def assess(
    settings: Settings, champion: str, reference: pd.DataFrame, window: monitoring.Window, out: Path
) -> drift.DriftVerdict:
    """PSI on every logged row, Evidently's presets on a sample, ROC-AUC once labels arrive."""
    auc = registry.holdout_auc(settings.registry.model_name, champion)
    return monitoring.assess(reference, window, auc, settings.data, settings.monitor, out)


@task(cache_policy=NO_CACHE)
def publish(settings: Settings, champion: str, verdict: drift.DriftVerdict, damaged: list[str], out: Path) -> None:
    """The verdict as a file, a Prefect table artifact and an MLflow run carrying the report."""
    lake.write_json({**verdict.as_dict(), "damaged_files": damaged}, out / "verdict.json")
    create_table_artifact(
        key="drift",
        table=monitoring.psi_table(verdict, settings.monitor, champion),
        description=f"monitor: {verdict.rows} logged rows vs the training reference of v{champion}",
    )
    use_experiment(f"{settings.registry.model_name}-monitoring", home())
    with mlflow.start_run(run_name=f"monitor-{out.name}"):
        mlflow.set_tags(
            {
                "model_version": champion,
                "drift": bool(verdict.drift),
                "degraded": bool(verdict.degraded),
                "business_degraded": bool(verdict.business),
            }
        )
        mlflow.log_metrics({**monitoring.verdict_metrics(verdict), "damaged_files": len(damaged)})
        mlflow.log_artifacts(str(out), "monitor")
    data, name = settings.data, settings.registry.model_name
    dashboard.record(home().evidently, name, data, Snapshot.load(out / monitoring.SNAPSHOT), f"monitor {out.name} v{champion}")


def emit_verdict_events(settings: Settings, champion: str, verdict: drift.DriftVerdict, out: Path) -> list[str]:
    events = []
    kinds = (
        (DRIFT_EVENT, "Drift detected", verdict.drift),
        (DEGRADED_EVENT, "Performance degraded", verdict.degraded),
        (BUSINESS_EVENT, "Business metric degraded", verdict.business),
    )
    for event, what, reasons in kinds:
        if reasons:
            report = out / "evidently.html"
            model = f"{settings.registry.model_name} v{champion}"
            summary = f"{what} on {model} ({verdict.rows} rows): {'; '.join(reasons)}. Report: {report}"
            announce(event, settings, champion, summary, **monitoring.event_payload(verdict, reasons, report))
            events.append(event)
            print(f"{event}: {'; '.join(reasons)}")
    return events


def check_signed_state(settings: Settings) -> None:
    """With signed decisions: alert and audit a registry changed behind the platform's back, as the service sees it too."""
    key, name = settings.promotion.decision_key, settings.registry.model_name
    if not key:
        return
    problems = registry.signed_state_problems(name, key)
    url = settings.promotion.service_url
    try:
        if read_state(url).unverified and not problems:
            problems.append(f"the service at {url} reports registry state it does not serve (see its /readyz)")
    except ServiceUnreachable:
        pass  # the registry's own check above stands
    if problems:
        report_unverified(settings, registry.audit_log(home().audit_log, name), problems, "monitor")


def check_serving(settings: Settings) -> None:
    """Alert when a replica does not serve the champion (it cannot load it, say) or does not answer.

    A replica that has not yet followed a switch catches up within its poll interval,
    so a disagreement counts only if it is still there two intervals later.
    """
    name = settings.registry.model_name
    try:
        champion = registry.served_champion(name, settings.promotion.decision_key)
    except registry.RegistryTampered:
        return  # check_signed_state reports it
    urls = every_replica(settings.promotion)
    if champion is None or not replica_problems(champion, urls):
        return
    time.sleep(2 * settings.serving.poll_seconds)
    if problems := replica_problems(champion, urls):
        summary = f"{name}: not every replica serves the champion v{champion}: " + "; ".join(problems)
        print(summary)
        announce(SERVING_EVENT, settings, champion, summary, problems=problems)


@flow(name="monitor", log_prints=True)
def monitor(params: str = "params.yaml", window_hours: float | None = None, since: datetime | None = None) -> MonitorResult:
    """Compare the recent prediction log with the champion's training data; emit events on drift or decay.

    The window is the last ``window_hours`` (default ``monitor.window_hours``), or
    everything logged since ``since`` when that is given.
    """
    settings = load_params(params)
    cfg, name = settings.monitor, settings.registry.model_name
    check_signed_state(settings)
    check_serving(settings)
    champion = registry.alias_version(name, registry.CHAMPION)
    if champion is None:
        raise RuntimeError(f"{name!r} has no champion to monitor yet: promote one first")
    if since is None:
        since = datetime.now(UTC) - timedelta(hours=window_hours or cfg.window_hours)
    elif since.tzinfo is None:
        raise ValueError(f"since={since.isoformat()}: give the time zone (e.g. {since.isoformat()}+00:00)")
    rows = count_rows(settings, since)
    out = home().reports / "monitor" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    if rows < cfg.min_rows:
        verdict = monitoring.no_verdict(rows, cfg)
        lake.write_json(verdict.as_dict(), out / "verdict.json")
        print(f"monitor: {rows} rows in the window since {since:%Y-%m-%d %H:%M}, fewer than {cfg.min_rows}: no verdict")
        return MonitorResult(champion, verdict, str(out), [])
    reference = reference_frame(settings, champion)
    window, damaged = read_window(settings, reference, since)
    for problem in damaged:
        print(f"monitor: skipped a damaged prediction-log file: {problem}")
    verdict = assess(settings, champion, reference, window, out)
    publish(settings, champion, verdict, damaged, out)
    events = emit_verdict_events(settings, champion, verdict, out)
    summary = "; ".join(verdict.drift + verdict.degraded + verdict.business) or "no drift, no degradation"
    print(f"monitor: {window.rows} rows vs {len(reference)} reference rows of v{champion}: {summary}")
    print(f"monitor: report {out / 'evidently.html'}")
    return MonitorResult(champion, verdict, str(out), events, damaged)
