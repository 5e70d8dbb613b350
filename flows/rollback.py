"""Rollback flow: restore the previous champion in one step, with an audit entry."""

from __future__ import annotations

from prefect import flow

from flows.common import home, load_params
from flows.events import announce
from models.registry import CHAMPION, alias_version, audit_log, rollback_champion
from models.watch import close_watch, read_watch
from slipway.catalog import CHAMPION_EVENT, ROLLED_BACK_EVENT


@flow(name="rollback", log_prints=True)
def rollback(params: str = "params.yaml", requested_by: str = "unknown", reason: str = "manual rollback") -> str:
    """Point ``champion`` back at the version it replaced and stop any canary or shadow."""
    settings = load_params(params)
    name = settings.registry.model_name
    replaced = alias_version(name, CHAMPION)
    audit = audit_log(home().audit_log, name)
    restored = rollback_champion(name, requested_by, audit, reason)
    if (open_watch := read_watch(name)) is not None:
        close_watch(name, open_watch, audit, "watch_ended", {"reason": f"rolled back by {requested_by}: {reason}"})
    summary = f"{name} rolled back from v{replaced} to v{restored} by {requested_by}: {reason}"
    announce(ROLLED_BACK_EVENT, settings, replaced, summary, restored=restored, actor=requested_by, reason=reason)
    summary = f"Champion of {name} is now v{restored} (was v{replaced}): rollback by {requested_by}: {reason}"
    announce(CHAMPION_EVENT, settings, restored, summary, previous=replaced, actor=requested_by)
    print(f"champion={restored}: {name} restored by {requested_by}")
    return restored
