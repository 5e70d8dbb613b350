"""A cooldown claimed under a file lock: of many starts within the cooldown, exactly one goes ahead."""

from __future__ import annotations

import fcntl
import json
from datetime import UTC, datetime
from pathlib import Path


def claim(marker: Path, cooldown: float, reason: str, now: datetime | None = None) -> str | None:
    """Record a start unless one was recorded within ``cooldown`` seconds; returns the blocking start time."""
    marker.parent.mkdir(parents=True, exist_ok=True)
    with open(marker, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # two runs at once: one claims, the other sees the claim
        handle.seek(0)
        text = handle.read().strip()
        last = datetime.fromisoformat(json.loads(text)["started"]) if text else None
        now = now or datetime.now(UTC)
        if last is not None and (now - last).total_seconds() < cooldown:
            return last.isoformat()
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"started": now.isoformat(), "reason": reason}))
    return None
