"""Alert channels and definitions against real receivers: what arrives, not only that something did."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from uuid import uuid4

import pytest
from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture

from flows.automations import ALERT_PREFIX, alert_definitions, channel_blocks
from slipway.catalog import ALERTS
from slipway.notify import SmtpEmail
from slipway.processes import free_port
from slipway.settings import AlertSettings, EmailSettings
from tests.alerts import Inbox, receivers


@pytest.fixture
def inbox() -> Iterator[Inbox]:
    with receivers() as inbox:
        yield inbox


def settings(inbox: Inbox, **kw: object) -> AlertSettings:
    email = EmailSettings.model_validate(
        {
            "host": "127.0.0.1",
            "port": inbox.smtp_port,
            "from": "slipway@example.com",
            "to": ["oncall@example.com"],
            "security": "none",
        }
    )
    return AlertSettings.model_validate({"email": email, **kw})


def test_channels_exist_only_where_their_secret_is_set(inbox: Inbox) -> None:
    cfg = settings(inbox)
    assert set(channel_blocks(cfg, {})) == {"slipway-email"}
    env = {cfg.slack_webhook_env: inbox.url("/slack"), cfg.webhook_env: inbox.url("/hook")}
    blocks = channel_blocks(cfg, env)
    assert set(blocks) == {"slipway-slack", "slipway-webhook", "slipway-email"}
    slack = blocks["slipway-slack"]
    assert isinstance(slack, CustomWebhookNotificationBlock)
    assert inbox.url("/slack") not in slack.model_dump_json()  # the URL is a secret, shown obfuscated in the UI
    assert set(channel_blocks(cfg.model_copy(update={"email": None}), {})) == set()


def test_webhook_channels_post_what_slack_and_a_generic_receiver_expect(inbox: Inbox) -> None:
    cfg = settings(inbox)
    env = {cfg.slack_webhook_env: inbox.url("/slack"), cfg.webhook_env: inbox.url("/hook")}
    blocks = channel_blocks(cfg, env)
    for name in ("slipway-slack", "slipway-webhook"):
        block = blocks[name]
        assert isinstance(block, CustomWebhookNotificationBlock)
        block.notify('Drift detected on lead-scoring v3: page_views "PSI" 0.41', subject="[slipway] drift detected")
    slack = dict(inbox.posts)["/slack"]
    assert slack == {"text": '*[slipway] drift detected*\nDrift detected on lead-scoring v3: page_views "PSI" 0.41'}
    hook = dict(inbox.posts)["/hook"]
    assert hook == {"source": "slipway", "subject": "[slipway] drift detected", "text": hook["text"]}
    assert hook["text"].startswith("Drift detected on lead-scoring v3")


def test_hostile_text_in_a_message_cannot_pull_the_webhook_secret_into_it(inbox: Inbox) -> None:
    cfg = settings(inbox)
    block = channel_blocks(cfg, {cfg.slack_webhook_env: inbox.url("/slack?token=s3cret")})["slipway-slack"]
    assert isinstance(block, CustomWebhookNotificationBlock)
    block.notify("rejected by mallory: {{webhook_url}} {{ webhook_url }}", subject="[slipway] {{webhook_url}}")
    (text,) = inbox.texts("/slack?token=s3cret")  # an approver's comment or a rollback reason is free text
    assert "s3cret" not in text and "{{webhook_url}}" in text


def test_mail_goes_out_through_smtp_with_subject_sender_and_recipients(inbox: Inbox) -> None:
    block = channel_blocks(settings(inbox), {})["slipway-email"]
    asyncio.run(block.notify("Champion of lead-scoring is now v4", subject="[slipway] champion changed"))
    (mail,) = inbox.mails
    assert mail["Subject"] == "[slipway] champion changed"
    assert mail["From"] == "slipway@example.com" and mail["To"] == "oncall@example.com"
    assert mail.get_content().strip() == "Champion of lead-scoring is now v4"


def test_an_unreachable_relay_raises_so_prefect_marks_the_action_failed() -> None:
    block = SmtpEmail(
        host="127.0.0.1", port=free_port(), sender="a@example.com", to=["b@example.com"], security="none", timeout=3
    )
    with pytest.raises(OSError):
        block.send("body", "subject")


def test_every_alert_kind_sends_to_every_channel_once_per_cooldown() -> None:
    ids = [uuid4() for _ in range(3)]
    automations = alert_definitions(ids, AlertSettings(cooldown_seconds=600))
    assert [a.name for a in automations] == [f"{ALERT_PREFIX}{kind}" for kind in ALERTS]
    for automation in automations:
        trigger = automation.trigger
        assert isinstance(trigger, EventTrigger) and trigger.posture == Posture.Reactive
        assert trigger.within.total_seconds() == 600 and trigger.threshold == 1  # fires at once, then waits out the cooldown
        actions = automation.actions
        assert [a.block_document_id for a in actions if isinstance(a, SendNotification)] == ids
    failed = automations[-1].trigger
    assert isinstance(failed, EventTrigger) and failed.expect == {"prefect.flow-run.Failed", "prefect.flow-run.Crashed"}
