"""The append-only prediction log the monitor flow reads.

Requests only put a record on a bounded in-memory queue; a background thread
writes the queue out as Parquet part files (atomic rename) every flush interval.
When the queue is full the record is dropped and counted, so logging can never
block or fail a request.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from slipway.lake import write_parquet

LOGGER = logging.getLogger(__name__)
COLUMNS = [
    "request_id",
    "time",
    "entity",
    "features",
    "route",
    "served_version",
    "score",
    "shadow_version",
    "shadow_score",
    "latency_ms",
    "error",  # a challenger that failed on this row ("v3: ValueError ..."); the row was served by the champion
]


class PredictionLog:
    def __init__(self, directory: Path, flush_seconds: float = 1.0, max_queue: int = 100_000) -> None:
        self.directory = directory
        self.flush_seconds = flush_seconds
        self.dropped = 0
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def append(self, record: Mapping[str, Any]) -> None:
        """Queue one record; never blocks."""
        try:
            self._queue.put_nowait(dict(record))
        except queue.Full:
            self.dropped += 1

    def flush(self) -> int:
        """Write what is queued now; returns the number of records written."""
        records: list[dict[str, Any]] = []
        while True:
            try:
                records.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if not records:
            return 0
        for record in records:  # encoded here, in the writer thread, not on the request path
            if not isinstance(record.get("features"), str):
                record["features"] = json.dumps(record.get("features"), default=str)
        frame = pd.DataFrame.from_records(records, columns=COLUMNS)
        now = datetime.now(UTC)
        path = self.directory / f"date={now:%Y-%m-%d}" / f"part-{now:%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
        try:
            write_parquet(frame, path)
        except OSError:
            LOGGER.exception("prediction log: could not write %d records to %s", len(records), path)
            self.dropped += len(records)
            return 0
        return len(records)

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()
        self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def read_prediction_log(directory: Path, since: datetime | None = None) -> pd.DataFrame:
    """Logged predictions, oldest first: all of them, or those at or after ``since`` (aware, UTC)."""
    files = sorted(directory.glob("date=*/part-*.parquet"))
    if since is not None:
        files = [f for f in files if f.parent.name >= f"date={since:%Y-%m-%d}"]
    if not files:
        return pd.DataFrame(columns=COLUMNS)
    tables = [pq.read_table(f) for f in files]  # columns that are all null in one part are typed by the others
    frame: pd.DataFrame = pa.concat_tables(tables, promote_options="permissive").to_pandas().reindex(columns=COLUMNS)
    if since is not None:
        frame = frame[pd.to_datetime(frame["time"], utc=True) >= pd.Timestamp(since)]
    return frame.sort_values("time", kind="stable").reset_index(drop=True)


def read_batch_log(directory: Path, since: datetime | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """Batch-scored rows (typed feature columns, entity, score, served_version, time), oldest day first."""
    files = sorted(directory.glob("date=*/*.parquet"))
    if since is not None:
        files = [f for f in files if f.parent.name >= f"date={since:%Y-%m-%d}"]
    if not files:
        return pd.DataFrame(columns=columns or [])
    frame = pd.concat([pd.read_parquet(f, columns=columns) for f in files], ignore_index=True)
    if since is not None:
        frame = frame[pd.to_datetime(frame["time"], utc=True) >= pd.Timestamp(since)].reset_index(drop=True)
    return frame
