"""Stand-ins for the outside services alerts go to: an HTTP receiver (Slack, a generic webhook) and an SMTP server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from slipway.processes import free_port

T = TypeVar("T")


@dataclass
class Inbox:
    """What arrived: JSON posts by path, and mails."""

    http: str
    smtp_port: int
    posts: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    mails: list[EmailMessage] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.http}{path}"

    def texts(self, path: str) -> list[str]:
        return [str(body.get("text", "")) for p, body in list(self.posts) if p == path]

    def wait(self, find: Callable[[], T | None], timeout: float, what: str) -> T:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (found := find()) is not None:
                return found
            time.sleep(0.5)
        raise AssertionError(
            f"no {what} within {timeout:.0f}s; posts: {self.posts[-5:]}, mails: {[m['Subject'] for m in self.mails]}"
        )

    def wait_post(self, path: str, needle: str, timeout: float) -> str:
        return self.wait(
            lambda: next((t for t in self.texts(path) if needle in t), None), timeout, f"{path} post with {needle!r}"
        )

    def wait_mail(self, needle: str, timeout: float) -> EmailMessage:
        def find() -> EmailMessage | None:
            return next((m for m in list(self.mails) if needle in str(m["Subject"]) + m.get_content()), None)

        return self.wait(find, timeout, f"mail with {needle!r}")


class _Mailbox:
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        mail = message_from_bytes(content, policy=policy.default)
        assert isinstance(mail, EmailMessage)
        self.inbox.mails.append(mail)
        return "250 OK"


@contextmanager
def receivers() -> Iterator[Inbox]:
    """A local HTTP receiver and SMTP server, for as long as the block runs."""
    inbox = Inbox(http="", smtp_port=free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = {"raw": body.decode(errors="replace")}
            inbox.posts.append((self.path, parsed))
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    inbox.http = f"http://127.0.0.1:{http.server_address[1]}"
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    smtp = Controller(_Mailbox(inbox), hostname="127.0.0.1", port=inbox.smtp_port)
    smtp.start()
    try:
        yield inbox
    finally:
        smtp.stop()
        http.shutdown()
        http.server_close()
