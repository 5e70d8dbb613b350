"""Rollback flow: restore the previous champion in one step, with an audit entry."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.common import home, load_params
from models.registry import rollback_champion
from slipway.audit import AuditLog


@flow(name="rollback")
def rollback(params: str = "params.yaml", requested_by: str = "unknown", reason: str = "manual rollback") -> str:
    """Point ``champion`` back at the version it replaced and stop any canary or shadow."""
    settings = load_params(params)
    restored = rollback_champion(settings.registry.model_name, requested_by, AuditLog(home().audit_log), reason)
    get_run_logger().info("%s: champion restored to v%s by %s", settings.registry.model_name, restored, requested_by)
    print(f"champion={restored}")
    return restored
