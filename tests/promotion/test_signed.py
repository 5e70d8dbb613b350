"""Decisions signed with the promotion key, against someone with MLflow write access but not the key.

The stage's service verifies each champion switch and routing record: an alias or
routing tag changed behind the platform's back is not served, shows on /metrics and
/readyz, makes `slipway history` and the promote flow refuse, and is audited. An
operator holding the key repairs it with the signed, audited break-glass switch.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from prefect.events.filters import EventFilter, EventNameFilter

from models.registry import alias_version
from models.routing import Mode, Routing
from slipway.audit import AuditLog
from slipway.catalog import TAMPERED_EVENT
from slipway.processes import answers, free_port, running_server
from slipway.service_metrics import read_state, wait_for_replicas, wait_for_state
from tests.conftest import REPO
from tests.promotion.conftest import Stage
from tests.promotion.test_promote import EXIT_REFUSED, LENIENT, audit_length, finish, served_versions

pytestmark = pytest.mark.e2e


def slipway(stage: Stage, *args: str, params: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "flows.cli", *args, "--params", str(params or stage.params())]
    env = {**stage.served.env, "PREFECT_API_URL": stage.prefect_url}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def alerted(stage: Stage, text: str, timeout: float = 30) -> bool:
    """Whether the server stored a tampering event whose summary says ``text`` (events are persisted asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with stage.prefect() as client:
            events = client.read_events(EventFilter(event=EventNameFilter(name=[TAMPERED_EVENT])), limit=20).events
        if any(text in str(e.payload.get("summary")) for e in events):
            return True
        time.sleep(1)
    return False


def readyz(stage: Stage) -> dict[str, object]:
    response = httpx.get(f"{stage.served.url}/readyz", timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_an_alias_moved_with_mlflow_write_access_is_not_served_and_is_refused_reported_and_repaired(stage: Stage) -> None:
    stage.reset(champion="1", challenger="2")
    before = audit_length(stage)
    stage.served.client().set_registered_model_alias(stage.name, "champion", "2")  # no promotion key needed for this
    state = wait_for_state(stage.served.url, lambda s: s.unverified, "the unsigned alias reported", 30)
    assert state.champion == "1"
    assert served_versions(stage) == {"1"}
    assert readyz(stage)["unverified"] == ["the champion alias is v2, the signed champion v1"]

    history = slipway(stage, "history")
    assert history.returncode == 1, history.stdout + history.stderr
    assert "DISAGREEMENT: not signed: the champion alias is v2, the signed champion v1" in history.stdout

    promote = subprocess.run(  # a promotion decided on top of a tampered registry is refused, audited and alerted
        [sys.executable, "-m", "flows.cli", "run", "promote", "--params", str(stage.params()), "requested_by=alice"],
        cwd=REPO,
        env={**stage.served.env, "PREFECT_API_URL": stage.prefect_url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert promote.returncode == EXIT_REFUSED, promote.stdout + promote.stderr
    assert "disagrees with the signed decision" in promote.stdout + promote.stderr
    audited = [e for e in AuditLog(stage.served.home.audit_log).entries()[before:] if e["event"] == "registry_unverified"]
    assert len(audited) == 1 and "the champion alias is v2" in audited[0]["details"]["problems"][0]
    assert alerted(stage, "the champion alias is v2")

    switched = slipway(stage, "run", "switch", "version=1", "reason=restore the signed champion", "requested_by=ops")
    assert switched.returncode == 0, switched.stdout + switched.stderr
    assert alias_version(stage.name, "champion") == "1"
    wait_for_state(stage.served.url, lambda s: not s.unverified and s.champion == "1", "the registry repaired", 30)
    assert readyz(stage)["unverified"] == []
    log = AuditLog(stage.served.home.audit_log)
    log.verify()
    switch = [e for e in log.entries()[before:] if e["event"] in ("champion_switch", "switch_applied")]
    assert [e["event"] for e in switch] == ["champion_switch", "switch_applied"]
    assert switch[0]["actor"] == "ops" and "break-glass switch: restore the signed champion" in switch[0]["details"]["reason"]


def test_routing_tags_rewritten_without_the_key_send_no_traffic_to_the_challenger(stage: Stage) -> None:
    stage.reset(champion="1", challenger="2")
    client = stage.served.client()
    for key, value in Routing(Mode.CANARY, 100, "2").to_tags().items():
        client.set_registered_model_tag(stage.name, key, value)
    state = wait_for_state(stage.served.url, lambda s: s.unverified, "the unsigned routing reported", 30)
    assert state.challenger is None and state.canary_percent == 0
    for _ in range(3):
        assert served_versions(stage) == {"1"}
        time.sleep(0.5)
    assert "the routing tags say canary 100% v2" in str(readyz(stage)["unverified"])
    stage.reset(champion="1", challenger="2")
    wait_for_state(stage.served.url, lambda s: not s.unverified, "signed routing again", 30)


def test_the_break_glass_switch_is_signed_audited_and_refuses_what_cannot_be_loaded(stage: Stage) -> None:
    stage.reset(champion="1", challenger="2")
    refused = slipway(stage, "run", "switch", "version=99", "reason=typo")
    assert refused.returncode != 0 and "v99 cannot be loaded" in refused.stdout + refused.stderr
    no_reason = slipway(stage, "run", "switch", "version=2")
    assert no_reason.returncode != 0 and "reason=TEXT" in no_reason.stdout + no_reason.stderr
    unsigned_env = {k: v for k, v in stage.served.env.items() if k != "SLIPWAY_PROMOTION_KEY"}
    unkeyed = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "switch", "--params", str(stage.params()), "version=2", "reason=x"],
        cwd=REPO,
        env={**unsigned_env, "PREFECT_API_URL": stage.prefect_url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert unkeyed.returncode != 0 and "SLIPWAY_PROMOTION_KEY is not set" in unkeyed.stdout + unkeyed.stderr
    assert read_state(stage.served.url).champion == "1"

    done = slipway(stage, "run", "switch", "version=2", "reason=emergency: v1 scores a broken feed", "requested_by=ops")
    assert done.returncode == 0, done.stdout + done.stderr
    state = wait_for_state(stage.served.url, lambda s: s.champion == "2", "the switched champion", 30)
    assert not state.unverified and served_versions(stage) == {"2"}
    stage.reset(champion="1", challenger="2")


def test_routing_counts_only_once_every_replica_confirms_it(stage: Stage, tmp_path: Path) -> None:
    stage.reset(champion="1", challenger="2")
    port = free_port()
    second = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).parent / "bentoml"), "serve", "bentos.service:Scoring", "--port", str(port)]
    command += ["--host", "127.0.0.1"]
    both = [stage.served.url, second]
    # its own BENTOML_HOME: `bentoml serve` empties the Prometheus directory under it at start, which would freeze
    # the first replica's /metrics at whatever the second one last wrote
    env = {**stage.served.env, "BENTOML_HOME": str(tmp_path / "bentoml")}
    with running_server(command, answers(f"{second}/readyz"), tmp_path / "replica.log", env=env, cwd=REPO):
        stage.sign("1", Routing(Mode.SHADOW, version="2"))
        wait_for_replicas(both, lambda s: s.challenger == "2" and s.shadow, "shadow of v2 on both replicas", 30)
        assert read_state(stage.served.url).decision_seq == read_state(second).decision_seq > 0  # the same decision
        stage.sign("1", Routing())
        wait_for_replicas(both, lambda s: s.challenger is None, "champion only on both replicas", 30)
    # the second replica is gone: a promotion that must confirm routing on it does not go on without it
    params = stage.params(replica_urls=both, **LENIENT)
    code, out = finish(stage.start_promote(params, "requested_by=alice"))
    assert code != 0 and f"scoring service at {second} did not answer /metrics" in out, out
    assert alias_version(stage.name, "champion") == "1" and read_state(stage.served.url).challenger is None
