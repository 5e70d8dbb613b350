"""A cooldown claimed under a file lock: of many starts within the cooldown, exactly one goes ahead.

A claim counts from when a retraining starts, so a burst of events started together
retrains once. A retraining that then fails gives its claim back (``release``): the
previous claim is restored and the next event may retrain at once, rather than
being ignored for a whole cooldown after nothing was retrained.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any


@contextmanager
def _locked(marker: Path) -> Iterator[IO[str]]:
    marker.parent.mkdir(parents=True, exist_ok=True)
    with open(marker, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # two runs at once: one claims, the other sees the claim
        handle.seek(0)
        yield handle


def _read(handle: IO[str]) -> dict[str, Any] | None:
    text = handle.read().strip()
    return json.loads(text) if text else None


def _write(handle: IO[str], record: dict[str, Any] | None) -> None:
    handle.seek(0)
    handle.truncate()
    if record is not None:
        handle.write(json.dumps(record))


def claim(marker: Path, cooldown: float, reason: str, now: datetime | None = None) -> str | None:
    """Record a start unless one was recorded within ``cooldown`` seconds; returns the blocking start time."""
    with _locked(marker) as handle:
        last = _read(handle)
        now = now or datetime.now(UTC)
        if last is not None and (now - datetime.fromisoformat(last["started"])).total_seconds() < cooldown:
            return str(last["started"])
        previous = None if last is None else {k: v for k, v in last.items() if k != "previous"}
        _write(handle, {"started": now.isoformat(), "reason": reason, "previous": previous})
    return None


def release(marker: Path, started: str) -> bool:
    """Give back the claim made at ``started`` (its retraining failed); False if a later claim replaced it."""
    with _locked(marker) as handle:
        last = _read(handle)
        if last is None or last["started"] != started:
            return False
        _write(handle, last.get("previous"))
    return True


def current(marker: Path) -> str | None:
    """The start time of the claim in force, if any."""
    if not marker.is_file():
        return None
    with _locked(marker) as handle:
        last = _read(handle)
    return None if last is None else str(last["started"])
