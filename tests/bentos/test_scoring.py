"""The service's scoring logic in-process, with stub models: routing, fallback, log records."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from bentos.router import Snapshot
from bentos.scoring import NonFiniteScore, log_records, score_rows
from models.routing import Mode, Routing, serves_challenger
from tests.bentos.stubs import Broken, Linear, model

ROWS = [{"x": i} for i in range(200)]
KEYS = [f"L{i:05d}" for i in range(200)]


def test_champion_only_scores_every_row_with_the_champion_in_one_call() -> None:
    champion = Linear(0.1)
    scored = score_rows(Snapshot(model("1", champion)), ROWS, KEYS, KEYS)
    assert scored.versions == ["1"] * 200 and scored.route == "champion"
    assert np.allclose(scored.scores, [0.1 + i / 100 for i in range(200)])
    assert champion.calls == 1 and scored.errors == [None] * 200


def test_canary_serves_the_hashed_share_and_each_key_stays_on_its_side() -> None:
    routing = Routing(Mode.CANARY, 30)
    snap = Snapshot(model("1", Linear(0.0)), model("2", Linear(0.5)), routing)
    scored = score_rows(snap, ROWS, KEYS, KEYS)
    expected = ["2" if serves_challenger(routing, k) else "1" for k in KEYS]
    assert scored.versions == expected and 30 < expected.count("2") < 90
    assert all(s >= 0.5 for s, v in zip(scored.scores, scored.versions, strict=True) if v == "2")
    again = score_rows(snap, list(reversed(ROWS)), list(reversed(KEYS)), KEYS)
    assert again.versions == list(reversed(expected))  # sticky: the key decides, not the position


def test_a_failing_challenger_is_answered_by_the_champion_and_counted() -> None:
    counted: list[tuple[str, int]] = []
    snap = Snapshot(model("1", Linear(0.0)), model("2", Broken()), Routing(Mode.CANARY, 100))
    scored = score_rows(snap, ROWS[:5], KEYS[:5], KEYS[:5], lambda v, n: counted.append((v, n)))
    assert scored.versions == ["1"] * 5 and counted == [("2", 5)]
    assert all(e and e.startswith("v2: ValueError: feature shape mismatch") for e in scored.errors)
    assert np.allclose(scored.scores, [i / 100 for i in range(5)])


def test_shadow_serves_the_champion_only() -> None:
    challenger = Linear(0.5)
    scored = score_rows(Snapshot(model("1", Linear(0.0)), model("2", challenger), Routing(Mode.SHADOW)), ROWS, KEYS, KEYS)
    assert set(scored.versions) == {"1"} and scored.route == "shadow" and challenger.calls == 0


def test_a_failing_champion_or_none_at_all_fails_the_call() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        score_rows(Snapshot(model("1", Broken())), ROWS[:1], KEYS[:1], KEYS[:1])
    with pytest.raises(LookupError):
        score_rows(Snapshot(), ROWS[:1], KEYS[:1], KEYS[:1])


def test_a_non_finite_score_is_never_returned() -> None:
    rows = [{"x": 1.0}, {"x": float("inf")}, {"x": 2.0}, {"x": float("nan")}]
    keys = KEYS[:4]
    with pytest.raises(NonFiniteScore, match=r"v1 gives no finite score for rows\[1\], rows\[3\]"):
        score_rows(Snapshot(model("1", Linear(0.0))), rows, keys, keys)
    counted: list[tuple[str, int]] = []
    snap = Snapshot(model("1", Linear(0.0)), model("2", Linear(0.0)), Routing(Mode.CANARY, 100))
    with pytest.raises(NonFiniteScore):  # the challenger's NaN falls back to the champion, whose NaN fails the call
        score_rows(snap, rows, keys, keys, lambda v, n: counted.append((v, n)))
    assert counted == [("2", 4)]


def test_log_records_carry_what_the_monitor_reads() -> None:
    scored = score_rows(Snapshot(model("3", Linear(0.2))), ROWS[:2], ["e1", "e2"], ["r-0", "r-1"])
    now = datetime.now(UTC)
    records = log_records(scored, ROWS[:2], ["e1", "e2"], 0.004, now)
    assert [r["entity"] for r in records] == ["e1", "e2"] and [r["request_id"] for r in records] == ["r-0", "r-1"]
    first = records[0]
    assert first["features"] == {"x": 0} and first["served_version"] == "3" and first["score"] == pytest.approx(0.2)
    assert first["time"] == now and first["latency_ms"] == pytest.approx(4.0) and first["shadow_score"] is None
    assert log_records(scored, ROWS[:2], None, 0.0, now)[0]["entity"] is None  # raw rows have no entity
