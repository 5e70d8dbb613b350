"""The shadow batcher in-process: micro-batches per version, never blocks, overflow logs without a shadow score."""

from __future__ import annotations

from typing import Any

from bentos.shadow import ShadowBatcher
from tests.bentos.stubs import Broken, Linear, model

Record = dict[str, Any]


def records(n: int, start: int = 0) -> list[Record]:
    return [{"request_id": f"r{i}", "shadow_version": None, "shadow_score": None, "error": None} for i in range(start, start + n)]


def test_pending_requests_are_scored_in_one_call_per_version() -> None:
    sunk: list[list[Record]] = []
    batcher = ShadowBatcher(sunk.append, interval=3600)  # the thread sleeps; the test drains by hand
    challenger = Linear(0.5)
    for i in range(3):
        batcher.submit(model("2", challenger), [{"x": i}], records(1, i))
    assert batcher.drain() == 3 and challenger.calls == 1
    flat = [r for batch in sunk for r in batch]
    assert [r["shadow_score"] for r in flat] == [0.5, 0.51, 0.52] and {r["shadow_version"] for r in flat} == {"2"}
    batcher.close()


def test_a_full_queue_logs_the_request_at_once_without_a_shadow_score() -> None:
    sunk: list[list[Record]] = []
    batcher = ShadowBatcher(sunk.append, interval=3600, max_rows=2)
    batcher.submit(model("2", Linear(0.5)), [{"x": 1}], records(1))
    batcher.submit(model("2", Linear(0.5)), [{"x": 2}, {"x": 3}], records(2, 1))  # 3 rows pending > 2: overflow
    assert batcher.skipped == 2 and len(sunk) == 1 and all(r["shadow_score"] is None for r in sunk[0])
    batcher.drain()
    assert sunk[1][0]["shadow_score"] == 0.51  # the queued one is still scored: nothing is lost
    batcher.submit(model("2", Linear(0.5)), [{"x": 2}, {"x": 3}], records(2, 1))  # drained: room again
    assert batcher.skipped == 2
    batcher.close()


def test_the_bound_is_in_rows_not_requests() -> None:
    sunk: list[list[Record]] = []
    batcher = ShadowBatcher(sunk.append, interval=3600, max_rows=1000)
    big = [{"x": i} for i in range(1000)]
    batcher.submit(model("2", Linear(0.0)), big, records(1000))
    batcher.submit(model("2", Linear(0.0)), [{"x": 1}], records(1, 1000))  # one more row: over the bound
    assert batcher.skipped == 1
    assert batcher.drain() == 1000
    batcher.close()


def test_a_failing_challenger_marks_the_records_and_keeps_them() -> None:
    sunk: list[list[Record]] = []
    batcher = ShadowBatcher(sunk.append, interval=3600)
    batcher.submit(model("3", Broken()), [{"x": 1}], records(1))
    batcher.drain()
    (record,) = sunk[0]
    assert record["shadow_version"] == "3" and record["shadow_score"] is None and "ValueError" in record["error"]
    batcher.close()


def test_close_drains_what_is_pending() -> None:
    sunk: list[list[Record]] = []
    batcher = ShadowBatcher(sunk.append, interval=3600)
    batcher.submit(model("2", Linear(0.0)), [{"x": 7}], records(1))
    batcher.close()
    assert sunk and sunk[0][0]["shadow_score"] == 0.07
