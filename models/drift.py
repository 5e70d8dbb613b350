"""Drift and performance verdicts for the monitor flow.

Pure and vectorised: PSI per feature and on the scores is computed directly on
the whole window (cheap at millions of rows); Evidently's statistical tests run
on a sample in the flow and arrive here as the share of drifted columns.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from features.gold import MISSING_CATEGORY
from models.comparison import psi
from models.metrics import roc_auc_or_none
from slipway.settings import DataSettings, MonitorSettings

FEATURE_BINS = 10
_EPS = 1e-4


def categorical_psi(reference: pd.Series, current: pd.Series) -> float:
    """PSI over the union of categories (missing values are a category of their own)."""
    ref = reference.astype(object).fillna(MISSING_CATEGORY).astype(str).value_counts(normalize=True)
    cur = current.astype(object).fillna(MISSING_CATEGORY).astype(str).value_counts(normalize=True)
    index = ref.index.union(cur.index)
    e = np.clip(ref.reindex(index, fill_value=0).to_numpy(), _EPS, None)
    a = np.clip(cur.reindex(index, fill_value=0).to_numpy(), _EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def numeric_psi(reference: pd.Series, current: pd.Series) -> float:
    ref = pd.to_numeric(reference, errors="coerce").dropna().to_numpy(float)
    cur = pd.to_numeric(current, errors="coerce").dropna().to_numpy(float)
    return psi(ref, cur, FEATURE_BINS)


def feature_psi(reference: pd.DataFrame, current: pd.DataFrame, data: DataSettings) -> dict[str, float]:
    out = {c: numeric_psi(reference[c], current[c]) for c in data.numeric}
    out.update({c: categorical_psi(reference[c], current[c]) for c in data.categorical})
    return out


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
) -> DriftVerdict:
    """Apply the thresholds.

    ``reference_auc`` is the model's holdout ROC-AUC at training (None: unknown);
    ``current_performance`` is (labels, scores) of the logged rows whose labels have arrived.
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
    return DriftVerdict(rows, psis, drifted_share, score_psi, reference_auc, current_auc, labelled, drift, degraded)
