"""Retrain flow: fresh features, a new challenger, then a promotion that waits for an approver.

Started by the drift and degradation automations and by the weekly schedule. A
retraining that began less than ``monitor.retrain_cooldown_seconds`` ago makes
this run a no-op, so a burst of events retrains once; a retraining whose
materialize or train step fails gives the cooldown back.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from flows.common import home, load_params
from flows.materialize import materialize
from flows.train import train
from models import decision
from models.policy import Request
from models.registry import audit_log
from slipway.catalog import deployment_name
from slipway.cooldown import claim, release

PROMOTE_DEPLOYMENT = deployment_name("promote")
RETRAIN_REQUESTER = "slipway-retrain"


@flow(name="retrain", log_prints=True)
def retrain(params: str = "params.yaml", reason: str = "scheduled") -> str:
    """Materialize, train a challenger and request its promotion (unless within the cooldown)."""
    settings = load_params(params)
    name = settings.registry.model_name
    marker, started = home().reports / "last_retrain.json", datetime.now(UTC)
    blocking = claim(marker, settings.monitor.retrain_cooldown_seconds, reason, now=started)
    if blocking is not None:
        cooldown = settings.monitor.retrain_cooldown_seconds
        print(f"retrain skipped for {reason!r}: another started at {blocking}, within the cooldown ({cooldown:.0f}s)")
        return "skipped"
    audit_log(home().audit_log, name).append("retrain_started", "slipway", name, None, {"reason": reason})
    try:
        materialize(params=params)
        result = train(params=params)
    except BaseException:  # nothing was retrained: the next event may retrain at once (SIGKILL leaves the claim)
        release(marker, started.isoformat())
        raise
    request = {"params": params, "requested_by": RETRAIN_REQUESTER, "version": result.version}
    key = decision.env_signer()  # the platform's own request, signed with its promotion key where this worker holds it
    if key is not None and settings.promotion.decision_key:  # (else unsigned: two approvers decide)
        issued = datetime.now(UTC).isoformat()
        request["request_signature"] = Request(name, result.version, RETRAIN_REQUESTER, issued).signed(key)
    try:
        run = run_deployment(
            PROMOTE_DEPLOYMENT,
            parameters=request,
            timeout=0,  # the promotion waits for an approver in its own run
        )
        print(f"retrained {name} v{result.version} ({reason}); promotion requested as run {getattr(run, 'id', run)}")
    except ObjectNotFound:
        print(f"retrained: {name} v{result.version} is the challenger ({reason}); no {PROMOTE_DEPLOYMENT} deployment")
        print("  (start one with 'slipway up') or promote it by hand")
    return result.version
