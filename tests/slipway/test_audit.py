import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway.audit import AuditError, AuditLog


def test_entries_chain_and_verify(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    first = log.append("policy_passed", "train-flow", "m", "3", {"auc_gain": 0.03})
    second = log.append("approved", "alice", "m", "3", {"comment": "ok"})
    assert second["prev_hash"] == first["hash"] and second["seq"] == 2
    assert log.verify() == 2


@pytest.mark.parametrize("tamper", ["edit", "delete", "reorder"])
def test_tampering_is_detected_and_located(tmp_path: Path, tamper: str) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    for actor in ("a", "b", "c"):
        log.append("approved", actor, "m", "1")
    lines = log.path.read_text().splitlines()
    if tamper == "edit":
        entry = json.loads(lines[1])
        entry["actor"] = "mallory"
        lines[1] = json.dumps(entry, sort_keys=True)
    elif tamper == "delete":
        del lines[1]
    else:
        lines[1], lines[2] = lines[2], lines[1]
    log.path.write_text("\n".join(lines) + "\n")
    with pytest.raises(AuditError, match="entry 2"):
        log.verify()


def test_concurrent_appends_keep_the_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.jsonl")
    threads = [threading.Thread(target=lambda i=i: log.append("step", f"w{i}", "m", None)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert log.verify() == 20


class MemoryAnchor:
    """The head kept outside the file (the registry, in the flows)."""

    def __init__(self) -> None:
        self.head: tuple[int, str] | None = None

    def read(self) -> tuple[int, str] | None:
        return self.head

    def write(self, seq: int, digest: str) -> None:
        self.head = (seq, digest)

    def signed(self) -> tuple[int, str] | None:
        return None  # the registry's anchor signs (tests/models/test_registry_anchor.py)


def anchored(tmp_path: Path, n: int = 3) -> tuple[AuditLog, MemoryAnchor]:
    anchor = MemoryAnchor()
    log = AuditLog(tmp_path / "audit.jsonl", anchor)
    for i in range(n):
        log.append("approved", f"a{i}", "m", "1")
    assert anchor.head is not None and anchor.head[0] == n and log.verify() == n
    return log, anchor


def test_cut_deleted_or_rewritten_logs_are_detected_by_the_anchor(tmp_path: Path) -> None:
    log, _ = anchored(tmp_path)
    whole = log.path.read_text()
    log.path.write_text("".join(whole.splitlines(keepends=True)[:2]))  # the last entry cut: the chain alone still holds
    assert AuditLog(log.path).verify() == 2
    with pytest.raises(AuditError, match="has 2 entries but the registry's anchor records 3"):
        log.verify()
    log.path.unlink()
    with pytest.raises(AuditError, match=r"missing.*it was deleted"):
        log.verify()
    forged = AuditLog(log.path)  # a whole new, internally consistent chain written from scratch
    for actor in ("x", "y", "z"):
        forged.append("approved", actor, "m", "1")
    assert forged.verify() == 3
    with pytest.raises(AuditError, match="entry 3 is not the one the registry anchored"):
        log.verify()


def test_a_torn_last_line_is_reported_then_repaired_by_the_next_append(tmp_path: Path) -> None:
    log, anchor = anchored(tmp_path)
    with open(log.path, "a", encoding="utf-8") as handle:
        handle.write('{"seq": 4, "event": "approv')  # what a full disk or a kill mid-write leaves
    with pytest.raises(AuditError, match="last line is half-written"):
        log.verify()
    assert len(log.entries()) == 3  # readers still see every whole entry
    log.append("rollback", "bob", "m", "1")  # not blocked: the torn line is set aside and the repair audited
    events = [e["event"] for e in log.entries()]
    assert events[-2:] == ["audit_repaired", "rollback"] and log.verify() == 5 and anchor.head is not None
    repaired = log.entries()[-2]["details"]
    assert Path(repaired["saved_to"]).read_text() == '{"seq": 4, "event": "approv' and repaired["torn_bytes"] == 27


def test_a_whole_last_entry_without_its_newline_is_kept(tmp_path: Path) -> None:
    log, _ = anchored(tmp_path)
    log.path.write_text(log.path.read_text().rstrip("\n"))
    log.append("approved", "c", "m", "1")
    assert log.verify() == 4 and [e["event"] for e in log.entries()].count("audit_repaired") == 0


def test_an_edited_middle_line_that_is_not_json_is_named(tmp_path: Path) -> None:
    log, _ = anchored(tmp_path)
    lines = log.path.read_text().splitlines(keepends=True)
    lines[1] = "garbage\n"
    log.path.write_text("".join(lines))
    with pytest.raises(AuditError, match="line 2 is not a whole entry"):
        log.verify()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB file system (tmpfs), so writes fail as on a full disk: ENOSPC after a short write."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        if os.environ.get("SLIPWAY_REQUIRE_SERVICES"):
            pytest.fail(f"mounting a tmpfs needs root: {done.stderr}")
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_mid_append_leaves_a_torn_line_that_the_next_append_repairs(small_disk: Path) -> None:
    log, anchor = anchored(small_disk)
    filler = small_disk / "filler"
    with open(filler, "wb", buffering=0) as handle, pytest.raises(OSError, match="No space left"):
        while True:
            handle.write(b"\0" * 4096)
    kept = len(log.entries())
    with pytest.raises(OSError, match="No space left"):  # the log's last page fills; one entry is cut mid-line
        for i in range(100):
            log.append("approved", f"b{i}", "m", "2", {"comment": "x" * 100})
    written = len(log.entries())
    assert written >= kept and not log.path.read_text().endswith("\n")
    with pytest.raises(AuditError, match="last line is half-written"):
        log.verify()
    with pytest.raises(OSError, match="No space left"):  # still full: refused, nothing more lost
        log.append("rollback", "bob", "m", "1")
    assert len(log.entries()) == written

    filler.unlink()  # the operator frees space
    log.append("rollback", "bob", "m", "1")  # not blocked: the torn line is set aside, the repair audited
    assert [e["event"] for e in log.entries()][-2:] == ["audit_repaired", "rollback"]
    assert log.verify() == written + 2 and anchor.head is not None and anchor.head[0] == written + 2
