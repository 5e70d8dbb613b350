"""The Prefect automations that close the loop: drift or decay events start the retrain deployment.

Created idempotently (by name) each time ``slipway up`` runs, so they show in the
Prefect UI next to the deployments they drive.
"""

from __future__ import annotations

from prefect.client.orchestration import SyncPrefectClient
from prefect.events.actions import RunDeployment
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

from slipway.catalog import MODEL_RESOURCE_PATTERN, RETRAIN_EVENTS, deployment_name

RETRAIN_DEPLOYMENT = deployment_name("retrain")


def definitions(retrain_id: object, params: str) -> list[AutomationCore]:
    out = []
    for event in RETRAIN_EVENTS:
        out.append(
            AutomationCore(
                name=f"slipway: retrain on {event}",
                description=f"Each {event} event from the monitor flow starts the retrain deployment "
                "(which does nothing within monitor.retrain_cooldown_seconds of the last retraining).",
                trigger=EventTrigger(
                    expect={event}, match={"prefect.resource.id": MODEL_RESOURCE_PATTERN}, posture=Posture.Reactive, threshold=1
                ),
                actions=[
                    RunDeployment(source="selected", deployment_id=retrain_id, parameters={"params": params, "reason": event})
                ],
            )
        )
    return out


def ensure_automations(api_url: str, params: str) -> list[str]:
    """Create or update the automations; returns their names."""
    with SyncPrefectClient(api_url) as client:
        retrain = client.read_deployment_by_name(RETRAIN_DEPLOYMENT)
        names = []
        for automation in definitions(retrain.id, params):
            existing = client.read_automations_by_name(automation.name)
            if existing:
                client.update_automation(existing[0].id, automation)
                for extra in existing[1:]:
                    client.delete_automation(extra.id)
            else:
                client.create_automation(automation)
            names.append(automation.name)
    return names
