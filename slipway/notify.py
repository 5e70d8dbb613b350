"""The alert mail channel: a Prefect notification block that sends over plain SMTP.

Prefect's own notification blocks reach Slack, webhooks and SendGrid but not an
SMTP relay, which is what most companies' mail goes through. This block is
registered with Prefect as a collection (the ``prefect.collections`` entry point
in ``pyproject.toml``), so the Prefect server, which runs automations' notification
actions, can load it by its block type like any built-in one; it shows, and can
be edited, under Blocks in the Prefect UI.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from typing import Literal

from prefect.blocks.abstract import NotificationBlock
from pydantic import Field, SecretStr


class SmtpEmail(NotificationBlock):
    """Send each notification as one mail through an SMTP relay."""

    _block_type_name = "Slipway SMTP Email"
    _block_type_slug = "slipway-smtp-email"
    _description = "Alert mail through an SMTP relay (Slipway's mail channel)."

    host: str = Field(description="The SMTP relay's host name.")
    port: int = Field(default=587, description="The relay's port.")
    sender: str = Field(description="The From address.")
    to: list[str] = Field(description="Who receives each notification.")
    security: Literal["starttls", "tls", "none"] = Field(default="starttls", description="How the connection is secured.")
    username: SecretStr | None = Field(default=None, description="SMTP login, if the relay wants one.")
    password: SecretStr | None = Field(default=None, description="SMTP password.")
    timeout: float = Field(default=20, description="Seconds before a silent relay is given up on.")

    def message(self, body: str, subject: str | None) -> EmailMessage:
        mail = EmailMessage()
        mail["From"], mail["To"] = self.sender, ", ".join(self.to)
        mail["Subject"] = subject or "Slipway alert"
        mail.set_content(body)
        return mail

    def send(self, body: str, subject: str | None = None) -> None:
        """Deliver one mail (blocking); a refused or unreachable relay raises."""
        context = ssl.create_default_context()
        if self.security == "tls":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=context)
        else:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with smtp:
            if self.security == "starttls":
                smtp.starttls(context=context)
            if self.username is not None:
                smtp.login(self.username.get_secret_value(), self.password.get_secret_value() if self.password else "")
            smtp.send_message(self.message(body, subject))

    async def notify(self, body: str, subject: str | None = None) -> None:
        """Prefect's notification entry point: the mail goes out on a thread, off the server's event loop."""
        await asyncio.to_thread(self.send, body, subject)
