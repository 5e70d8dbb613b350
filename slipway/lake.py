"""The local data lake: immutable bronze, typed silver, quarantine and gold.

Bronze keeps each raw batch byte for byte under its content hash, so a batch is
stored once however often it is ingested. Silver and quarantine hold one Parquet
file per batch, written atomically (temp file + rename) so a crash never leaves a
half-written file behind.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from slipway.paths import Home
from slipway.storage import RawBatch


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


def write_parquet(frame: pd.DataFrame, path: Path) -> Path:
    return _atomic_write(path, lambda p: frame.to_parquet(p, index=False))


def write_json(payload: dict[str, Any], path: Path) -> Path:
    return _atomic_write(path, lambda p: p.write_text(json.dumps(payload, indent=2, default=str)))


def read_table(directory: Path) -> pd.DataFrame:
    """All batch files of a lake table, oldest first; empty when there are none."""
    files = sorted(directory.glob("*.parquet"))
    if not files:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def silver_keys(home: Home, entity: str, timestamp: str) -> pd.MultiIndex | None:
    """Keys already accepted, to refuse the same event arriving twice."""
    files = sorted(home.silver.glob("*.parquet"))
    if not files:
        return None
    keys = pd.concat([pd.read_parquet(f, columns=[entity, timestamp]) for f in files], ignore_index=True)
    return pd.MultiIndex.from_frame(keys)
