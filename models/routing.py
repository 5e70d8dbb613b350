"""Which model serves a request: champion only, shadow, or a sticky canary share.

The routing record lives on the registered model as tags next to the aliases, so
the registry is the one source of truth and the service follows it by polling.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

MODE_TAG = "slipway.routing.mode"
CANARY_TAG = "slipway.routing.canary_percent"
VERSION_TAG = "slipway.routing.version"


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
    """

    mode: Mode = Mode.CHAMPION
    canary_percent: int = 0
    version: str | None = None

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
        return cls(mode, percent if mode is Mode.CANARY else 0, version if version and version.isdigit() else None)

    def to_tags(self) -> dict[str, str]:
        return {MODE_TAG: self.mode.value, CANARY_TAG: str(self.canary_percent), VERSION_TAG: self.version or ""}


def bucket(key: str) -> int:
    """A stable bucket in [0, 100) for a routing key (entity id or request id)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % 100


def serves_challenger(routing: Routing, key: str) -> bool:
    """Canary: the same key always lands on the same side for a given share."""
    return routing.mode is Mode.CANARY and bucket(key) < routing.canary_percent


def shadows(routing: Routing) -> bool:
    return routing.mode is Mode.SHADOW
