"""The prediction log in-process: typed round trip, compaction, crash states, damaged files, a full queue."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from slipway.prediction_log import (
    COLUMNS,
    DAMAGED_DIR,
    LogScan,
    PredictionLog,
    feature_frame,
    read_batch_log,
    read_prediction_log,
)

NUMERIC, CATEGORICAL = ["page_views", "sensor.temp"], ["region"]


def record(i: int, when: datetime) -> dict[str, object]:
    return {
        "request_id": f"r{i}",
        "time": when,
        "entity": f"L{i}",
        "features": {"page_views": i, "sensor.temp": None if i % 2 else 20.5 + i, "region": "emea" if i % 3 else None},
        "route": "champion",
        "served_version": "1",
        "score": i / 10,
        "shadow_version": None,
        "shadow_score": None,
        "latency_ms": 1.5,
        "error": None,
    }


def new_log(directory: Path, **kwargs: int) -> PredictionLog:
    return PredictionLog(directory, NUMERIC, CATEGORICAL, flush_seconds=3600, **kwargs)  # flushed by hand


def write(log: PredictionLog, start: int, count: int, when: datetime) -> None:
    for i in range(start, start + count):
        log.append(record(i, when))
    assert log.flush() == count


def day_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("date=*/*.parquet"))


def test_appended_records_round_trip_as_typed_columns_read_directly_by_pandas_and_dask(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    now = datetime.now(UTC)
    write(log, 0, 5, now)
    assert log.flush() == 0
    log.close()
    frame = read_prediction_log(tmp_path)
    assert list(frame.columns) == [*COLUMNS, "feature.page_views", "feature.sensor.temp", "feature.region"]
    assert frame["request_id"].tolist() == [f"r{i}" for i in range(5)] and frame["score"].tolist() == [0.0, 0.1, 0.2, 0.3, 0.4]
    features = feature_frame(frame, [*NUMERIC, *CATEGORICAL])
    assert features["page_views"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert features["sensor.temp"].isna().tolist() == [False, True, False, True, False] and features["sensor.temp"][2] == 22.5
    assert features["region"].tolist() == [None, "emea", "emea", None, "emea"]
    schema = pq.read_schema(day_files(tmp_path)[0])  # declared types, no JSON
    assert str(schema.field("feature.page_views").type) == "double" and str(schema.field("feature.region").type) == "string"
    direct = pd.read_parquet(tmp_path)  # Hive-partitioned by day, no Slipway code needed
    assert sorted(direct["request_id"]) == [f"r{i}" for i in range(5)] and direct["feature.page_views"].sum() == 10
    assert dd.read_parquet(str(tmp_path / "date=*" / "*.parquet"))["feature.page_views"].sum().compute() == 10


def test_since_filters_by_time_and_an_empty_log_has_the_columns(tmp_path: Path) -> None:
    assert list(read_prediction_log(tmp_path).columns) == COLUMNS
    log = new_log(tmp_path)
    now = datetime.now(UTC)
    log.append(record(0, now - timedelta(hours=2)))
    log.append(record(1, now))
    log.flush()
    log.close()
    recent = read_prediction_log(tmp_path, now - timedelta(minutes=1))
    assert recent["request_id"].tolist() == ["r1"]
    assert pd.to_datetime(recent["time"], utc=True).iloc[0] == pd.Timestamp(now)
    assert read_prediction_log(tmp_path, now - timedelta(minutes=1), ["served_version"]).columns.tolist() == ["served_version"]


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    log = new_log(tmp_path, max_queue=2)
    now = datetime.now(UTC)
    for i in range(5):
        log.append(record(i, now))
    assert log.dropped == 3 and log.flush() == 2
    log.close()


def test_close_writes_what_is_queued(tmp_path: Path) -> None:
    log = new_log(tmp_path)
    log.append(record(0, datetime.now(UTC)))
    log.close()
    assert read_prediction_log(tmp_path)["request_id"].tolist() == ["r0"]


def test_compaction_merges_full_levels_into_few_files_keeping_every_row_once(tmp_path: Path) -> None:
    log = new_log(tmp_path, fan_in=4)
    now = datetime.now(UTC)
    for flush in range(21):
        write(log, flush * 10, 10, now)
        log.compact()
    log.close()
    names = [f.name.split("-")[0] for f in day_files(tmp_path)]
    # 21 flushes at fan-in 4: one file of level 2 (16 flushes), one of level 1 (4), one flush
    assert sorted(names) == ["L0", "L1", "L2"], names
    frame = read_prediction_log(tmp_path)
    assert sorted(frame["request_id"]) == sorted(f"r{i}" for i in range(210))
    assert frame["feature.page_views"].sum() == sum(range(210))


def test_a_full_level_merges_even_when_no_flush_came_since(tmp_path: Path) -> None:
    log = new_log(tmp_path, fan_in=4)
    now = datetime.now(UTC)
    for flush in range(16):
        write(log, flush * 10, 10, now)
    assert log.compact() == 16  # sixteen flushes: four files of level 1
    assert log.compact() == 4  # a restart, say: nothing new was flushed, level 1 is full
    assert [f.name.split("-")[0] for f in day_files(tmp_path)] == ["L2"] and len(read_prediction_log(tmp_path)) == 160
    log.close()


def test_files_written_under_other_settings_merge_without_losing_a_column(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    before = PredictionLog(tmp_path, [*NUMERIC, "retired"], CATEGORICAL, flush_seconds=3600, fan_in=2)  # an older release
    before.append({**record(0, now), "features": {"page_views": 0, "sensor.temp": 20.5, "region": None, "retired": 7.5}})
    assert before.flush() == 1
    before.close()
    log = new_log(tmp_path, fan_in=2)
    write(log, 1, 1, now)
    assert log.compact() == 2
    log.close()
    merged = read_prediction_log(tmp_path).set_index("request_id")
    assert [f.name.split("-")[0] for f in day_files(tmp_path)] == ["L1"]
    assert merged.loc["r0", "feature.retired"] == 7.5 and merged["feature.retired"].isna().tolist() == [False, True]


def test_a_crash_between_merging_and_deleting_the_sources_neither_loses_nor_doubles(tmp_path: Path) -> None:
    log = new_log(tmp_path, fan_in=4)
    now = datetime.now(UTC)
    for flush in range(4):
        write(log, flush * 10, 10, now)
    sources = day_files(tmp_path)
    kept = tmp_path / "kept"
    kept.mkdir()
    for f in sources:
        shutil.copy2(f, kept / f.name)
    assert log.compact() == 4
    for f in sources:  # the state a kill between the merged file's rename and the sources' deletion leaves
        shutil.copy2(kept / f.name, f)
    assert len(day_files(tmp_path)) == 5
    assert sorted(read_prediction_log(tmp_path)["request_id"]) == sorted(f"r{i}" for i in range(40))
    log.compact()  # the next compaction removes the covered sources
    assert [f.name.split("-")[0] for f in day_files(tmp_path)] == ["L1"]
    assert len(read_prediction_log(tmp_path)) == 40
    log.close()


def test_a_damaged_file_is_skipped_reported_and_set_aside_never_fatal(tmp_path: Path) -> None:
    log = new_log(tmp_path, fan_in=2)
    now = datetime.now(UTC)
    write(log, 0, 10, now)
    day = day_files(tmp_path)[0].parent
    (day / "L0-20000101T000000000000-empty000.parquet").write_bytes(b"")  # a full disk's zero-byte file
    truncated = day_files(tmp_path)[-1].read_bytes()[:-40]  # cut before its footer
    (day / "L0-20000101T000000000001-trunc000.parquet").write_bytes(truncated)
    scan = LogScan(tmp_path)
    assert sorted(scan.frame()["request_id"]) == [f"r{i}" for i in range(10)]
    assert len(scan.damaged) == 2 and all("L0-20000101" in d for d in scan.damaged), scan.damaged
    write(log, 10, 10, now)
    log.compact()
    assert log.damaged == 2 and sorted(p.name for p in (day / DAMAGED_DIR).iterdir())[0].startswith("L0-20000101")
    scan = LogScan(tmp_path)
    assert len(scan.frame()) == 20 and [d.endswith("set aside") for d in scan.damaged] == [True, True]
    log.close()


def test_a_reader_holds_compaction_off_the_files_it_is_reading(tmp_path: Path) -> None:
    log = new_log(tmp_path, fan_in=2)
    now = datetime.now(UTC)
    write(log, 0, 10, now)
    write(log, 10, 10, now)
    tables = LogScan(tmp_path, batch_rows=5).tables()
    first = next(tables)
    assert log.compact() == 0  # a scan is open: the merge waits for the next flush
    rest = list(tables)
    assert first.num_rows + sum(t.num_rows for t in rest) == 20
    assert log.compact() == 2
    log.close()


def test_a_part_of_the_former_json_log_is_read_and_rewritten_typed(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    legacy = pd.DataFrame(
        {
            "request_id": ["old0", "old1"],
            "time": [now, now],
            "entity": ["L0", None],
            "features": ['{"page_views": 3, "region": "emea"}', '{"page_views": null, "sensor.temp": 1.5, "region": null}'],
            "route": "champion",
            "served_version": "1",
            "score": [0.1, 0.2],
            "latency_ms": 1.0,
        }
    )
    (tmp_path / f"date={now:%Y-%m-%d}").mkdir()
    legacy.to_parquet(tmp_path / f"date={now:%Y-%m-%d}" / "part-120000000000-abcdef12.parquet", index=False)
    before = read_prediction_log(tmp_path)
    assert before["feature.page_views"].tolist()[0] == 3 and np.isnan(before["feature.page_views"][1])
    log = new_log(tmp_path)
    write(log, 0, 1, now)
    log.compact()
    log.close()
    assert sorted(f.name.split("-")[0] for f in day_files(tmp_path)) == ["L0", "L1"]
    after = read_prediction_log(tmp_path).set_index("request_id").sort_index()
    assert after.index.tolist() == ["old0", "old1", "r0"] and after["feature.region"].tolist() == ["emea", None, None]
    assert after["feature.sensor.temp"].tolist()[1] == 1.5 and str(after["feature.page_views"].dtype) == "float64"


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
