"""Retrain flow: fresh features, a new challenger, then a promotion that waits for an approver.

Started by the drift and degradation automations and by the weekly schedule. A
retraining that began less than ``monitor.retrain_cooldown_seconds`` ago makes
this run a no-op, so a burst of events retrains once.
"""

from __future__ import annotations

import fcntl
import json
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound

from flows.common import home, load_params
from flows.materialize import materialize
from flows.train import train
from slipway.audit import AuditLog

PROMOTE_DEPLOYMENT = "promote/promote"


def claim(marker: Path, cooldown: float, reason: str) -> str | None:
    """Record a retraining start unless one started within ``cooldown``; returns the blocking start time."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    with open(marker, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # two runs at once: one claims, the other sees the claim
        handle.seek(0)
        text = handle.read().strip()
        last = datetime.fromisoformat(json.loads(text)["started"]) if text else None
        now = datetime.now(UTC)
        if last is not None and (now - last).total_seconds() < cooldown:
            return last.isoformat()
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"started": now.isoformat(), "reason": reason}))
    return None


@flow(name="retrain")
def retrain(params: str = "params.yaml", reason: str = "scheduled") -> str:
    """Materialize, train a challenger and request its promotion (unless within the cooldown)."""
    settings = load_params(params)
    logger = get_run_logger()
    name = settings.registry.model_name
    blocking = claim(home().reports / "last_retrain.json", settings.monitor.retrain_cooldown_seconds, reason)
    if blocking is not None:
        logger.info("a retraining started at %s, within the cooldown: nothing to do for %r", blocking, reason)
        print(f"retrain skipped: another started at {blocking} (cooldown {settings.monitor.retrain_cooldown_seconds:.0f}s)")
        return "skipped"
    AuditLog(home().audit_log).append("retrain_started", "slipway", name, None, {"reason": reason})
    materialize(params=params)
    result = train(params=params)
    try:
        run = run_deployment(
            PROMOTE_DEPLOYMENT,
            parameters={"params": params, "requested_by": "slipway-retrain", "version": result.version},
            timeout=0,  # the promotion waits for an approver in its own run
        )
        logger.info("v%s trained; promotion requested as flow run %s", result.version, getattr(run, "id", run))
    except ObjectNotFound:
        logger.warning("no %s deployment (start one with 'slipway up'); promote v%s by hand", PROMOTE_DEPLOYMENT, result.version)
    print(f"retrained: {name} v{result.version} is the challenger ({reason})")
    return result.version
