"""The model events the flows emit for automations and alerts."""

from __future__ import annotations

from prefect import runtime
from prefect.events import emit_event
from prefect.utilities.urls import url_for

from slipway.catalog import model_resource
from slipway.settings import Settings


def announce(event: str, settings: Settings, version: str | None, summary: str, **payload: object) -> None:
    """Emit a model event: a one-line summary for people, a link to this run's page, the details."""
    run = runtime.flow_run.id
    url = url_for("flow-run", obj_id=run) if run else None
    resource = model_resource(settings.registry.model_name, version)
    emit_event(event=event, resource=resource, payload={"summary": summary, "url": url, **payload})
