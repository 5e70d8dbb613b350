"""The promotion policy: may this challenger replace the champion?

Pure: it compares scores on one evaluation window and returns a verdict with
every reason, so a refused challenger can be tagged with exactly why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models.metrics import roc_auc_or_none
from slipway.settings import PromotionSettings


@dataclass(frozen=True)
class PolicyVerdict:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        return "passed" if self.passed else "; ".join(self.reasons)


def evaluate(
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray | None,
    slices: pd.DataFrame,
    cfg: PromotionSettings,
) -> PolicyVerdict:
    """Gain over the champion overall, and no regression beyond the bound in any slice.

    With no champion yet, the challenger only has to be better than chance.
    """
    overall = roc_auc_or_none(y, challenger)
    if overall is None:
        return PolicyVerdict(False, ["the evaluation window has a single label class"])
    metrics = {"challenger_roc_auc": overall}
    if champion is None:
        passed = overall > 0.5
        return PolicyVerdict(passed, [] if passed else [f"ROC-AUC {overall:.4f} is no better than chance"], metrics)
    baseline = roc_auc_or_none(y, champion)
    assert baseline is not None
    metrics["champion_roc_auc"] = baseline
    metrics["roc_auc_gain"] = overall - baseline
    reasons = []
    if overall - baseline < cfg.min_auc_gain:
        reasons.append(f"ROC-AUC gain {overall - baseline:+.4f} is below the required {cfg.min_auc_gain:+.4f}")
    for column in cfg.slices:
        for group, index in slices.groupby(column, observed=True).indices.items():
            if len(index) < cfg.min_slice_rows:
                continue
            new, old = roc_auc_or_none(y[index], challenger[index]), roc_auc_or_none(y[index], champion[index])
            if new is None or old is None:
                continue
            metrics[f"slice_{column}={group}_roc_auc_change"] = new - old
            if old - new > cfg.max_slice_regression:
                reasons.append(f"slice {column}={group}: ROC-AUC falls {old - new:.4f} (bound {cfg.max_slice_regression})")
    return PolicyVerdict(not reasons, reasons, metrics)


def approval_problem(approver: str, requested_by: str, approvers: list[str]) -> str | None:
    """Why an approval cannot be accepted, or None when it can (four-eyes: never one's own request)."""
    who = approver.strip()
    if not who:
        return "the approval names no approver"
    if who not in approvers:
        return f"{who!r} is not in promotion.approvers ({', '.join(approvers) or 'empty'})"
    if who == requested_by.strip():
        return f"{who!r} requested this promotion and cannot approve it too"
    return None
