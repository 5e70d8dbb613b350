from models.routing import CANARY_TAG, LEASE_TAG, MODE_TAG, VERSION_TAG, Mode, Routing, bucket, serves_challenger


def test_canary_share_is_sticky_and_close_to_the_percentage() -> None:
    routing = Routing(Mode.CANARY, 10)
    keys = [f"L{i:06d}" for i in range(20_000)]
    chosen = [serves_challenger(routing, k) for k in keys]
    assert 0.09 < sum(chosen) / len(keys) < 0.11
    assert chosen == [serves_challenger(routing, k) for k in keys]  # deterministic
    wider = Routing(Mode.CANARY, 50)
    assert all(serves_challenger(wider, k) for k, c in zip(keys, chosen, strict=True) if c)  # 10% ⊂ 50%


def test_buckets_are_in_range() -> None:
    assert {bucket(str(i)) for i in range(5000)} == set(range(100))


def test_routing_record_round_trips_and_bad_records_fall_back() -> None:
    assert Routing.from_tags(Routing(Mode.CANARY, 25).to_tags()) == Routing(Mode.CANARY, 25)
    assert Routing.from_tags({MODE_TAG: "shadow"}) == Routing(Mode.SHADOW, 0)
    assert Routing.from_tags({}) == Routing()
    assert Routing.from_tags({MODE_TAG: "sideways"}) == Routing()
    assert Routing.from_tags({MODE_TAG: "canary", CANARY_TAG: "250"}) == Routing()
    assert not serves_challenger(Routing(Mode.SHADOW), "x")


def test_routing_tags_round_trip_and_junk_falls_back_to_champion_only() -> None:
    for routing in (Routing(), Routing(Mode.SHADOW), Routing(Mode.SHADOW, 0, "7"), Routing(Mode.CANARY, 50, "12")):
        assert Routing.from_tags(routing.to_tags()) == routing
    leased = Routing(Mode.CANARY, 50, "12").leased(60)
    assert Routing.from_tags(leased.to_tags()) == leased and not leased.expired()
    assert Routing.from_tags({**leased.to_tags(), LEASE_TAG: "tomorrow"}) == Routing()  # an unreadable lease serves nothing
    assert Routing.from_tags({**leased.to_tags(), LEASE_TAG: "2030-01-01T00:00:00"}) == Routing()  # no zone: unreadable
    junk = {**Routing(Mode.CANARY, 50).to_tags(), VERSION_TAG: "../../etc"}
    assert Routing.from_tags(junk) == Routing(Mode.CANARY, 50)
    assert Routing.from_tags({MODE_TAG: "canary", CANARY_TAG: "0"}) == Routing()
