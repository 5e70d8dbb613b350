"""Drift and performance verdicts for the monitor flow.

Pure and vectorised: PSI per feature and on the scores is counted on every row of
the window, table by table (:class:`PsiCounter`, so a window of any size fits in
memory); Evidently's statistical tests run on a sample in the flow and arrive here
as the share of drifted columns.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from features.gold import category_text
from models.comparison import bin_counts, psi_of, quantile_edges
from models.metrics import roc_auc_or_none
from slipway.settings import DataSettings, MonitorSettings

FEATURE_BINS = 10
_EPS = 1e-4


def _numbers(values: pd.Series) -> np.ndarray:
    return np.asarray(pd.to_numeric(values, errors="coerce").dropna(), dtype=float)


def _column_numbers(column: pa.ChunkedArray) -> np.ndarray:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return _numbers(column.to_pandas())
    values: np.ndarray = np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=float)
    return np.asarray(values[~np.isnan(values)], dtype=float)


def _category_counts(column: pa.ChunkedArray) -> pd.Series:
    """Counts per category as the model reads it (trimmed text, missing as its own category)."""
    counted = pc.value_counts(column).flatten()
    keys = category_text(pd.Series(counted[0].to_pylist(), dtype=object))
    return pd.Series(counted[1].to_numpy(), index=keys.to_numpy()).groupby(level=0).sum()


class PsiCounter:
    """PSI of a window against a reference, counted table by table: memory stays bounded at any window size.

    Numeric columns use ``FEATURE_BINS`` quantile bins of the reference (missing values
    left out); categorical ones the union of categories (missing is a category).
    """

    def __init__(self, reference: pd.DataFrame, numeric: list[str], categorical: list[str]) -> None:
        self.numeric, self.categorical = numeric, categorical
        expected = {c: _numbers(reference[c]) for c in numeric}
        self.edges = {c: quantile_edges(v, FEATURE_BINS) if len(v) else np.array([]) for c, v in expected.items()}
        self.expected = {c: bin_counts(v, self.edges[c]) for c, v in expected.items()}
        self.expected_categories = {c: category_text(reference[c]).value_counts() for c in categorical}
        self.counts = {c: np.zeros(len(self.edges[c]) + 1, dtype=np.int64) for c in numeric}
        self.categories = {c: pd.Series(dtype=np.int64) for c in categorical}

    def add(self, table: pa.Table) -> None:
        """Count one table's rows (columns by name; a column it lacks counts as missing)."""
        for c in self.numeric:
            if c in table.column_names:
                self.counts[c] += bin_counts(_column_numbers(table.column(c)), self.edges[c])
        for c in self.categorical:
            column = table.column(c) if c in table.column_names else pa.chunked_array([pa.nulls(table.num_rows)])
            self.categories[c] = self.categories[c].add(_category_counts(column), fill_value=0)

    def psi(self) -> dict[str, float]:
        out = {}
        for c in self.numeric:
            e, a = self.expected[c], self.counts[c]
            out[c] = psi_of(e / e.sum(), a / a.sum()) if e.sum() and a.sum() else float("nan")
        for c in self.categorical:
            ref, cur = self.expected_categories[c], self.categories[c]
            index = ref.index.union(cur.index)
            e, a = ref.reindex(index, fill_value=0).to_numpy(float), cur.reindex(index, fill_value=0).to_numpy(float)
            out[c] = psi_of(e / e.sum(), a / a.sum()) if e.sum() and a.sum() else float("nan")
        return out


def categorical_psi(reference: pd.Series, current: pd.Series) -> float:
    """PSI over the union of categories (missing values are a category of their own)."""
    counter = PsiCounter(pd.DataFrame({"c": reference}), [], ["c"])
    counter.add(pa.table({"c": pa.array(current.astype(object).where(current.notna(), None).map(_text))}))
    return counter.psi()["c"]


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def feature_psi(reference: pd.DataFrame, current: pd.DataFrame, data: DataSettings) -> dict[str, float]:
    """PSI of every declared feature of ``current`` (one frame) against ``reference``."""
    counter = PsiCounter(reference, list(data.numeric), list(data.categorical))
    counter.add(frame_table(current, data))
    return counter.psi()


def frame_table(frame: pd.DataFrame, data: DataSettings) -> pa.Table:
    """A frame's declared features as an Arrow table: numbers as float64, categories as text."""
    columns = {c: pa.array(pd.to_numeric(frame[c], errors="coerce").to_numpy(float)) for c in data.numeric if c in frame}
    for c in data.categorical:
        if c in frame:
            columns[c] = pa.array(frame[c].astype(object).where(frame[c].notna(), None).map(_text), type=pa.string())
    return pa.table(columns)


@dataclass(frozen=True)
class DriftVerdict:
    rows: int
    feature_psi: dict[str, float]
    drifted_share: float  # Evidently: share of columns whose test says drift
    score_psi: float
    reference_auc: float | None = None
    current_auc: float | None = None
    labelled: int = 0
    drift: list[str] = field(default_factory=list)  # why drift was declared
    degraded: list[str] = field(default_factory=list)  # why performance was declared degraded
    enough_rows: bool = True
    reference_conversion: float | None = None  # positive-label rate of the training reference
    current_conversion: float | None = None  # among the window's scored entities whose labels have arrived
    labelled_entities: int = 0
    business: list[str] = field(default_factory=list)  # why the business metric was declared degraded

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def judge(
    rows: int,
    psis: dict[str, float],
    drifted_share: float,
    score_psi: float,
    reference_auc: float | None,
    current_performance: tuple[np.ndarray, np.ndarray],
    cfg: MonitorSettings,
    conversion: Conversion | None = None,
) -> DriftVerdict:
    """Apply the thresholds.

    ``reference_auc`` is the model's holdout ROC-AUC at training (None: unknown);
    ``current_performance`` is (labels, scores) of the logged rows whose labels have arrived;
    ``conversion`` the positive-label rates behind the business trigger.
    """
    if rows < cfg.min_rows:
        return DriftVerdict(rows, psis, drifted_share, score_psi, enough_rows=False)
    drift = [
        f"{c}: PSI {v:.3f} > {cfg.max_feature_psi}"
        for c, v in sorted(psis.items(), key=lambda kv: -kv[1])
        if v > cfg.max_feature_psi
    ]
    if drifted_share > cfg.max_drifted_share:
        drift.append(f"Evidently flags {drifted_share:.0%} of features (bound {cfg.max_drifted_share:.0%})")
    if score_psi > cfg.max_score_psi:
        drift.append(f"prediction drift: score PSI {score_psi:.3f} > {cfg.max_score_psi}")
    current_auc = roc_auc_or_none(*current_performance)
    labelled = len(current_performance[0])
    degraded = []
    if (
        reference_auc is not None
        and current_auc is not None
        and labelled >= cfg.min_rows
        and reference_auc - current_auc > cfg.max_auc_drop
    ):
        degraded.append(f"ROC-AUC {current_auc:.3f} on {labelled} labelled rows vs {reference_auc:.3f} at training")
    conversion = conversion or Conversion(None, None, 0)
    return DriftVerdict(
        rows,
        psis,
        drifted_share,
        score_psi,
        reference_auc,
        current_auc,
        labelled,
        drift,
        degraded,
        reference_conversion=conversion.reference,
        current_conversion=conversion.current,
        labelled_entities=conversion.entities,
        business=conversion.problems(cfg),
    )


@dataclass(frozen=True)
class Conversion:
    """The business metric: the positive-label rate of scored entities against the training reference's."""

    reference: float | None
    current: float | None
    entities: int  # distinct scored entities whose labels have arrived

    def problems(self, cfg: MonitorSettings) -> list[str]:
        """A relative drop beyond ``monitor.max_conversion_drop`` on enough entities is a problem."""
        if self.reference is None or self.current is None or self.reference <= 0 or self.entities < cfg.min_labelled_rows:
            return []
        drop = 1 - self.current / self.reference
        if drop <= cfg.max_conversion_drop:
            return []
        return [
            f"conversion rate {self.current:.1%} on {self.entities} labelled entities vs {self.reference:.1%} at training "
            f"(a {drop:.0%} drop, bound {cfg.max_conversion_drop:.0%})"
        ]
