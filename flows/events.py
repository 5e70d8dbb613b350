"""The model events the flows emit for automations and alerts."""

from __future__ import annotations

from prefect import runtime
from prefect.events import emit_event
from prefect.utilities.urls import url_for

from slipway.audit import AuditLog
from slipway.catalog import CHAMPION_EVENT, ROLLED_BACK_EVENT, TAMPERED_EVENT, model_resource
from slipway.settings import Settings


def announce_rollback(settings: Settings, replaced: str | None, restored: str, actor: str, reason: str) -> None:
    """A rollback and the champion change it made, each as its own event (each alerts)."""
    name = settings.registry.model_name
    summary = f"{name} rolled back from v{replaced} to v{restored} by {actor}: {reason}"
    announce(ROLLED_BACK_EVENT, settings, replaced, summary, restored=restored, actor=actor, reason=reason)
    summary = f"Champion of {name} is now v{restored} (was v{replaced}): rollback by {actor}: {reason}"
    announce(CHAMPION_EVENT, settings, restored, summary, previous=replaced, actor=actor)


def announce(event: str, settings: Settings, version: str | None, summary: str, **payload: object) -> None:
    """Emit a model event: a one-line summary for people, a link to this run's page, the details."""
    run = runtime.flow_run.id
    url = url_for("flow-run", obj_id=run) if run else None
    resource = model_resource(settings.registry.model_name, version)
    emit_event(event=event, resource=resource, payload={"summary": summary, "url": url, **payload})


def report_unverified(settings: Settings, audit: AuditLog, problems: list[str], seen_by: str) -> None:
    """Champion or routing in the registry that was not signed: audited (once per distinct finding) and alerted."""
    name = settings.registry.model_name
    last = [e for e in audit.entries() if e["event"] == "registry_unverified"]
    if not last or last[-1]["details"].get("problems") != problems:
        audit.append("registry_unverified", seen_by, name, None, {"problems": problems})
    summary = f"{name}: the registry holds what was not signed by the promotion key, and it is not served: " + "; ".join(problems)
    print(summary)
    announce(TAMPERED_EVENT, settings, None, summary, problems=problems, seen_by=seen_by)
