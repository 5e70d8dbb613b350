"""The Prefect automations that close the loop and tell people: retraining on drift, alerts on what matters.

Created idempotently (by name) each time ``slipway up`` runs, so they show in the
Prefect UI next to the deployments they drive. Alerts go through Prefect's own
notification actions to one notification block per configured channel (a
Slack-compatible webhook, a generic JSON webhook, SMTP mail); the blocks take
their URLs and passwords from environment variables at ``up`` time and keep them
as Prefect secrets, never in ``params.yaml``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from typing import cast
from uuid import UUID

from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import SyncPrefectClient
from prefect.events.actions import RunDeployment, SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.settings import PREFECT_API_URL, temporary_settings
from pydantic import SecretStr

from slipway.catalog import ALERTS, MODEL_RESOURCE_PATTERN, PROMOTED_EVENT, RETRAIN_EVENTS, deployment_name
from slipway.notify import SmtpEmail
from slipway.settings import AlertSettings, load_settings

RETRAIN_DEPLOYMENT = deployment_name("retrain")
GUARD_DEPLOYMENT = deployment_name("guard")
ALERT_PREFIX = "slipway: alert on "

# What a model event says: the flow that emitted it wrote a one-line summary and a link.
MODEL_BODY = (
    "{{ event.payload.summary or (event.event ~ ' on ' ~ event.resource.id) }}"
    "{% if event.payload.url %}\n{{ event.payload.url }}{% endif %}"
)
FLOW_RUN_BODY = (
    "Flow run {{ flow_run.name }} of flow {{ flow.name }}"
    "{% if deployment and deployment.name %} (deployment {{ deployment.name }}){% endif %}"
    " ended {{ flow_run.state.name }}: {{ flow_run.state.message }}\n{{ flow_run|ui_url }}"
)


def definitions(retrain_id: object, guard_id: object, params: str) -> list[AutomationCore]:
    """Retraining on each retrain event, and the post-deployment guard on each promotion."""
    out = [
        AutomationCore(
            name=f"slipway: guard on {PROMOTED_EVENT}",
            description="Each promotion starts the guard deployment, which watches the new champion beside the one "
            "it replaced for promotion.watch.seconds and rolls back at once on a failed check.",
            trigger=EventTrigger(
                expect={PROMOTED_EVENT},
                match={"prefect.resource.id": MODEL_RESOURCE_PATTERN},
                posture=Posture.Reactive,
                threshold=1,
            ),
            actions=[RunDeployment(source="selected", deployment_id=guard_id, parameters={"params": params})],
        )
    ]
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


def channel_blocks(cfg: AlertSettings, environ: Mapping[str, str]) -> dict[str, NotificationBlock]:
    """One notification block per channel whose secret is set (mail: whenever ``alerts.email`` is)."""
    blocks: dict[str, NotificationBlock] = {}
    if url := environ.get(cfg.slack_webhook_env):
        blocks["slipway-slack"] = CustomWebhookNotificationBlock(
            name="slipway-slack",
            url="{{webhook_url}}",
            json_data={"text": "*{{subject}}*\n{{body}}"},
            secrets={"webhook_url": url},
        )
    if url := environ.get(cfg.webhook_env):
        blocks["slipway-webhook"] = CustomWebhookNotificationBlock(
            name="slipway-webhook",
            url="{{webhook_url}}",
            json_data={"source": "slipway", "subject": "{{subject}}", "text": "{{body}}"},
            secrets={"webhook_url": url},
        )
    if (mail := cfg.email) is not None:
        user, password = environ.get(mail.username_env), environ.get(mail.password_env)
        blocks["slipway-email"] = SmtpEmail(
            host=mail.host,
            port=mail.port,
            sender=mail.sender,
            to=list(mail.to),
            security=mail.security,
            username=SecretStr(user) if user else None,
            password=SecretStr(password) if password else None,
        )
    return blocks


def alert_definitions(block_ids: list[UUID], cfg: AlertSettings) -> list[AutomationCore]:
    """One automation per alert kind, sending to every channel; a burst within the cooldown sends once."""
    out = []
    for kind, (title, events) in ALERTS.items():
        flow_run = kind == "flow-run"
        # a cooldown per flow (flow runs) or per model version (model events)
        bucket = {"related:flow:prefect.resource.id"} if flow_run else {"prefect.resource.id", "slipway.model_version"}
        subject = f"[slipway] {title}" + ("" if flow_run else ": {{ event.resource.id | replace('slipway.model.', '') }}")
        out.append(
            AutomationCore(
                name=f"{ALERT_PREFIX}{kind}",
                description=f"Tells the alert channels when: {title}. "
                f"The same alert again within alerts.cooldown_seconds ({cfg.cooldown_seconds:g} s) sends nothing more.",
                trigger=EventTrigger(
                    expect=set(events),
                    match={"prefect.resource.id": "prefect.flow-run.*" if flow_run else MODEL_RESOURCE_PATTERN},
                    for_each=bucket,
                    posture=Posture.Reactive,
                    threshold=1,
                    within=timedelta(seconds=cfg.cooldown_seconds),
                ),
                actions=[
                    SendNotification(block_document_id=b, subject=subject, body=FLOW_RUN_BODY if flow_run else MODEL_BODY)
                    for b in block_ids
                ],
            )
        )
    return out


def _upsert(client: SyncPrefectClient, automation: AutomationCore) -> None:
    existing = client.read_automations_by_name(automation.name)
    if existing:
        client.update_automation(existing[0].id, automation)
        for extra in existing[1:]:
            client.delete_automation(extra.id)
    else:
        client.create_automation(automation)


def save_channels(api_url: str, cfg: AlertSettings, environ: Mapping[str, str]) -> list[UUID]:
    """Create or overwrite the channels' notification blocks (by name); returns their ids."""
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        # outside an event loop ``save`` runs synchronously and returns the id (its type allows a coroutine)
        return [cast(UUID, block.save(name, overwrite=True)) for name, block in channel_blocks(cfg, environ).items()]


def ensure_alerts(api_url: str, cfg: AlertSettings, environ: Mapping[str, str]) -> list[str]:
    """Create or update the channels and one alert automation per kind; drop alerts left without a channel."""
    block_ids = save_channels(api_url, cfg, environ)
    automations = alert_definitions(block_ids, cfg) if block_ids else []
    with SyncPrefectClient(api_url) as client:
        for automation in automations:
            _upsert(client, automation)
        wanted = {a.name for a in automations}
        for stale in client.read_automations():
            if stale.name.startswith(ALERT_PREFIX) and stale.name not in wanted:
                client.delete_automation(stale.id)
    return [a.name for a in automations]


def ensure_automations(api_url: str, params: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """Create or update the retraining and guard automations and the alerts; returns their names."""
    with SyncPrefectClient(api_url) as client:
        retrain = client.read_deployment_by_name(RETRAIN_DEPLOYMENT)
        guard = client.read_deployment_by_name(GUARD_DEPLOYMENT)
        automations = definitions(retrain.id, guard.id, params)
        for automation in automations:
            _upsert(client, automation)
    alerts = ensure_alerts(api_url, load_settings(params).alerts, os.environ if environ is None else environ)
    return [a.name for a in automations] + alerts
