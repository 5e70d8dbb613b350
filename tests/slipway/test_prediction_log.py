"""The prediction log in-process: what is appended is what the monitor reads back; a full queue drops and counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from slipway.prediction_log import COLUMNS, PredictionLog, read_batch_log, read_prediction_log


def record(i: int, when: datetime) -> dict[str, object]:
    return {
        "request_id": f"r{i}",
        "time": when,
        "entity": f"L{i}",
        "features": {"page_views": i, "region": "emea"},
        "route": "champion",
        "served_version": "1",
        "score": i / 10,
        "shadow_version": None,
        "shadow_score": None,
        "latency_ms": 1.5,
        "error": None,
    }


def test_appended_records_round_trip_through_parquet(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_seconds=3600)  # flushed by hand below
    now = datetime.now(UTC)
    for i in range(5):
        log.append(record(i, now))
    assert log.flush() == 5 and log.flush() == 0
    log.close()
    frame = read_prediction_log(tmp_path)
    assert list(frame.columns) == COLUMNS and frame["request_id"].tolist() == [f"r{i}" for i in range(5)]
    assert frame["score"].tolist() == [0.0, 0.1, 0.2, 0.3, 0.4] and frame["features"][3] == '{"page_views": 3, "region": "emea"}'
    assert len(list(tmp_path.glob(f"date={now:%Y-%m-%d}/part-*.parquet"))) == 1


def test_since_filters_by_time_and_an_empty_log_has_the_columns(tmp_path: Path) -> None:
    assert list(read_prediction_log(tmp_path).columns) == COLUMNS
    log = PredictionLog(tmp_path, flush_seconds=3600)
    now = datetime.now(UTC)
    log.append(record(0, now - timedelta(hours=2)))
    log.append(record(1, now))
    log.flush()
    log.close()
    recent = read_prediction_log(tmp_path, now - timedelta(minutes=1))
    assert recent["request_id"].tolist() == ["r1"]
    assert pd.to_datetime(recent["time"], utc=True).iloc[0] == pd.Timestamp(now)


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_seconds=3600, max_queue=2)
    now = datetime.now(UTC)
    for i in range(5):
        log.append(record(i, now))
    assert log.dropped == 3 and log.flush() == 2
    log.close()


def test_close_writes_what_is_queued(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path, flush_seconds=3600)
    log.append(record(0, datetime.now(UTC)))
    log.close()
    assert read_prediction_log(tmp_path)["request_id"].tolist() == ["r0"]


def test_the_batch_log_is_read_by_day_and_time(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    old = pd.DataFrame({"page_views": [1.0], "entity": ["L0"], "score": [0.1], "time": [now - timedelta(days=3)]})
    new = pd.DataFrame({"page_views": [2.0], "entity": ["L1"], "score": [0.2], "time": [now]})
    for frame, when in ((old, now - timedelta(days=3)), (new, now)):
        target = tmp_path / f"date={when:%Y-%m-%d}" / "run-part-00000.parquet"
        target.parent.mkdir(parents=True)
        frame.to_parquet(target)
    assert read_batch_log(tmp_path)["entity"].tolist() == ["L0", "L1"]
    assert read_batch_log(tmp_path, now - timedelta(hours=1), ["entity", "time"])["entity"].tolist() == ["L1"]
    assert read_batch_log(tmp_path / "nothing", now, ["entity"]).columns.tolist() == ["entity"]
