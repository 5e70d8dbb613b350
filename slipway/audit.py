"""An append-only, hash-chained audit log of promotion decisions.

Each entry carries the SHA-256 of the previous one, so editing or removing any
past entry breaks the chain at that point and ``verify`` names it. Appends take
an exclusive file lock and are fsynced, so concurrent flows cannot interleave
half-written lines and a crash never loses an acknowledged decision.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


class AuditError(RuntimeError):
    """The log was altered; the message names the first bad entry."""


def _digest(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    def append(
        self, event: str, actor: str, model: str, version: str | None, details: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Record one decision: who did what to which version, when, and why."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            lines = handle.read().splitlines()
            last = json.loads(lines[-1]) if lines else None
            entry: dict[str, Any] = {
                "seq": (last["seq"] + 1) if last else 1,
                "time": datetime.now(UTC).isoformat(),
                "event": event,
                "actor": actor,
                "model": model,
                "version": version,
                "details": details or {},
                "prev_hash": last["hash"] if last else GENESIS,
            }
            entry["hash"] = _digest(entry)
            handle.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return entry

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]

    def verify(self) -> int:
        """Check every link; return the number of entries."""
        previous = GENESIS
        entries = self.entries()
        for position, entry in enumerate(entries, start=1):
            if entry.get("seq") != position:
                raise AuditError(f"{self.path}: entry {position} has seq {entry.get('seq')}: an entry was removed or reordered")
            if entry.get("prev_hash") != previous:
                raise AuditError(f"{self.path}: entry {position} does not follow entry {position - 1}")
            if _digest(entry) != entry.get("hash"):
                raise AuditError(f"{self.path}: entry {position} was modified after it was written")
            previous = entry["hash"]
        return len(entries)
