"""The router with a promotion key: it serves only signed decisions, and reports what in the registry is not.

Each case is what someone with MLflow write access (but not the promotion key) can do:
move the champion alias, rewrite the routing tags, forge or replay the decision record.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bentos.router import Bundled, LoadedModel, ModelRouter
from models import decision
from models.decision import DECISION_TAG, Decision
from models.routing import Mode, Routing
from slipway import signing
from tests.bentos.stubs import Linear, model
from tests.bentos.test_router import FakeRegistry

KEY = signing.new_private_key()
MALLORY = signing.new_private_key()


CHAMPION_ONLY = Routing()


def signed_registry(champion: str, routing: Routing = CHAMPION_ONLY, seq: int = 10) -> FakeRegistry:
    registry = FakeRegistry()
    publish(registry, champion, routing, seq)
    return registry


def publish(
    registry: FakeRegistry, champion: str, routing: Routing = CHAMPION_ONLY, seq: int = 10, key: Ed25519PrivateKey = KEY
) -> None:
    """What the promote flow writes: the signed record, then the readable mirrors."""
    registry.tags[DECISION_TAG] = Decision("m", champion, routing, seq).signed(key)
    registry.aliases["champion"] = champion
    registry.tags.update(routing.to_tags())


def router(registry: FakeRegistry) -> ModelRouter:
    return ModelRouter("m", 3600, read=registry.read, load=registry.load, poll=False, verify_key=KEY.public_key())


def served(r: ModelRouter) -> tuple[str | None, str | None, Mode, int]:
    snap = r.refresh()
    return (
        snap.champion.version if snap.champion else None,
        snap.challenger.version if snap.challenger else None,
        snap.routing.mode,
        snap.routing.canary_percent,
    )


def test_signed_decisions_are_followed_and_nothing_is_reported() -> None:
    registry = signed_registry("1")
    r = router(registry)
    assert served(r) == ("1", None, Mode.CHAMPION, 0)
    publish(registry, "1", Routing(Mode.CANARY, 50, "2"), seq=11)
    assert served(r) == ("1", "2", Mode.CANARY, 50)
    publish(registry, "2", seq=12)
    assert served(r) == ("2", None, Mode.CHAMPION, 0) and r.snapshot.unverified == ()
    assert r.snapshot.decision_seq == 12


def test_a_champion_alias_moved_behind_the_platforms_back_is_not_served_and_is_reported() -> None:
    registry = signed_registry("1")
    r = router(registry)
    registry.aliases["champion"] = "2"  # MlflowClient().set_registered_model_alias(...), without the key
    assert served(r)[0] == "1"
    first = r.snapshot.unverified  # one read: perhaps the flow between its two writes, not reported yet
    assert served(r)[0] == "1"
    assert first == () and r.snapshot.unverified == ("the champion alias is v2, the signed champion v1",)
    assert registry.loads == ["1"]  # v2 was never even loaded


def test_routing_tags_rewritten_without_the_key_send_no_traffic_to_the_challenger() -> None:
    registry = signed_registry("1")
    r = router(registry)
    registry.tags.update(Routing(Mode.CANARY, 100, "2").to_tags())
    served(r)
    assert served(r) == ("1", None, Mode.CHAMPION, 0)
    assert "the routing tags say canary 100% v2" in r.snapshot.unverified[0]


@pytest.mark.parametrize(
    "forge",
    [
        lambda reg: reg.tags.__setitem__(DECISION_TAG, Decision("m", "2", seq=99).signed(MALLORY)),  # another key
        lambda reg: reg.tags.__setitem__(DECISION_TAG, Decision("other", "2", seq=99).signed(KEY)),  # another model's
        lambda reg: reg.tags.__setitem__(DECISION_TAG, "garbage"),
        lambda reg: reg.tags.pop(DECISION_TAG),
        lambda reg: reg.tags.__setitem__(  # the payload altered under a valid signature
            DECISION_TAG, _swap_payload(reg.tags[DECISION_TAG], Decision("m", "2", seq=99))
        ),
    ],
    ids=["other-key", "other-model", "garbage", "deleted", "altered"],
)
def test_a_forged_or_deleted_decision_keeps_the_last_verified_one(forge: Callable[[FakeRegistry], object]) -> None:
    registry = signed_registry("1")
    r = router(registry)
    forge(registry)
    registry.aliases["champion"] = "2"
    served(r)
    assert served(r)[0] == "1"
    assert r.snapshot.unverified and any(DECISION_TAG in line for line in r.snapshot.unverified)


def _swap_payload(text: str, other: Decision) -> str:
    forged = other.signed(KEY).split(".")[0]
    return f"{forged}.{text.split('.')[1]}"


def test_a_replayed_older_decision_is_refused() -> None:
    registry = signed_registry("1", seq=10)
    old = registry.tags[DECISION_TAG]
    r = router(registry)
    publish(registry, "2", seq=20)
    assert served(r)[0] == "2"
    registry.tags[DECISION_TAG], registry.aliases["champion"] = old, "1"  # the old signed record, put back
    served(r)
    assert served(r)[0] == "2"
    assert any("a replay" in line for line in r.snapshot.unverified)


def test_a_replica_started_on_a_forged_registry_serves_nothing() -> None:
    registry = FakeRegistry()
    registry.tags[DECISION_TAG] = Decision("m", "1").signed(MALLORY)
    r = router(registry)
    assert r.snapshot.champion is None and "not signed by the promotion key" in r.snapshot.unverified[0]


def test_a_signed_lease_that_ran_out_is_champion_only() -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    registry = signed_registry("1", Routing(Mode.CANARY, 50, "2", past))
    r = router(registry)
    assert served(r) == ("1", None, Mode.CHAMPION, 0) and r.snapshot.lease_expired
    assert r.snapshot.unverified == ()


def test_the_signing_key_must_match_the_configured_public_key(monkeypatch: pytest.MonkeyPatch) -> None:
    configured = signing.public_text(KEY.public_key())
    monkeypatch.setenv(decision.KEY_ENV, signing.private_pem(MALLORY))
    with pytest.raises(signing.KeyProblem, match=r"not the private half of promotion\.decision_key"):
        decision.signer(configured)
    monkeypatch.setenv(decision.KEY_ENV, signing.private_pem(KEY))
    assert decision.signer(configured) is not None
    assert decision.signer("") is None  # no decision key configured: unsigned
    monkeypatch.delenv(decision.KEY_ENV)
    with pytest.raises(signing.KeyProblem, match="SLIPWAY_PROMOTION_KEY is not set"):
        decision.signer(configured)


def bundled(version: str, text: str | None, alias: str = "champion") -> Bundled:
    """A version packaged in the Bento, with the signed decision packaged beside it."""
    return Bundled(version, alias, text, lambda: model(version, Linear(0.0)))


def started_while_down(registry: FakeRegistry, bundle: list[Bundled], key: Ed25519PrivateKey | None = KEY) -> ModelRouter:
    registry.down = True
    return ModelRouter(
        "m",
        3600,
        read=registry.read,
        load=registry.load,
        poll=False,
        verify_key=key.public_key() if key else None,
        bundle=lambda: bundle,
    )


def test_a_replica_started_while_the_registry_is_down_serves_the_bundled_champion_then_follows_the_registry() -> None:
    registry = signed_registry("1", seq=10)
    r = started_while_down(registry, [bundled("1", registry.tags[DECISION_TAG]), bundled("2", None, "challenger")])
    snap = r.snapshot
    assert snap.from_bundle and snap.champion is not None and snap.champion.version == "1" and snap.challenger is None
    assert snap.decision_seq == 10 and r.last_error is not None and registry.loads == []  # nothing from the registry
    publish(registry, "2", seq=11)
    registry.down = False
    assert served(r) == ("2", None, Mode.CHAMPION, 0) and not r.snapshot.from_bundle and r.last_error is None


def test_the_bundle_is_refused_when_its_decision_is_forged_missing_or_names_another_version() -> None:
    registry = signed_registry("1")
    forged = Decision("m", "1", CHAMPION_ONLY, 99).signed(MALLORY)
    other = Decision("m", "2", CHAMPION_ONLY, 12).signed(KEY)
    for bundle in ([bundled("1", forged)], [bundled("1", None)], [bundled("1", other)], [bundled("1", "garbage")]):
        r = started_while_down(signed_registry("1"), bundle)
        assert r.snapshot.champion is None and not r.snapshot.from_bundle  # /readyz stays 503: nothing verified
    assert registry.loads == []


def test_the_newest_signed_bundle_wins_and_an_older_registry_record_is_a_replay() -> None:
    registry = signed_registry("1", seq=10)
    old = registry.tags[DECISION_TAG]
    newer = Decision("m", "2", CHAMPION_ONLY, 20).signed(KEY)
    r = started_while_down(registry, [bundled("2", newer), bundled("1", old)])
    assert r.snapshot.champion is not None and r.snapshot.champion.version == "2" and r.snapshot.decision_seq == 20
    registry.down = False  # the registry still holds #10 (put back, or never updated): not served over #20
    assert served(r)[0] == "2" and served(r)[0] == "2"
    assert any("older than #20" in reason for reason in r.snapshot.unverified)


def test_without_signing_the_newest_bundled_champion_serves_and_the_bundle_is_tried_once() -> None:
    registry = FakeRegistry()
    calls: list[int] = []

    def bundle() -> list[Bundled]:
        calls.append(1)
        return [bundled("3", None)]

    registry.down = True
    r = ModelRouter("m", 3600, read=registry.read, load=registry.load, poll=False, bundle=bundle)
    assert r.snapshot.champion is not None and r.snapshot.champion.version == "3" and r.snapshot.from_bundle
    r.refresh()
    assert calls == [1]
    registry.down = False
    assert served(r)[0] == "1" and not r.snapshot.from_bundle  # the registry's champion once it answers


def test_a_bundle_that_cannot_be_loaded_leaves_the_replica_waiting_for_the_registry() -> None:
    def broken() -> LoadedModel:
        raise OSError("bundled artifact missing")

    registry = signed_registry("1")
    r = started_while_down(registry, [Bundled("1", "champion", registry.tags[DECISION_TAG], broken)])
    assert r.snapshot.champion is None
    registry.down = False
    assert served(r)[0] == "1"
