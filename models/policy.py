"""The promotion policy: may this challenger replace the champion?

Pure: it compares scores on one evaluation window and returns a verdict with
every reason, so a refused challenger can be tagged with exactly why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

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


def approval_problem(
    answer: Answer, run_id: str, requested_by: str, cfg: PromotionSettings, already: Sequence[str] = ()
) -> str | None:
    """Why an answer cannot be accepted, or None when it can.

    Four eyes (never one's own request, never the same approver twice), and a typed name is
    never enough: the answer must be signed, for this run, with the approver's key in
    ``promotion.approver_keys``.
    """
    who = answer.approver.strip()
    if not who:
        return "the approval names no approver"
    if who not in cfg.approvers:
        return f"{who!r} is not in promotion.approvers ({', '.join(cfg.approvers) or 'empty'})"
    if who == requested_by.strip():
        return f"{who!r} requested this promotion and cannot approve it too"
    if who in already:
        return f"{who!r} has approved this promotion already: another approver must answer"
    key = cfg.approver_keys.get(who)
    if key is None:
        return f"no public key for {who!r} in promotion.approver_keys: a name alone is not an approval"
    if not answer.signature.strip():
        return f"the answer is not signed: sign it with `slipway approve {run_id} --approver {who} --comment TEXT --sign-only`"
    if not signing.verify(signing.public_key(key, f"promotion.approver_keys.{who}"), answer.message(run_id), answer.signature):
        return f"the signature is not {who}'s for this run, decision and comment"
    return None


REQUEST_FORMAT = "slipway-request/1"
REQUEST_MAX_AGE = timedelta(hours=1)  # a signed request is used within the hour, and once
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Request:
    """A promotion request as its requester signs it: which model and version, by whom, when."""

    model: str
    version: str  # the version number asked for, or "challenger": whichever version holds the alias at start
    requested_by: str
    issued_at: str  # ISO 8601 time of signing, with its offset

    def message(self) -> bytes:
        return "\n".join([REQUEST_FORMAT, self.model, self.version, self.requested_by.strip(), self.issued_at]).encode()

    def signed(self, key: Ed25519PrivateKey) -> str:
        """The ``request_signature`` parameter: the signing time and the signature, space-separated."""
        return f"{self.issued_at} {signing.sign(key, self.message())}"


@dataclass(frozen=True)
class RequestCheck:
    """Whether a promotion's requester is who the request names (``verified``), or why it is refused."""

    verified: bool
    by: str  # whose key signed it, or why it is unverified
    problem: str | None = None

    @property
    def approvals_needed(self) -> int:
        """Four eyes either way: an approver other than a verified requester, or two approvers."""
        return 1 if self.verified else 2


UNSIGNED = RequestCheck(False, "unsigned: two approvers are needed")


def check_request(
    model: str, version: str | None, requested_by: str, signature: str, cfg: PromotionSettings, now: datetime
) -> RequestCheck:
    """Verify a request's ``request_signature`` (empty: an unverified request, which needs two approvers).

    The requester signs with their key in ``promotion.approver_keys`` or ``promotion.requester_keys``;
    the platform's own requests (retraining) are signed with the promotion key (``decision_key``).
    A signature that does not verify, is older than an hour or names a time to come is refused;
    that it is used only once is the flow's check, against the audit log.
    """
    name = requested_by.strip()
    if not signature.strip():
        return UNSIGNED
    issued, _, text = signature.strip().partition(" ")
    try:
        when = datetime.fromisoformat(issued)
    except ValueError:
        return RequestCheck(
            False, "", f"request_signature must be 'ISO_TIME SIGNATURE' (as slipway run promote signs it), not {issued[:40]!r}"
        )
    if when.tzinfo is None:
        return RequestCheck(False, "", f"the request's time {issued!r} has no UTC offset")
    if when > now + CLOCK_SKEW or now - when > REQUEST_MAX_AGE:
        return RequestCheck(False, "", f"the request was signed at {issued}: a signed request is valid for an hour after signing")
    request = Request(model, version or "challenger", name, issued)
    keys = {**cfg.requester_keys, **cfg.approver_keys}
    candidates = [(f"{name}'s key", keys[name])] if name in keys else []
    if cfg.decision_key:
        candidates.append(("the promotion key", cfg.decision_key))
    for whose, key in candidates:
        if signing.verify(signing.public_key(key, whose), request.message(), text):
            return RequestCheck(True, whose)
    known = "" if name in keys else f" ({name!r} has no key in promotion.requester_keys or approver_keys)"
    return RequestCheck(False, "", f"the request signature is not {name}'s for {model} {request.version}{known}")
