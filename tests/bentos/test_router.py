"""The router in-process: it follows the registry, and keeps the last good snapshot when the registry fails."""

from __future__ import annotations

from datetime import UTC, datetime

from bentos.router import LoadedModel, ModelRouter, RegistryView, Snapshot
from models.routing import Mode, Routing
from tests.bentos.stubs import Linear, model


class FakeRegistry:
    """Aliases and tags as the poller reads them, with a switch to make the registry unreachable."""

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {"champion": "1"}
        self.tags: dict[str, str] = {}
        self.down = False
        self.loads: list[str] = []
        self.unloadable: set[str] = set()

    def read(self) -> RegistryView:
        if self.down:
            raise ConnectionError("registry database is unreachable")
        return dict(self.aliases), dict(self.tags)

    def load(self, version: str) -> LoadedModel:
        self.loads.append(version)
        if version in self.unloadable:
            raise ValueError(f"artifact of v{version} is corrupt")
        return model(version, Linear(0.0))


def router(registry: FakeRegistry, published: list[Snapshot] | None = None) -> ModelRouter:
    sink = published.append if published is not None else (lambda _: None)
    return ModelRouter("m", 3600, sink, read=registry.read, load=registry.load, poll=False)


def test_follows_aliases_and_routing_and_loads_each_version_once() -> None:
    registry, published = FakeRegistry(), list[Snapshot]()
    r = router(registry, published)
    assert r.snapshot.champion is not None and r.snapshot.champion.version == "1" and r.snapshot.challenger is None
    registry.aliases["challenger"] = "2"
    registry.tags.update(Routing(Mode.CANARY, 50).to_tags())
    snap = r.refresh()
    assert snap.challenger is not None and snap.challenger.version == "2" and snap.routing == Routing(Mode.CANARY, 50)
    r.refresh()
    assert registry.loads == ["1", "2"]  # cached, not reloaded on every poll
    assert [s.routing.mode for s in published] == [Mode.CHAMPION, Mode.CANARY, Mode.CANARY]


def test_a_routing_record_naming_a_version_serves_that_version_not_the_moving_alias() -> None:
    registry = FakeRegistry()
    registry.aliases["challenger"] = "2"
    registry.tags.update(Routing(Mode.SHADOW, version="3").to_tags())  # e.g. a watch shadowing the previous champion
    snap = router(registry).snapshot
    assert snap.challenger is not None and snap.challenger.version == "3" and snap.routing == Routing(Mode.SHADOW, 0, "3")
    registry.tags.update(Routing(Mode.CANARY, 20, "2").to_tags())
    registry.aliases["challenger"] = "4"  # a training run moved the alias during the canary
    snap = router(registry).snapshot
    assert snap.challenger is not None and snap.challenger.version == "2"


def test_a_routing_record_whose_lease_ran_out_is_champion_only() -> None:
    registry, now = FakeRegistry(), datetime.now(UTC)
    registry.aliases["challenger"] = "2"
    registry.tags.update(Routing(Mode.CANARY, 50, "2").leased(30, now).to_tags())
    r = router(registry)
    assert r.snapshot.routing.mode is Mode.CANARY and not r.snapshot.lease_expired
    registry.tags.update(Routing(Mode.CANARY, 50, "2").leased(-1, now).to_tags())  # the promote flow stopped renewing
    snap = r.refresh()
    assert snap.routing == Routing() and snap.challenger is None and snap.lease_expired
    registry.tags.update(Routing(Mode.CANARY, 50, "2").leased(30).to_tags())  # a live flow renews it again
    assert r.refresh().routing.mode is Mode.CANARY and not r.snapshot.lease_expired


def test_an_unreachable_registry_keeps_the_last_good_snapshot() -> None:
    registry = FakeRegistry()
    registry.aliases["challenger"] = "2"
    registry.tags.update(Routing(Mode.SHADOW).to_tags())
    r = router(registry)
    good = r.snapshot
    registry.down = True
    assert r.refresh() is good and r.last_error is not None and "unreachable" in r.last_error
    registry.down = False
    r.refresh()
    assert r.last_error is None


def test_routing_without_a_loadable_challenger_is_champion_only() -> None:
    registry = FakeRegistry()
    registry.aliases["challenger"] = "2"
    registry.unloadable.add("2")
    registry.tags.update(Routing(Mode.CANARY, 100).to_tags())
    snap = router(registry).snapshot
    assert snap.champion is not None and snap.challenger is None and snap.routing == Routing()
    registry.aliases["challenger"] = "1"  # challenger alias on the champion: nothing to route to
    registry.unloadable.clear()
    assert router(registry).snapshot.routing == Routing()


def test_a_retired_version_leaves_the_cache() -> None:
    registry = FakeRegistry()
    r = router(registry)
    registry.aliases["champion"] = "2"
    r.refresh()
    registry.aliases["champion"] = "1"
    r.refresh()
    assert registry.loads == ["1", "2", "1"]  # v1 was dropped when v2 took over, so it is loaded again


def test_a_champion_that_cannot_be_loaded_keeps_the_last_one_and_is_named_in_the_error() -> None:
    registry = FakeRegistry()
    r = router(registry)
    registry.aliases["champion"] = "2"
    registry.unloadable.add("2")
    snap = r.refresh()
    assert snap.champion is not None and snap.champion.version == "1"  # the last loaded champion keeps serving
    assert r.last_error == "loading v2: ValueError: artifact of v2 is corrupt"
    registry.down = True
    r.refresh()
    assert r.last_error == "ConnectionError: registry database is unreachable"  # a read failure names no version
    registry.down = False
    registry.unloadable.clear()
    back = r.refresh().champion
    assert back is not None and back.version == "2" and r.last_error is None
