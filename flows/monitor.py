"""Monitor flow: a window of the prediction log against the champion's training reference.

Evidently 0.7 writes the HTML and JSON report (its statistical tests run on a
sample); PSI per feature and on the scores is computed on the whole window.
Crossing a threshold emits ``slipway.drift.detected`` or
``slipway.performance.degraded``; a Prefect automation turns those into a
retraining run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset, DataSummaryPreset
from mlflow import MlflowClient
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from flows.common import home, latest_labels, load_params
from models import drift, registry
from models.comparison import psi
from slipway import lake
from slipway.prediction_log import read_prediction_log
from slipway.settings import DataSettings, Settings
from slipway.tracking import use_experiment

DRIFT_EVENT = "slipway.drift.detected"
DEGRADED_EVENT = "slipway.performance.degraded"
SCORE = "score"


@dataclass(frozen=True)
class MonitorResult:
    champion: str
    verdict: drift.DriftVerdict
    report_dir: str
    events: list[str]


@task(cache_policy=NO_CACHE)
def reference_frame(settings: Settings, champion: str) -> pd.DataFrame:
    """Gold rows of the champion's training window (all of gold when it has none), with labels and its scores."""
    data = settings.data
    gold = home().gold
    frame = pd.read_parquet(gold / "features.parquet").merge(
        pd.read_parquet(gold / "labels.parquet"), on=[data.entity, data.timestamp]
    )
    tags = MlflowClient().get_model_version(settings.registry.model_name, champion).tags
    if "training_window_start" in tags and "training_window_end" in tags:
        times = pd.to_datetime(frame[data.timestamp], utc=True)
        start, end = pd.Timestamp(tags["training_window_start"]), pd.Timestamp(tags["training_window_end"])
        frame = frame[(times >= start) & (times <= end)]
    frame = frame.sample(min(len(frame), settings.monitor.sample_rows), random_state=0)
    model = mlflow.pyfunc.load_model(f"models:/{settings.registry.model_name}/{champion}")
    return frame.assign(**{SCORE: np.asarray(model.predict(frame[data.features]), dtype=float)})


def decode(log: pd.DataFrame, data: DataSettings) -> pd.DataFrame:
    """Prediction-log rows as a frame of their features (decoded from JSON), entity and served score."""
    features = pd.DataFrame.from_records([json.loads(f) for f in log["features"]], index=log.index)
    return features.reindex(columns=data.features).assign(entity=log["entity"], **{SCORE: log["score"].astype(float)})


@task(cache_policy=NO_CACHE)
def current_frame(settings: Settings, since: datetime) -> pd.DataFrame:
    """Logged predictions since ``since``."""
    return decode(read_prediction_log(home().predictions, since), settings.data)


@task(cache_policy=NO_CACHE)
def evidently_report(reference: pd.DataFrame, current: pd.DataFrame, settings: Settings, out: Path) -> float:
    return run_evidently(reference, current, settings.data, settings.monitor.sample_rows, out)


def run_evidently(reference: pd.DataFrame, current: pd.DataFrame, data: DataSettings, n: int, out: Path) -> float:
    """Evidently's drift and data-summary presets on samples of ``n`` rows; returns the share of drifted columns."""
    columns = [*data.features, SCORE]
    definition = DataDefinition(numerical_columns=[*data.numeric, SCORE], categorical_columns=list(data.categorical))

    def dataset(frame: pd.DataFrame) -> Dataset:
        sample = frame[columns].sample(min(len(frame), n), random_state=0)
        for column in data.categorical:
            sample[column] = sample[column].astype(object).where(sample[column].notna(), "(missing)").astype(str)
        return Dataset.from_pandas(sample, data_definition=definition)

    snapshot = Report([DataDriftPreset(), DataSummaryPreset()]).run(
        current_data=dataset(current), reference_data=dataset(reference)
    )
    out.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(out / "evidently.html"))
    snapshot.save_json(str(out / "evidently.json"))
    for metric in snapshot.dict()["metrics"]:
        if metric["metric_name"].startswith("DriftedColumnsCount"):
            return float(metric["value"]["share"])
    raise RuntimeError("Evidently's report has no DriftedColumnsCount metric")


def _publish(settings: Settings, champion: str, verdict: drift.DriftVerdict, out: Path) -> None:
    lake.write_json(verdict.as_dict(), out / "verdict.json")
    rows = [
        {"feature": c, "psi": round(v, 4), "drifted": v > settings.monitor.max_feature_psi}
        for c, v in sorted(verdict.feature_psi.items(), key=lambda kv: -kv[1])
    ]
    rows.append(
        {
            "feature": f"(score, v{champion})",
            "psi": round(verdict.score_psi, 4),
            "drifted": verdict.score_psi > settings.monitor.max_score_psi,
        }
    )
    create_table_artifact(
        key="drift", table=rows, description=f"monitor: {verdict.rows} logged rows vs the training reference of v{champion}"
    )
    use_experiment(f"{settings.registry.model_name}-monitoring", home())
    with mlflow.start_run(run_name=f"monitor-{out.name}"):
        mlflow.set_tags({"model_version": champion, "drift": bool(verdict.drift), "degraded": bool(verdict.degraded)})
        metrics = {f"psi_{c}": v for c, v in verdict.feature_psi.items()}
        metrics.update({"score_psi": verdict.score_psi, "drifted_share": verdict.drifted_share, "rows": verdict.rows})
        if verdict.current_auc is not None:
            metrics["current_roc_auc"] = verdict.current_auc
        mlflow.log_metrics({k.replace(" ", "_"): float(v) for k, v in metrics.items() if np.isfinite(v)})
        mlflow.log_artifacts(str(out), "monitor")


@flow(name="monitor")
def monitor(params: str = "params.yaml", window_hours: float | None = None) -> MonitorResult:
    """Compare the recent prediction log with the champion's training data; emit events on drift or decay."""
    settings = load_params(params)
    cfg, name, logger = settings.monitor, settings.registry.model_name, get_run_logger()
    champion = registry.alias_version(name, registry.CHAMPION)
    if champion is None:
        raise RuntimeError(f"{name!r} has no champion to monitor yet: promote one first")
    since = datetime.now(UTC) - timedelta(hours=window_hours or cfg.window_hours)
    current = current_frame(settings, since)
    out = home().reports / "monitor" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    if len(current) < cfg.min_rows:
        verdict = drift.judge(len(current), {}, 0.0, float("nan"), None, (np.array([]), np.array([])), cfg)
        lake.write_json(verdict.as_dict(), out / "verdict.json")
        logger.warning("only %d logged predictions since %s (monitor.min_rows=%d): no verdict", len(current), since, cfg.min_rows)
        print(f"monitor: {len(current)} rows in the window, fewer than {cfg.min_rows}: no verdict")
        return MonitorResult(champion, verdict, str(out), [])
    reference = reference_frame(settings, champion)
    logger.info("monitor: %d logged rows vs %d reference rows of v%s", len(current), len(reference), champion)
    psis = drift.feature_psi(reference, current, settings.data)
    share = evidently_report(reference, current, settings, out)
    labels = latest_labels(settings)
    known = current[current["entity"].astype(str).isin(labels.index)]
    verdict = drift.judge(
        len(current),
        psis,
        share,
        psi(reference[SCORE].to_numpy(float), current[SCORE].to_numpy(float), drift.FEATURE_BINS),
        registry.holdout_auc(name, champion),
        (labels.loc[known["entity"].astype(str)].to_numpy(int), known[SCORE].to_numpy(float)),
        cfg,
    )
    _publish(settings, champion, verdict, out)
    events = []
    for event, reasons in ((DRIFT_EVENT, verdict.drift), (DEGRADED_EVENT, verdict.degraded)):
        if reasons:
            emit_event(
                event=event,
                resource={"prefect.resource.id": f"slipway.model.{name}", "slipway.model_version": champion},
                payload={
                    "reasons": reasons,
                    "feature_psi": verdict.feature_psi,
                    "score_psi": verdict.score_psi,
                    "drifted_share": verdict.drifted_share,
                    "current_roc_auc": verdict.current_auc,
                    "report": str(out / "evidently.html"),
                },
            )
            events.append(event)
            logger.warning("%s: %s", event, "; ".join(reasons))
    summary = "; ".join(verdict.drift + verdict.degraded) or "no drift, no degradation"
    print(f"monitor: {len(current)} rows vs v{champion}'s training data: {summary}; report {out / 'evidently.html'}")
    return MonitorResult(champion, verdict, str(out), events)
