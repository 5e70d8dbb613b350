"""The monitor's computation: a window of the prediction log against the training reference.

PSI per feature and on the scores runs on every row of the window; Evidently 0.7's
drift and data-summary presets run on a sample and write the HTML and JSON report.
The monitor flow only reads the inputs, calls :func:`assess` and publishes.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset, DataSummaryPreset

from features.gold import MISSING_CATEGORY
from models import drift
from models.comparison import psi
from slipway.settings import DataSettings, MonitorSettings

SCORE = "score"


def in_training_window(frame: pd.DataFrame, tags: dict[str, str], timestamp: str) -> pd.DataFrame:
    """The rows inside the version's recorded training window (all rows when it has none)."""
    if "training_window_start" not in tags or "training_window_end" not in tags:
        return frame
    times = pd.to_datetime(frame[timestamp], utc=True)
    start, end = pd.Timestamp(tags["training_window_start"]), pd.Timestamp(tags["training_window_end"])
    return frame[(times >= start) & (times <= end)]


def scored_reference(frame: pd.DataFrame, model_uri: str, data: DataSettings, rows: int) -> pd.DataFrame:
    """A sample of ``rows`` reference rows with the model's scores."""
    sample = frame.sample(min(len(frame), rows), random_state=0)
    model = mlflow.pyfunc.load_model(model_uri)
    return sample.assign(**{SCORE: np.asarray(model.predict(sample[data.features]), dtype=float)})


def decode(log: pd.DataFrame, data: DataSettings) -> pd.DataFrame:
    """Prediction-log rows as a frame of their features (decoded from JSON), entity and served score."""
    features = pd.DataFrame.from_records([json.loads(f) for f in log["features"]], index=log.index)
    return features.reindex(columns=data.features).assign(entity=log["entity"], **{SCORE: log["score"].astype(float)})


def run_evidently(reference: pd.DataFrame, current: pd.DataFrame, data: DataSettings, n: int, out: Path) -> float:
    """Evidently's drift and data-summary presets on samples of ``n`` rows; returns the share of drifted columns."""
    columns = [*data.features, SCORE]
    definition = DataDefinition(numerical_columns=[*data.numeric, SCORE], categorical_columns=list(data.categorical))

    def dataset(frame: pd.DataFrame) -> Dataset:
        sample = frame[columns].sample(min(len(frame), n), random_state=0)
        for column in data.categorical:
            sample[column] = sample[column].astype(object).where(sample[column].notna(), MISSING_CATEGORY).astype(str)
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


def no_verdict(rows: int, cfg: MonitorSettings) -> drift.DriftVerdict:
    """The verdict for a window too small to judge."""
    return drift.judge(rows, {}, 0.0, float("nan"), None, (np.array([]), np.array([])), cfg)


def assess(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    labels: pd.Series,
    reference_auc: float | None,
    data: DataSettings,
    cfg: MonitorSettings,
    out: Path,
) -> drift.DriftVerdict:
    """PSI on every row, Evidently on a sample (its report under ``out``), ROC-AUC on rows whose labels arrived."""
    psis = drift.feature_psi(reference, current, data)
    share = run_evidently(reference, current, data, cfg.sample_rows, out)
    known = current[current["entity"].astype(str).isin(labels.index)]
    return drift.judge(
        len(current),
        psis,
        share,
        psi(reference[SCORE].to_numpy(float), current[SCORE].to_numpy(float), drift.FEATURE_BINS),
        reference_auc,
        (labels.loc[known["entity"].astype(str)].to_numpy(int), known[SCORE].to_numpy(float)),
        cfg,
    )


def psi_table(verdict: drift.DriftVerdict, cfg: MonitorSettings, champion: str) -> list[dict[str, object]]:
    """One row per feature, most drifted first, then the scores: the monitor's table artifact."""
    rows: list[dict[str, object]] = [
        {"feature": c, "psi": round(v, 4), "drifted": v > cfg.max_feature_psi}
        for c, v in sorted(verdict.feature_psi.items(), key=lambda kv: -kv[1])
    ]
    rows.append(
        {"feature": f"(score, v{champion})", "psi": round(verdict.score_psi, 4), "drifted": verdict.score_psi > cfg.max_score_psi}
    )
    return rows


def verdict_metrics(verdict: drift.DriftVerdict) -> dict[str, float]:
    """The verdict's numbers as MLflow metric names and finite values."""
    metrics = {f"psi_{c}": v for c, v in verdict.feature_psi.items()}
    metrics.update({"score_psi": verdict.score_psi, "drifted_share": verdict.drifted_share, "rows": verdict.rows})
    if verdict.current_auc is not None:
        metrics["current_roc_auc"] = verdict.current_auc
    return {k.replace(" ", "_"): float(v) for k, v in metrics.items() if np.isfinite(v)}


def event_payload(verdict: drift.DriftVerdict, reasons: list[str], report: Path) -> dict[str, object]:
    """What a drift or degradation event carries: the reasons, the scores and the report's path."""
    return {
        "reasons": reasons,
        "feature_psi": verdict.feature_psi,
        "score_psi": verdict.score_psi,
        "drifted_share": verdict.drifted_share,
        "current_roc_auc": verdict.current_auc,
        "report": str(report),
    }
