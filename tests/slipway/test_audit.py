import json
import threading
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
