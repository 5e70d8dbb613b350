"""The post-deployment guard on a live service: the previous champion in shadow, checks, rollback, take-over after a kill."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from models.registry import PREVIOUS_CHAMPION_TAG, alias_version
from models.routing import Mode, Routing
from models.watch import GUARD_TAG, WATCH_TAG, Hold, Watch
from slipway.audit import AuditLog
from slipway.service_metrics import read_state, wait_for_state
from slipway.traffic import Traffic
from tests.conftest import REPO
from tests.promotion.conftest import Stage
from tests.promotion.test_promote import EXIT_REFUSED, LENIENT, emitted, finish

pytestmark = pytest.mark.e2e  # starts real servers or processes


def start_guard(stage: Stage, params: Path) -> subprocess.Popen[str]:
    env = {**stage.served.env, "PREFECT_API_URL": stage.prefect_url}
    command = [sys.executable, "-m", "flows.cli", "run", "guard", "--params", str(params)]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def watch_hold(stage: Stage) -> Hold | None:
    text = stage.served.client().get_registered_model(stage.name).tags.get(GUARD_TAG)
    if not text:
        return None
    raw = json.loads(text)
    return Hold(raw["run"], datetime.fromisoformat(raw["renewed"]))


def audit_events(stage: Stage, since: int = 0) -> list[dict[str, Any]]:
    log = AuditLog(stage.served.home.audit_log)
    log.verify()
    return log.entries()[since:]


def wait_for_event(stage: Stage, event: str, since: int, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [e for e in audit_events(stage, since) if e["event"] == event]
        if found:
            return found[0]
        time.sleep(0.5)
    pytest.fail(f"no {event!r} audit entry within {timeout:.0f}s")


def test_a_champion_failing_its_watch_is_rolled_back_with_no_failed_request(stage: Stage) -> None:
    stage.reset(champion="1", challenger="2")
    # a threshold v2 cannot meet once it serves: the injected failure the guard must catch
    watch = {"seconds": 120, "interval_seconds": 3, "lease_seconds": 10, "max_p99_latency_ms": 0.001, "max_score_psi": 5.0}
    params = stage.params(**LENIENT, watch=watch)
    proc = stage.start_promote(params, "requested_by=alice")
    stage.resume(stage.wait_paused(proc), approver="bob", approved=True, comment="ship it")
    code, out = finish(proc)
    assert code == 0 and "post-deployment watch: v1 scored in shadow beside v2" in out, out
    registered = stage.served.client().get_registered_model(stage.name)
    assert Routing.from_tags(registered.tags) == Routing(Mode.SHADOW, 0, "1")  # the old champion, named exactly
    opened = Watch.from_tag(registered.tags[WATCH_TAG])
    assert (opened.version, opened.previous, opened.checks) == ("2", "1", 0)
    state = read_state(stage.served.url)
    assert (state.champion, state.challenger, state.shadow) == ("2", "1", True)

    again = finish(stage.start_promote(stage.params(**LENIENT), "requested_by=alice", "version=1"))  # nothing, mid-watch
    assert again[0] == EXIT_REFUSED and "under its post-deployment watch" in again[1], again[1]

    before = len(audit_events(stage))
    traffic = Traffic(stage.served.url, per_second=40).entities(stage.served.entity_ids)
    try:
        code, out = finish(start_guard(stage, params), timeout=120)
        wait_for_state(stage.served.url, lambda s: s.champion == "1" and s.challenger is None, "v1 restored", 30)
        time.sleep(2)  # traffic keeps flowing across and after the switch
    finally:
        traffic.stop()
    assert code == EXIT_REFUSED and "guard rolled_back" in out and "restored v1" in out and "p99 latency" in out, out
    assert traffic.statuses and set(traffic.statuses) == {200}, traffic.statuses
    events = [e["event"] for e in audit_events(stage, before)]
    assert events[:1] == ["watch_check"] and events[-4:] == ["watch_failed", "rollback", "rollback_applied", "watch_rolled_back"]
    assert all(e["actor"] == "slipway-guard" for e in audit_events(stage, before))
    assert alias_version(stage.name, "champion") == "1"
    tags = stage.served.client().get_registered_model(stage.name).tags
    assert WATCH_TAG not in tags and GUARD_TAG not in tags and Routing.from_tags(tags) == Routing()
    assert emitted(stage, "slipway.promotion.rolled_back", "2") and emitted(stage, "slipway.champion.changed", "1")


def test_a_killed_guard_is_taken_over_and_a_clean_watch_ends_the_shadow(stage: Stage) -> None:
    stage.reset(champion="2", challenger="1")  # as a switch from v1 to v2 leaves it, with the watch opened directly
    client, now = stage.served.client(), datetime.now(UTC)
    client.delete_registered_model_alias(stage.name, "challenger")
    client.set_registered_model_tag(stage.name, PREVIOUS_CHAMPION_TAG, "1")
    opened = Watch("2", "1", now, now + timedelta(seconds=120), now)
    client.set_registered_model_tag(stage.name, WATCH_TAG, opened.to_tag())
    stage.sign("2", opened.routing())
    wait_for_state(stage.served.url, lambda s: s.challenger == "1" and s.shadow, "the watch's shadow", 30)
    watch = {"seconds": 120, "interval_seconds": 4, "lease_seconds": 30, "max_score_psi": 5.0}
    params = stage.params(watch=watch)
    before = len(audit_events(stage))

    first = start_guard(stage, params)
    wait_for_event(stage, "watch_check", before)
    first.send_signal(signal.SIGKILL)  # no finally, no release: its hold stays behind, its run stays "Running"
    first.wait(timeout=10)
    dead = watch_hold(stage)
    assert dead is not None
    # As if the dead guard were still renewing its hold: on a slow machine the next guard's start-up alone can
    # outlast the 30 s lease, and that guard must meet a fresh hold here, not a lapsed one.
    renewing = threading.Event()

    def renew() -> None:
        while True:
            renewed = {"run": dead.run_id, "renewed": datetime.now(UTC).isoformat()}
            client.set_registered_model_tag(stage.name, GUARD_TAG, json.dumps(renewed))
            if renewing.wait(5):
                return

    renewer = threading.Thread(target=renew, daemon=True)
    renewer.start()
    try:
        code, out = finish(start_guard(stage, params), timeout=120)  # the hold is fresh: not two guards at once
    finally:
        renewing.set()
        renewer.join(timeout=30)
    assert code == 0 and "guard guarded_elsewhere" in out, out

    held = watch_hold(stage)
    assert held is not None
    time.sleep(max(0.0, (held.renewed + timedelta(seconds=31) - datetime.now(UTC)).total_seconds()))  # its lease lapses
    code, out = finish(start_guard(stage, params), timeout=150)
    assert code == 0 and "guard passed" in out, out
    events = audit_events(stage, before)
    resumed = next(e for e in events if e["event"] == "watch_resumed")
    assert resumed["details"]["checks_so_far"] >= 1
    checks = [e["details"]["check"] for e in events if e["event"] == "watch_check"]
    assert checks == list(range(1, len(checks) + 1)) and len(checks) >= 3, checks  # numbering continues after the kill
    assert events[-1]["event"] == "watch_passed"
    tags = client.get_registered_model(stage.name).tags
    assert WATCH_TAG not in tags and GUARD_TAG not in tags and Routing.from_tags(tags) == Routing()
    state = wait_for_state(stage.served.url, lambda s: s.challenger is None, "champion only", 30)
    assert state.champion == "2" and alias_version(stage.name, "champion") == "2"
