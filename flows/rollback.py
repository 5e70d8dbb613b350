"""Rollback flow: restore the previous champion in one step, with an audit entry."""

from __future__ import annotations

from prefect import flow

from flows.common import home, load_params
from models.registry import rollback_champion
from slipway.audit import AuditLog


@flow(name="rollback", log_prints=True)
def rollback(params: str = "params.yaml", requested_by: str = "unknown", reason: str = "manual rollback") -> str:
    """Point ``champion`` back at the version it replaced and stop any canary or shadow."""
    settings = load_params(params)
    restored = rollback_champion(settings.registry.model_name, requested_by, AuditLog(home().audit_log), reason)
    print(f"champion={restored}: {settings.registry.model_name} restored by {requested_by}")
    return restored
