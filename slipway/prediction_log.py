"""The append-only prediction log the monitor and promote flows read.

Requests only put a record on a bounded in-memory queue; a background thread
writes the queue out as a Parquet part file (atomic rename) every flush interval.
When the queue is full the record is dropped and counted, so logging can never
block or fail a request.

The log is typed: one column per declared feature (``feature.<name>``; numbers as
float64, categories as text), so pandas, DuckDB or Dask read it directly
(``date=YYYY-MM-DD/*.parquet``, Hive-partitioned by day). It is compacted by the
writers themselves, like an LSM tree: once a day holds ``FAN_IN`` files of one
level, they are merged into one file of the next level, so a day is read from a few
dozen files whatever the traffic. A merged file is written beside its sources and
names them in its metadata; the sources are deleted after, and until then readers
skip them, so a crash at any point neither loses nor doubles a row. One writer at a
time compacts (a file lock), and it compacts every replica's files, including those
of replicas that died.

A damaged file (empty, truncated, not Parquet) never stops a reader: it is skipped
and reported; the compactor moves it to ``date=.../_damaged/`` for inspection.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

LOGGER = logging.getLogger(__name__)
FEATURE_PREFIX = "feature."
FAN_IN = 16  # files of one level merged into one of the next
MAX_FILE_ROWS = 2_000_000  # files this large are not merged further
ROW_GROUP_ROWS = 128_000
SOURCES_KEY = b"slipway.sources"
DAMAGED_DIR = "_damaged"
BASE_FIELDS = [
    pa.field("request_id", pa.string()),
    pa.field("time", pa.timestamp("us", tz="UTC")),
    pa.field("entity", pa.string()),
    pa.field("route", pa.string()),
    pa.field("served_version", pa.string()),
    pa.field("score", pa.float64()),
    pa.field("shadow_version", pa.string()),
    pa.field("shadow_score", pa.float64()),
    pa.field("latency_ms", pa.float64()),
    # a challenger that failed on this row ("v3: ValueError ..."); the row was served by the champion
    pa.field("error", pa.string()),
]
COLUMNS = [f.name for f in BASE_FIELDS]


def feature_column(name: str) -> str:
    return FEATURE_PREFIX + name


def log_schema(numeric: Sequence[str], categorical: Sequence[str]) -> pa.Schema:
    """The log's columns: the request's, then each declared feature with its declared type."""
    features = [pa.field(feature_column(c), pa.float64()) for c in numeric]
    features += [pa.field(feature_column(c), pa.string()) for c in categorical]
    return pa.schema([*BASE_FIELDS, *features])


def _number(value: Any) -> float | None:
    return None if value is None or isinstance(value, str) else float(value)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def records_table(records: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Records (each with a ``features`` mapping) as a table of ``schema``."""
    columns = []
    for f in schema:
        if f.name.startswith(FEATURE_PREFIX):
            name, convert = f.name.removeprefix(FEATURE_PREFIX), _number if pa.types.is_floating(f.type) else _text
            values = [convert((r.get("features") or {}).get(name)) for r in records]
        else:
            values = [r.get(f.name) for r in records]
        columns.append(pa.array(values, type=f.type))
    return pa.Table.from_arrays(columns, schema=schema)


LEGACY_PREFIX = "part-"  # files of the JSON-features log: read as they are, rewritten typed by the compactor


def _level(path: Path) -> int:
    """A file's compaction level (0: a flush); a legacy part counts as a flush."""
    return 0 if path.name.startswith(LEGACY_PREFIX) else int(path.name[1 : path.name.index("-")])


def _created(path: Path) -> str:
    return path.name.removeprefix(LEGACY_PREFIX) if path.name.startswith(LEGACY_PREFIX) else path.name.split("-", 1)[1]


def read_file(path: Path, schema: pa.Schema | None = None) -> pa.Table:
    """One log file as a table; a legacy part's JSON features become typed columns (of ``schema``, or inferred)."""
    table = pq.read_table(path)
    if "features" not in table.column_names:
        return table
    records = table.to_pylist()
    for record in records:
        record["features"] = json.loads(record["features"]) if record.get("features") else {}
    if schema is None:
        names = sorted({k for r in records for k in r["features"]})
        frame = pd.DataFrame({feature_column(n): [r["features"].get(n) for r in records] for n in names})
        features = pa.Table.from_pandas(frame, preserve_index=False)
        base = records_table(records, pa.schema(BASE_FIELDS))
        return pa.Table.from_arrays([*base.columns, *features.columns], names=[*base.column_names, *features.column_names])
    return records_table(records, schema)


def _new_name(level: int) -> str:
    return f"L{level}-{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"


def _write_atomic(path: Path, tables: Iterator[pa.Table], schema: pa.Schema, sources: list[str] | None = None) -> int:
    """Write ``tables`` into one file that appears whole or not at all; returns its rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if sources is not None:
        schema = schema.with_metadata({**(schema.metadata or {}), SOURCES_KEY: json.dumps(sources).encode()})
    rows, pending, pending_rows = 0, [], 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for table in tables:
                pending.append(table)
                pending_rows += table.num_rows
                if pending_rows >= ROW_GROUP_ROWS:  # small parts coalesce into row groups of useful size
                    writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                    rows, pending, pending_rows = rows + pending_rows, [], 0
            if pending:
                writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                rows += pending_rows
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return rows


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns: missing ones null, others cast (files of other settings merge too)."""
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type) for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema.remove_metadata())


def write_part(directory: Path, table: pa.Table, when: datetime | None = None) -> Path:
    """One flush: ``table`` (of the log's schema) as a new level-0 file of the day of ``when`` (default now)."""
    path = directory / f"date={(when or datetime.now(UTC)):%Y-%m-%d}" / _new_name(0)
    _write_atomic(path, iter([table]), table.schema)
    return path


class PredictionLog:
    """The service's writer: a bounded queue, a flush thread, and compaction of the day's files."""

    def __init__(
        self,
        directory: Path,
        numeric: Sequence[str],
        categorical: Sequence[str],
        flush_seconds: float = 1.0,
        max_queue: int = 100_000,
        fan_in: int = FAN_IN,
    ) -> None:
        self.directory = directory
        self.schema = log_schema(numeric, categorical)
        self.flush_seconds = flush_seconds
        self.fan_in = fan_in
        self.dropped = 0
        self.damaged = 0  # files the compactor found damaged and moved aside
        self._footers: dict[Path, Footer] = {}
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
        """Write what is queued now as one part file; returns the number of records written."""
        records: list[dict[str, Any]] = []
        while True:
            try:
                records.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if not records:
            return 0
        try:  # converted here, in the writer thread, not on the request path
            write_part(self.directory, records_table(records, self.schema))
        except (OSError, pa.ArrowException):
            LOGGER.exception("prediction log: could not write %d records to %s", len(records), self.directory)
            self.dropped += len(records)
            return 0
        return len(records)

    def compact(self) -> int:
        """Merge full levels of the last two days' files (unless another writer or a reader holds the lock).

        Returns the number of files merged. Files never change once written, so their
        footers are read once and remembered: a round with nothing to merge reads none.
        """
        with _lock(self.directory, fcntl.LOCK_EX | fcntl.LOCK_NB) as mine:
            if not mine:  # another replica compacts, or a reader is reading: next flush
                return 0
            return sum(self._compact_day(day) for day in sorted(self.directory.glob("date=*"))[-2:])

    def _footer(self, path: Path) -> Footer:
        if path not in self._footers:
            self._footers[path] = read_footer(path)
        return self._footers[path]

    def _rows(self, day: Path, path: Path) -> int | None:
        """A file's rows; None (and the file set aside) when it is damaged."""
        try:
            return self._footer(path)[0]
        except (OSError, pa.ArrowException, ValueError) as exc:
            self._set_aside(day, path, exc)
            return None

    def _compact_day(self, day: Path) -> int:
        merged, hour_ago = 0, datetime.now(UTC).timestamp() - 3600
        for stale in day.glob(".*.tmp"):  # a writer killed mid-write; its records are counted as lost
            with contextlib.suppress(FileNotFoundError):
                if stale.stat().st_mtime < hour_ago:
                    stale.unlink()
        files = visible_files(day, footer=self._footer)  # covered sources a crash left behind are deleted here
        for legacy in [f for f in files if f.name.startswith(LEGACY_PREFIX)]:
            merged += self._merge(day, [legacy], 1)  # rewritten typed, on its own
        for level in range(max((_level(f) for f in visible_files(day, footer=self._footer)), default=-1) + 1):
            files = [f for f in visible_files(day, footer=self._footer) if _level(f) == level]  # with merges so far
            for group in self._groups(day, files):
                merged += self._merge(day, group, level + 1)
        self._footers = {p: f for p, f in self._footers.items() if p.exists()}
        return merged

    def _groups(self, day: Path, files: list[Path]) -> Iterator[list[Path]]:
        group: list[Path] = []
        rows = 0
        for f in files:
            n = self._rows(day, f)
            if n is None or n >= MAX_FILE_ROWS:
                continue
            group.append(f)
            rows += n
            if len(group) == self.fan_in or rows >= MAX_FILE_ROWS:
                yield group
                group, rows = [], 0

    def _merge(self, day: Path, sources: list[Path], level: int) -> int:
        """Stream ``sources`` into one file of ``level`` (one row group in memory at a time), then delete them."""
        if len(sources) < 2 and not sources[0].name.startswith(LEGACY_PREFIX):
            return 0
        failed: list[tuple[Path, Exception]] = []
        try:  # every column of every source is kept: files written under other settings merge whole
            schema = pa.unify_schemas(
                [self.schema, *(pq.read_schema(f) for f in sources if not f.name.startswith(LEGACY_PREFIX))],
                promote_options="permissive",
            ).remove_metadata()
        except (OSError, pa.ArrowException) as exc:  # a feature whose type changed: kept apart, read as it is
            LOGGER.warning("prediction log: %d files in %s not merged: %s", len(sources), day, exc)
            return 0

        def tables() -> Iterator[pa.Table]:
            for f in sources:
                try:
                    if f.name.startswith(LEGACY_PREFIX):
                        batches: Any = read_file(f, self.schema).to_batches()
                    else:
                        batches = pq.ParquetFile(f).iter_batches(batch_size=ROW_GROUP_ROWS)
                    for batch in batches:
                        yield conform(pa.Table.from_batches([batch]), schema)
                except (OSError, pa.ArrowException, ValueError) as exc:
                    failed.append((f, exc))
                    raise

        try:
            _write_atomic(day / _new_name(level), tables(), schema, [f.name for f in sources])
        except (OSError, pa.ArrowException, ValueError):
            if failed:  # that source is set aside; the others merge on the next round
                self._set_aside(day, *failed[0])
            else:
                LOGGER.exception("prediction log: could not compact %d files in %s", len(sources), day)
            return 0
        for f in sources:
            f.unlink(missing_ok=True)
        return len(sources)

    def _set_aside(self, day: Path, path: Path, exc: Exception) -> None:
        LOGGER.error("prediction log: %s is damaged (%s: %s); moved to %s/", path, type(exc).__name__, exc, DAMAGED_DIR)
        (day / DAMAGED_DIR).mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, day / DAMAGED_DIR / path.name)
            self.damaged += 1

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()
            try:
                self.compact()
            except Exception:  # compaction is housekeeping: it must never stop the log from being written
                LOGGER.exception("prediction log: compaction failed")
        self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


Footer = tuple[int, list[str]]  # a file's rows, and the files it was merged from


def read_footer(path: Path) -> Footer:
    """Rows and merged-from names of one log file (raises on a damaged file)."""
    meta = pq.ParquetFile(path).metadata
    return meta.num_rows, json.loads((meta.metadata or {}).get(SOURCES_KEY, b"[]"))


def visible_files(day: Path, delete_covered: bool = True, footer: Callable[[Path], Footer] = read_footer) -> list[Path]:
    """A day's files in time order, without those a merged file already holds (deleting them unless told not to)."""
    files = sorted([*day.glob("L*-*.parquet"), *day.glob(f"{LEGACY_PREFIX}*.parquet")], key=lambda f: (_created(f), f.name))
    covered: set[str] = set()
    for f in files:
        if _level(f) == 0:
            continue
        with contextlib.suppress(OSError, pa.ArrowException, ValueError):
            covered.update(footer(f)[1])
    if delete_covered:
        for f in files:
            if f.name in covered:
                f.unlink(missing_ok=True)
    return [f for f in files if f.name not in covered]


@contextlib.contextmanager
def _lock(directory: Path, mode: int) -> Iterator[bool]:
    """The compaction lock: readers share it, a compactor takes it alone (yields False when it cannot have it now)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".compact.lock").open("a") as handle:
        try:
            fcntl.flock(handle, mode)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class LogScan:
    """The log since ``since`` (aware, UTC), read file by file; damaged files are skipped and listed in ``damaged``.

    A scan holds the compaction lock shared, so no file it listed is merged away under it.
    """

    directory: Path
    since: datetime | None = None
    columns: list[str] | None = None  # None: all
    compacted: bool = True  # False: a plain day-partitioned dataset (the batch runs' log)
    batch_rows: int = 256_000
    damaged: list[str] = field(default_factory=list)

    def days(self) -> list[Path]:
        days = sorted(self.directory.glob("date=*"))
        return [d for d in days if self.since is None or d.name >= f"date={self.since:%Y-%m-%d}"]

    def tables(self) -> Iterator[pa.Table]:
        """Tables of at most ``batch_rows`` rows, oldest day first."""
        if not self.directory.is_dir():
            return
        with _lock(self.directory, fcntl.LOCK_SH) if self.compacted else contextlib.nullcontext(True):
            days = self.days()
            aside = [p for d in days for p in sorted(d.glob(f"{DAMAGED_DIR}/*"))]
            self.damaged = [f"{p.relative_to(self.directory)}: set aside" for p in aside]
            for day in days:
                files = visible_files(day, delete_covered=False) if self.compacted else sorted(day.glob("*.parquet"))
                for f in files:
                    yield from self._read(f)

    def _read(self, path: Path) -> Iterator[pa.Table]:
        read = 0
        try:
            if self.compacted and path.name.startswith(LEGACY_PREFIX):
                batches = read_file(path).to_batches(self.batch_rows)
            else:
                reader = pq.ParquetFile(path)
                names = reader.schema_arrow.names
                wanted = None if self.columns is None else [c for c in dict.fromkeys([*self.columns, "time"]) if c in names]
                batches = reader.iter_batches(batch_size=self.batch_rows, columns=wanted)
            for batch in batches:
                table = pa.Table.from_batches([batch])
                if self.since is not None:
                    since = pa.scalar(self.since, pa.timestamp("us", "UTC"))
                    table = table.filter(pc.greater_equal(table.column("time"), since))
                read += batch.num_rows
                yield table
        except (OSError, pa.ArrowException, ValueError) as exc:  # ValueError: a legacy part's JSON is damaged
            where = f" after {read} rows" if read else ""
            self.damaged.append(f"{path.relative_to(self.directory)}: {type(exc).__name__}: {exc}{where}")
            LOGGER.warning("prediction log: skipped damaged %s%s: %s", path, where, exc)

    def frame(self) -> pd.DataFrame:
        """The whole scan as one frame, oldest first (small windows: the promote flow's, tests)."""
        tables = list(self.tables())
        columns = COLUMNS if self.columns is None else self.columns
        if not tables:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
        frame: pd.DataFrame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
        frame = frame.sort_values("time", kind="stable").reset_index(drop=True)
        if self.columns is None:  # the request's columns first, then the features
            first = [c for c in COLUMNS if c in frame]
            return frame[[*first, *(c for c in frame.columns if c not in COLUMNS)]]
        return frame.reindex(columns=self.columns)


def read_prediction_log(directory: Path, since: datetime | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """Logged predictions, oldest first: all of them, or those at or after ``since`` (aware, UTC)."""
    return LogScan(directory, since, columns).frame()


def feature_frame(log: pd.DataFrame, features: Sequence[str]) -> pd.DataFrame:
    """The logged features under their own names (missing ones as None), one row per logged prediction."""
    return pd.DataFrame({c: log.get(feature_column(c)) for c in features}, index=log.index)


def features_by_name(table: pa.Table) -> pa.Table:
    """A log table with its feature columns under the features' own names."""
    return table.rename_columns([c.removeprefix(FEATURE_PREFIX) for c in table.column_names])


def read_batch_log(directory: Path, since: datetime | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """Batch-scored rows (typed feature columns, entity, score, served_version, time), oldest first."""
    return LogScan(directory, since, columns, compacted=False).frame()
