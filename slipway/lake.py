"""The local data lake: immutable bronze, typed silver, quarantine and gold.

Bronze keeps each raw batch byte for byte under its content hash, so a batch is
stored once however often it is ingested. Silver and quarantine hold one Parquet
file per batch, written atomically (temp file + rename) so a crash never leaves a
half-written file behind.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from slipway.paths import Home
from slipway.storage import RawBatch

LEDGER = "_ingested"  # silver/_ingested/<md5>.json: which contents silver already holds


def new_batch_id(batch: RawBatch) -> str:
    """Time-ordered and content-addressed: ``20261121T120000-<md5 prefix>``."""
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{batch.md5[:10]}"


def _atomic_write(path: Path, write: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


def archive_bronze(home: Home, batch: RawBatch) -> Path:
    """Store the raw bytes once per content hash; never overwrite."""
    target = home.bronze / batch.md5 / batch.name
    if not target.exists():
        _atomic_write(target, lambda p: p.write_bytes(batch.content))
        meta = {"source": batch.source, "md5": batch.md5, "received": datetime.now(UTC).isoformat()}
        (target.parent / "_meta.json").write_text(json.dumps(meta, indent=2))
    return target


def parquet_table(frame: pd.DataFrame) -> pa.Table:
    """A frame as Arrow, without its index, converted on this thread.

    pandas' ``to_parquet`` starts a thread pool for each call, which costs more than converting
    a batch-scoring part does.
    """
    return pa.Table.from_pandas(frame, preserve_index=False, nthreads=1)


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    return _atomic_write(path, lambda p: pq.write_table(parquet_table(frame), p))


def write_json(payload: dict[str, Any], path: Path) -> Path:
    return _atomic_write(path, lambda p: p.write_text(json.dumps(payload, indent=2, default=str)))


def read_table(directory: Path) -> pd.DataFrame:
    """All batch files of a lake table, oldest first; empty when there are none."""
    files = sorted(directory.glob("*.parquet"))
    if not files:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def ingested(home: Home, batch: RawBatch) -> dict[str, Any] | None:
    """The ledger entry of a batch with this content already ingested into silver, or None."""
    entry = home.silver / LEDGER / f"{batch.md5}.json"
    if entry.is_file():
        loaded: dict[str, Any] = json.loads(entry.read_text())
        return loaded
    # Killed after silver was written but before the ledger: silver already holds the batch, so
    # re-running must not quarantine it all as "already in silver". Complete the ledger from the files.
    written = sorted(home.silver.glob(f"*-{batch.md5[:10]}.parquet"))
    if not written:
        return None
    batch_id = written[-1].stem
    accepted = pq.ParquetFile(written[-1]).metadata.num_rows
    bad = home.quarantine / f"{batch_id}.parquet"
    quarantined = pq.ParquetFile(bad).metadata.num_rows if bad.is_file() else 0
    summary = {"batch_id": batch_id, "rows_in": accepted + quarantined, "rows_accepted": accepted}
    summary["rows_quarantined"] = quarantined
    record_ingested(home, batch, summary)
    return ingested(home, batch)


def record_ingested(home: Home, batch: RawBatch, summary: dict[str, Any]) -> Path:
    """Note in silver's ledger that this content is in (written last: a crash before it means not ingested)."""
    return write_json({"source": batch.source, "md5": batch.md5, **summary}, home.silver / LEDGER / f"{batch.md5}.json")


GOLD_BATCHES = "_batches.json"  # gold/_batches.json: the silver batches gold was last built from


def gold_batches(home: Home) -> list[dict[str, Any]]:
    """The batches the current gold was built from (empty if gold predates this record)."""
    path = home.gold / GOLD_BATCHES
    batches: list[dict[str, Any]] = json.loads(path.read_text())["batches"] if path.is_file() else []
    return batches


def silver_batches(home: Home) -> list[dict[str, Any]]:
    """The batches silver holds, oldest first: batch id, content md5 (as DVC hashes a file) and source."""
    ledger = {}
    for entry in (home.silver / LEDGER).glob("*.json"):
        record = json.loads(entry.read_text())
        ledger[record["batch_id"]] = record
    batches = []
    for file in sorted(home.silver.glob("*.parquet")):
        record = ledger.get(file.stem, {})
        batches.append({"batch_id": file.stem, "md5": record.get("md5", "unknown"), "source": record.get("source", "unknown")})
    return batches


@contextmanager
def ingest_lock(home: Home) -> Iterator[None]:
    """One ingest at a time decides and writes silver: two at once never accept the same key twice."""
    home.lake.mkdir(parents=True, exist_ok=True)
    with (home.lake / ".ingest.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def silver_keys(home: Home, entity: str, timestamp: str) -> pd.MultiIndex | None:
    """Keys already accepted, to refuse the same event arriving twice."""
    files = sorted(home.silver.glob("*.parquet"))
    if not files:
        return None
    keys = pd.concat([pd.read_parquet(f, columns=[entity, timestamp]) for f in files], ignore_index=True)
    return pd.MultiIndex.from_frame(keys)
