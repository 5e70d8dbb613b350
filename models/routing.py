"""Which model serves a request: champion only, shadow, or a sticky canary share.

The routing record lives on the registered model as tags next to the aliases, so
the registry is the one source of truth and the service follows it by polling.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

MODE_TAG = "slipway.routing.mode"
CANARY_TAG = "slipway.routing.canary_percent"
VERSION_TAG = "slipway.routing.version"
LEASE_TAG = "slipway.routing.lease_until"


class Mode(StrEnum):
    CHAMPION = "champion"
    SHADOW = "shadow"
    CANARY = "canary"


@dataclass(frozen=True)
class Routing:
    """A routing decision for the whole service at one moment.

    ``version`` names the second model exactly: the version under promotion, or,
    during a post-deployment watch, the previous champion scored in shadow. Without
    it (records written before it existed) the ``challenger`` alias is the second model.
    ``lease_until``: the promote flow renews it while it runs; once it has passed (the
    flow died or its machine vanished) the record counts as champion only.
    """

    mode: Mode = Mode.CHAMPION
    canary_percent: int = 0
    version: str | None = None
    lease_until: datetime | None = None

    def leased(self, seconds: float, now: datetime | None = None) -> Routing:
        return replace(self, lease_until=(now or datetime.now(UTC)) + timedelta(seconds=seconds))

    def expired(self, now: datetime | None = None) -> bool:
        return self.lease_until is not None and (now or datetime.now(UTC)) > self.lease_until

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Routing:
        """Read the record; anything unreadable falls back to champion only."""
        try:
            mode = Mode(tags.get(MODE_TAG, Mode.CHAMPION.value))
            percent = int(tags.get(CANARY_TAG, "0"))
        except ValueError:
            return cls()
        if mode is Mode.CANARY and not 0 < percent <= 100:
            return cls()
        if mode is Mode.CHAMPION:
            return cls()
        version = tags.get(VERSION_TAG) or None
        try:
            lease = datetime.fromisoformat(tags[LEASE_TAG]) if tags.get(LEASE_TAG) else None
        except ValueError:
            return cls()  # a lease that cannot be read is no lease to serve under
        if lease is not None and lease.tzinfo is None:
            return cls()
        return cls(mode, percent if mode is Mode.CANARY else 0, version if version and version.isdigit() else None, lease)

    def to_tags(self) -> dict[str, str]:
        return {
            MODE_TAG: self.mode.value,
            CANARY_TAG: str(self.canary_percent),
            VERSION_TAG: self.version or "",
            LEASE_TAG: self.lease_until.isoformat() if self.lease_until else "",
        }


def bucket(key: str) -> int:
    """A stable bucket in [0, 100) for a routing key (entity id or request id)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % 100


def serves_challenger(routing: Routing, key: str) -> bool:
    """Canary: the same key always lands on the same side for a given share."""
    return routing.mode is Mode.CANARY and bucket(key) < routing.canary_percent


def shadows(routing: Routing) -> bool:
    return routing.mode is Mode.SHADOW
