"""The promotion policy: may this challenger replace the champion?

Pure: it compares scores on one evaluation window and returns a verdict with
every reason, so a refused challenger can be tagged with exactly why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from models.metrics import roc_auc_or_none
from slipway import signing
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


APPROVAL_FORMAT = "slipway-approval/1"


@dataclass(frozen=True)
class Answer:
    """An approver's answer to one paused promotion run, with their signature of it."""

    approver: str
    approved: bool
    comment: str
    signature: str

    def message(self, run_id: str) -> bytes:
        """What the approver signs: this run, this name, this decision and this comment, nothing else."""
        decision = "approve" if self.approved else "reject"
        return "\n".join([APPROVAL_FORMAT, run_id, self.approver.strip(), decision, self.comment]).encode()


def approval_problem(answer: Answer, run_id: str, requested_by: str, cfg: PromotionSettings) -> str | None:
    """Why an answer cannot be accepted, or None when it can.

    Four eyes (never one's own request), and a typed name is never enough: the answer
    must be signed, for this run, with the approver's key in ``promotion.approver_keys``.
    """
    who = answer.approver.strip()
    if not who:
        return "the approval names no approver"
    if who not in cfg.approvers:
        return f"{who!r} is not in promotion.approvers ({', '.join(cfg.approvers) or 'empty'})"
    if who == requested_by.strip():
        return f"{who!r} requested this promotion and cannot approve it too"
    key = cfg.approver_keys.get(who)
    if key is None:
        return f"no public key for {who!r} in promotion.approver_keys: a name alone is not an approval"
    if not answer.signature.strip():
        return f"the answer is not signed: sign it with `slipway approve {run_id} --approver {who} --comment TEXT --sign-only`"
    if not signing.verify(signing.public_key(key, f"promotion.approver_keys.{who}"), answer.message(run_id), answer.signature):
        return f"the signature is not {who}'s for this run, decision and comment"
    return None
