"""Signed serving decisions: what the scoring service may serve, as the promote flow decided it.

Each champion switch and routing change is also written as one registered-model tag,
``slipway.serving.decision``: the champion, the routing record and a sequence
number, signed with the promotion key (Ed25519). The service holds only the public
key (``promotion.decision_key``) and serves the last decision it verified. The
``champion`` alias and the routing tags stay as readable mirrors; a mirror that
disagrees with the signed decision (someone with MLflow write access, behind the
platform's back) is reported, never served. A decision with a lower sequence number
than one already seen (a replayed old record) is refused.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from models.routing import Routing
from slipway import signing

DECISION_TAG = "slipway.serving.decision"
KEY_ENV = "SLIPWAY_PROMOTION_KEY"  # the promotion key (private): the promote, rollback, guard and switch flows sign with it


class Unverified(ValueError):
    """A decision record that must not be served; the message says why."""


@dataclass(frozen=True)
class Decision:
    """The champion and the routing the service is to follow, numbered so a replay is seen."""

    model: str
    champion: str | None
    routing: Routing = field(default_factory=Routing)
    seq: int = 1
    signed_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def payload(self) -> bytes:
        body = {
            "model": self.model,
            "champion": self.champion,
            "routing": self.routing.to_tags(),
            "seq": self.seq,
            "signed_at": self.signed_at.isoformat(),
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    def signed(self, key: Ed25519PrivateKey) -> str:
        """The tag's value: the payload and its signature, both URL-safe base64, joined by a dot."""
        payload = self.payload()
        return f"{base64.urlsafe_b64encode(payload).decode().rstrip('=')}.{signing.sign(key, payload)}"

    def describe(self) -> str:
        second = f", {self.routing.mode} v{self.routing.version}" if self.routing.version else ""
        share = f" at {self.routing.canary_percent}%" if self.routing.canary_percent else ""
        return f"#{self.seq}: champion v{self.champion}{second}{share}"


def read(text: str | None, key: Ed25519PublicKey, model: str) -> Decision:
    """The decision in a tag's value, verified against ``key``; :class:`Unverified` names what is wrong."""
    if not text:
        raise Unverified(f"no signed decision ({DECISION_TAG}) on {model!r}")
    encoded, _, signature = text.partition(".")
    try:
        payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        raise Unverified(f"{DECISION_TAG} is not a signed decision") from None
    if not signing.verify(key, payload, signature):
        raise Unverified(f"{DECISION_TAG} is not signed by the promotion key")
    try:
        body = json.loads(payload)
        if body["model"] != model:
            raise Unverified(f"{DECISION_TAG} was signed for {body['model']!r}, not {model!r}")
        champion = body["champion"]
        return Decision(
            model=model,
            champion=None if champion is None else str(champion),
            routing=Routing.from_tags(body["routing"]),
            seq=int(body["seq"]),
            signed_at=datetime.fromisoformat(body["signed_at"]),
        )
    except (ValueError, KeyError, TypeError) as exc:  # signed, yet not a record this version can read
        if isinstance(exc, Unverified):
            raise
        raise Unverified(f"{DECISION_TAG} is signed but cannot be read ({type(exc).__name__}: {exc})") from None


def mismatches(decision: Decision, champion_alias: str | None, routing_tags: Routing) -> list[str]:
    """Where the registry's readable mirrors disagree with the signed decision."""
    found = []
    if champion_alias != decision.champion:
        found.append(f"the champion alias is v{champion_alias}, the signed champion v{decision.champion}")
    signed = decision.routing
    if (routing_tags.mode, routing_tags.canary_percent, routing_tags.version) != (
        signed.mode,
        signed.canary_percent,
        signed.version,
    ):
        found.append(
            f"the routing tags say {routing_tags.mode} {routing_tags.canary_percent}% v{routing_tags.version}, "
            f"the signed routing {signed.mode} {signed.canary_percent}% v{signed.version}"
        )
    return found


def signer(configured: str | None) -> Ed25519PrivateKey | None:
    """The promotion key from ``SLIPWAY_PROMOTION_KEY``, checked against ``promotion.decision_key``.

    None when no decision key is configured (the service then follows the aliases
    unsigned). A configured key without its private half here is an error: a switch
    the service would not follow must not be made.
    """
    if not configured:
        return None
    key = signing.private_key_from_env(KEY_ENV)
    expected = signing.public_key(configured, "promotion.decision_key")
    if signing.public_text(key.public_key()) != signing.public_text(expected):
        raise signing.KeyProblem(f"{KEY_ENV} is not the private half of promotion.decision_key")
    return key


def env_signer() -> Ed25519PrivateKey | None:
    """The promotion key if ``SLIPWAY_PROMOTION_KEY`` is set (the registry's writers sign with it), else None."""
    value = os.environ.get(KEY_ENV, "")
    return signing.private_key(value, KEY_ENV) if value else None
