"""The retraining cooldown: of a burst of starts, exactly one claims it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from slipway.cooldown import claim, current, release


def test_a_second_start_within_the_cooldown_is_refused_and_names_the_first(tmp_path: Path) -> None:
    marker, first = tmp_path / "reports" / "last_retrain.json", datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert claim(marker, 600, "drift", now=first) is None
    assert claim(marker, 600, "drift", now=first + timedelta(seconds=599)) == first.isoformat()
    assert claim(marker, 600, "scheduled", now=first + timedelta(seconds=600)) is None  # cooled down


def test_a_burst_of_simultaneous_starts_claims_once(tmp_path: Path) -> None:
    marker = tmp_path / "last_retrain.json"
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: claim(marker, 3600, f"event {i}"), range(16)))
    assert results.count(None) == 1 and len(set(r for r in results if r)) == 1


def test_no_cooldown_claims_every_time(tmp_path: Path) -> None:
    marker = tmp_path / "last_retrain.json"
    assert [claim(marker, 0, "x") for _ in range(3)] == [None, None, None]


def test_a_failed_retraining_gives_its_claim_back(tmp_path: Path) -> None:
    marker, first = tmp_path / "last_retrain.json", datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert claim(marker, 600, "scheduled", now=first) is None
    later = first + timedelta(seconds=900)
    assert claim(marker, 600, "drift", now=later) is None
    assert release(marker, later.isoformat())  # the drift retraining failed
    assert current(marker) == first.isoformat()  # the last one that went ahead is in force again
    assert claim(marker, 600, "drift again", now=later + timedelta(seconds=1)) is None  # not ignored for 10 minutes
    assert not release(marker, later.isoformat())  # a stale release never removes a newer claim


def test_releasing_the_only_claim_leaves_none(tmp_path: Path) -> None:
    marker, now = tmp_path / "last_retrain.json", datetime(2026, 5, 1, 12, tzinfo=UTC)
    assert claim(marker, 600, "drift", now=now) is None
    assert release(marker, now.isoformat()) and current(marker) is None
    assert claim(marker, 600, "drift", now=now) is None
