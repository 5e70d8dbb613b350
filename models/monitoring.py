"""The monitor's computation: a window of the prediction log against the training reference.

PSI per feature and on the scores runs on every row of the window; Evidently 0.7's
drift and data-summary presets run on a sample and write the HTML and JSON report.
The window is taken in table by table (:class:`Window`), so its size is bounded by
disk, not memory. The monitor flow only reads the inputs, calls :func:`assess` and
publishes.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset, DataSummaryPreset

from features.gold import MISSING_CATEGORY
from models import dashboard, drift
from models.metrics import roc_auc_or_none
from slipway.prediction_log import conform
from slipway.settings import DataSettings, MonitorSettings

SCORE, LABEL = dashboard.SCORE, dashboard.LABEL
SNAPSHOT = "evidently-snapshot.json"  # the full snapshot, loadable by Evidently (evidently.json is its summary)


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


class Window:
    """A window of logged predictions, taken in table by table; memory stays bounded at any window size.

    It keeps what the verdict needs: PSI counts per feature and on the scores
    (every row), the labelled rows' (label, score) pairs, and a uniform sample of
    ``sample_rows`` rows (bottom-k of random keys) for Evidently's report.
    """

    def __init__(self, reference: pd.DataFrame, data: DataSettings, labels: pd.Series, sample_rows: int) -> None:
        # labels keyed by entity id as text, the way the prediction log keeps it
        self.data, self.labels, self.sample_rows = data, labels.set_axis(labels.index.astype(str)), sample_rows
        self.counter = drift.PsiCounter(reference, [*data.numeric, SCORE], list(data.categorical))
        self.rows = 0
        self._label_ids = pa.array(self.labels.index, pa.string())
        self._label_values = self.labels.to_numpy(int)
        self._seen = np.zeros(len(labels), dtype=bool)  # which labelled entities were scored in the window
        self._y: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._schema = pa.schema(
            [
                *(pa.field(c, pa.float64()) for c in data.numeric),
                *(pa.field(c, pa.string()) for c in data.categorical),
                pa.field("entity", pa.string()),
                pa.field(SCORE, pa.float64()),
            ]
        )
        self._sample: pa.Table | None = None
        self._keys = np.array([])
        self._rng = np.random.default_rng(0)

    def add(self, table: pa.Table) -> None:
        """Take in logged rows: the declared features under their own names, ``entity`` and ``score``."""
        if table.num_rows == 0:
            return
        table = conform(table, self._schema)
        self.rows += table.num_rows
        self.counter.add(table)
        positions = pc.index_in(table.column("entity"), value_set=self._label_ids)
        known = pc.is_valid(positions)
        if pc.any(known).as_py():
            at = positions.filter(known).to_numpy()
            self._seen[at] = True
            self._y.append(self._label_values[at])
            self._scores.append(table.column(SCORE).filter(known).to_numpy())
        keys = self._rng.random(table.num_rows)
        sample = table if self._sample is None else pa.concat_tables([self._sample, table])
        keys = np.concatenate([self._keys, keys])
        if len(keys) > self.sample_rows:
            keep = np.sort(np.argpartition(keys, self.sample_rows)[: self.sample_rows])
            sample, keys = sample.take(pa.array(keep)), keys[keep]
        self._sample, self._keys = sample, keys

    def add_frame(self, frame: pd.DataFrame) -> None:
        """Take in a pandas frame of features, ``entity`` and ``score`` (tests, small windows)."""
        table = drift.frame_table(frame, self.data).append_column(SCORE, pa.array(frame[SCORE].to_numpy(float)))
        if "entity" in frame:  # without it, add() reads every entity as unknown
            table = table.append_column("entity", pa.array(frame["entity"].astype(object).where(frame["entity"].notna(), None)))
        self.add(table)

    def sample(self) -> pd.DataFrame:
        """The uniform sample, with ``label`` where the entity's label has arrived."""
        frame: pd.DataFrame = (self._sample or self._schema.empty_table()).to_pandas()
        return frame.assign(**{LABEL: frame["entity"].map(self.labels).astype(float)})

    def conversion(self, reference_rate: float | None) -> drift.Conversion:
        """The positive-label rate of the distinct scored entities whose labels have arrived."""
        seen = int(self._seen.sum())
        current = float(self._label_values[self._seen].mean()) if seen else None
        return drift.Conversion(reference_rate, current, seen)

    def labelled(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._y:
            return np.array([], dtype=int), np.array([])
        return np.concatenate(self._y), np.concatenate(self._scores)


def run_evidently(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    data: DataSettings,
    n: int,
    out: Path,
    roc_auc: tuple[float | None, float | None] = (None, None),
) -> float:
    """Evidently's drift and data-summary presets on samples of ``n`` rows; returns the share of drifted columns.

    Writes the HTML and JSON reports and the snapshot (``SNAPSHOT``) that the monitoring
    dashboard adds to the model's Evidently project. Rows whose labels have arrived
    carry them in ``label``; the dashboard plots their mean (the conversion rate).
    ``roc_auc`` is (training holdout, window) ROC-AUC as the monitor computed it on every
    labelled row (Evidently's own needs a label on every row); once the window has one,
    it rides along as the constant column ``roc_auc`` so the dashboard plots it over time.
    """
    columns = [*data.features, SCORE]
    labelled = data.label in reference and LABEL in current and bool(current[LABEL].notna().any())
    with_auc = roc_auc[1] is not None
    extra = [*([LABEL] if labelled else []), *([dashboard.ROC_AUC] if with_auc else [])]
    numeric = [*data.numeric, SCORE, *extra]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=list(data.categorical))

    def dataset(frame: pd.DataFrame, auc: float | None) -> Dataset:
        frame = frame.assign(**{dashboard.ROC_AUC: np.nan if auc is None else auc}) if with_auc else frame
        sample = frame[[*columns, *extra]].sample(min(len(frame), n), random_state=0)
        for column in data.categorical:
            sample[column] = sample[column].astype(object).where(sample[column].notna(), MISSING_CATEGORY).astype(str)
        return Dataset.from_pandas(sample, data_definition=definition)

    metrics = [
        DataDriftPreset(columns=columns),
        DataSummaryPreset(columns=columns),
        *dashboard.extra_metrics(data, labelled, with_auc),
    ]
    reference = reference.rename(columns={data.label: LABEL}) if labelled else reference
    snapshot = Report(metrics).run(current_data=dataset(current, roc_auc[1]), reference_data=dataset(reference, roc_auc[0]))
    out.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(out / "evidently.html"))
    snapshot.save_json(str(out / "evidently.json"))
    (out / SNAPSHOT).write_text(snapshot.dumps())
    for metric in snapshot.dict()["metrics"]:
        if metric["metric_name"].startswith("DriftedColumnsCount"):
            return float(metric["value"]["share"])
    raise RuntimeError("Evidently's report has no DriftedColumnsCount metric")


def no_verdict(rows: int, cfg: MonitorSettings) -> drift.DriftVerdict:
    """The verdict for a window too small to judge."""
    return drift.judge(rows, {}, 0.0, float("nan"), None, (np.array([]), np.array([])), cfg)


def assess(
    reference: pd.DataFrame, window: Window, reference_auc: float | None, data: DataSettings, cfg: MonitorSettings, out: Path
) -> drift.DriftVerdict:
    """PSI on every row of the window, Evidently on its sample (report under ``out``), ROC-AUC on labelled rows."""
    psis = window.counter.psi()
    score_psi = psis.pop(SCORE)
    auc = (reference_auc, roc_auc_or_none(*window.labelled()))
    share = run_evidently(reference, window.sample(), data, cfg.sample_rows, out, auc)
    reference_rate = float(reference[data.label].mean()) if data.label in reference and len(reference) else None
    conversion = window.conversion(reference_rate)
    return drift.judge(window.rows, psis, share, score_psi, reference_auc, window.labelled(), cfg, conversion)


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
