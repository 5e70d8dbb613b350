"""Rollback flow: restore the previous champion in one step, with an audit entry."""

from __future__ import annotations

from prefect import flow

from flows.common import home, load_params
from flows.events import announce_rollback
from models import decision
from models.registry import CHAMPION, alias_version, audit_log, rollback_champion
from models.watch import close_watch, read_watch


@flow(name="rollback", log_prints=True)
def rollback(params: str = "params.yaml", requested_by: str = "unknown", reason: str = "manual rollback") -> str:
    """Point ``champion`` back at the version it replaced and stop any canary or shadow."""
    settings = load_params(params)
    decision.signer(settings.promotion.decision_key)  # the service follows only a signed rollback
    name = settings.registry.model_name
    replaced = alias_version(name, CHAMPION)
    audit = audit_log(home().audit_log, name)
    restored = rollback_champion(name, requested_by, audit, reason)
    if (open_watch := read_watch(name)) is not None:
        close_watch(name, open_watch, audit, "watch_ended", {"reason": f"rolled back by {requested_by}: {reason}"})
    announce_rollback(settings, replaced, restored, requested_by, reason)
    print(f"champion={restored}: {name} restored by {requested_by}")
    return restored
