"""An append-only, hash-chained audit log of promotion decisions, anchored outside its file.

Each entry carries the SHA-256 of the previous one, so editing or removing any
past entry breaks the chain at that point and ``verify`` names it. Appends take
an exclusive file lock and are fsynced, so concurrent flows cannot interleave
half-written lines and a crash never loses an acknowledged decision.

A chain alone cannot tell that its last entries were cut, that the file was
deleted, or that it was rewritten from scratch: after each append the head
(sequence number and hash) is written to an :class:`Anchor` kept elsewhere (the
model registry), and ``verify`` checks the file against it. Someone who can write to
both could rewrite the two together, so the anchor also keeps the head as the
holder of the promotion key last signed it (``signed``): the log up to there
cannot be rewritten or cut without that key. A last line torn by a
crash or a full disk is set aside to a ``.torn-*`` file by the next append, which
audits the repair, instead of blocking every later decision.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

GENESIS = "0" * 64


class AuditError(RuntimeError):
    """The log was altered; the message names the first bad entry."""


class Anchor(Protocol):
    """Where the chain's head is kept outside the file."""

    def read(self) -> tuple[int, str] | None: ...

    def write(self, seq: int, digest: str) -> None: ...

    def signed(self) -> tuple[int, str] | None:
        """The head as last signed with the promotion key (None: never); AuditError when the signature fails."""
        ...


def _digest(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _split(text: str) -> tuple[list[dict[str, Any]], str]:
    """The entries, and a torn tail: the last line, if it is unterminated and not a whole entry."""
    lines = text.split("\n")
    tail = lines.pop()  # after the last newline: "" when the file ends cleanly
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except ValueError as exc:
            raise AuditError(f"line {number} is not a whole entry: the log was edited") from exc
    if tail.strip():
        try:
            entries.append(json.loads(tail))
            tail = ""
        except ValueError:
            pass  # a half-written last line: torn
    return entries, tail


class AuditLog:
    def __init__(self, path: Path, anchor: Anchor | None = None) -> None:
        self.path = path
        self.anchor = anchor

    def append(
        self, event: str, actor: str, model: str, version: str | None, details: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Record one decision: who did what to which version, when, and why."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            text = handle.read()
            entries, torn = _split(text)
            if torn:
                entries.append(self._repair(handle, entries, torn, model))
            elif text and not text.endswith("\n"):  # a whole last entry that lost only its newline
                handle.write("\n")
            entry = self._write(handle, entries[-1] if entries else None, event, actor, model, version, details or {})
        if self.anchor is not None:
            self.anchor.write(entry["seq"], entry["hash"])
        return entry

    def _write(
        self,
        handle: Any,
        last: dict[str, Any] | None,
        event: str,
        actor: str,
        model: str,
        version: str | None,
        details: dict[str, Any],
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "seq": (last["seq"] + 1) if last else 1,
            "time": datetime.now(UTC).isoformat(),
            "event": event,
            "actor": actor,
            "model": model,
            "version": version,
            "details": details,
            "prev_hash": last["hash"] if last else GENESIS,
        }
        entry["hash"] = _digest(entry)
        handle.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
        return entry

    def _repair(self, handle: Any, entries: list[dict[str, Any]], torn: str, model: str) -> dict[str, Any]:
        """Set a torn last line aside, cut it from the log, and audit that."""
        saved = self.path.with_name(f"{self.path.name}.torn-{datetime.now(UTC):%Y%m%dT%H%M%S%f}")
        saved.write_text(torn, encoding="utf-8")
        good = os.fstat(handle.fileno()).st_size - len(torn.encode("utf-8"))
        handle.truncate(good)
        handle.seek(good)
        details = {"torn_bytes": len(torn.encode("utf-8")), "saved_to": str(saved)}
        return self._write(handle, entries[-1] if entries else None, "audit_repaired", "slipway", model, None, details)

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return _split(self.path.read_text(encoding="utf-8"))[0]

    def verify(self) -> int:
        """Check every link, a torn tail and the anchored head; return the number of entries."""
        head = self.anchor.read() if self.anchor is not None else None
        if not self.path.exists():
            if head is None and self.anchor is not None:
                head = self.anchor.signed()
            if head is not None:
                raise AuditError(f"{self.path} is missing, but the registry's anchor records {head[0]} entries: it was deleted")
            return 0
        try:
            entries, torn = _split(self.path.read_text(encoding="utf-8"))
        except AuditError as exc:
            raise AuditError(f"{self.path}: {exc}") from exc
        previous = GENESIS
        for position, entry in enumerate(entries, start=1):
            if entry.get("seq") != position:
                raise AuditError(f"{self.path}: entry {position} has seq {entry.get('seq')}: an entry was removed or reordered")
            if entry.get("prev_hash") != previous:
                raise AuditError(f"{self.path}: entry {position} does not follow entry {position - 1}")
            if _digest(entry) != entry.get("hash"):
                raise AuditError(f"{self.path}: entry {position} was modified after it was written")
            previous = entry["hash"]
        if torn:
            raise AuditError(f"{self.path}: its last line is half-written (a crash or a full disk); the next append repairs it")
        if head is not None:
            seq, digest = head
            if seq > len(entries):
                raise AuditError(
                    f"{self.path} has {len(entries)} entries but the registry's anchor records {seq}: "
                    "its last entries were cut, or the file was replaced"
                )
            if entries[seq - 1]["hash"] != digest:
                raise AuditError(f"{self.path}: entry {seq} is not the one the registry anchored: the log was rewritten")
        signed = self.anchor.signed() if self.anchor is not None else None
        if signed is not None:
            seq, digest = signed
            if seq > len(entries) or entries[seq - 1]["hash"] != digest:
                raise AuditError(
                    f"{self.path}: entry {seq} is not the one the promotion key signed as the head: "
                    "the log was cut or rewritten (and its unsigned anchor with it)"
                )
        return len(entries)
