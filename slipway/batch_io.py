"""Batch scoring's edges: reading the source as Dask partitions, the run's folders, the commit.

A run writes everything under ``<output>/_staging/run=<id>/`` (Parquet readers skip
names starting with ``_``), then commits: the manifest (``_SUCCESS``) goes into the
scores folder, the rejects folder moves to ``<output>/rejects/run=<id>/`` and the
scores folder to ``<output>/run=<id>/``; on a local disk the last move is one
atomic rename, so a run that fails or is killed leaves nothing visible.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import dask.dataframe as dd
import pyarrow.parquet as pq

from slipway.processes import cpu_threads

MANIFEST = "_SUCCESS"
CSV_BLOCK_BYTES = 64 * 2**20


class BatchSourceError(ValueError):
    """The batch source cannot be read; the message names it."""


@dataclass(frozen=True)
class RunFolders:
    """Where one run stages its parts and where they land when it commits."""

    output: Path
    run: str  # run=<UTC time>-<short id>

    @classmethod
    def new(cls, output: Path, now: datetime) -> RunFolders:
        return cls(output, f"run={now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}")

    @property
    def staging(self) -> Path:
        return self.output / "_staging" / self.run

    @property
    def staged_scores(self) -> Path:
        return self.staging / "scores"

    @property
    def staged_rejects(self) -> Path:
        return self.staging / "rejects"

    @property
    def scores(self) -> Path:
        return self.output / self.run

    @property
    def rejects(self) -> Path:
        return self.output / "rejects" / self.run

    def commit(self, manifest: dict[str, Any]) -> Path:
        """Write the manifest, then make the run visible (rejects first, scores last, one rename each)."""
        self.staged_scores.mkdir(parents=True, exist_ok=True)
        (self.staged_scores / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        if self.staged_rejects.exists():
            self.rejects.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.staged_rejects, self.rejects)
        os.replace(self.staged_scores, self.scores)
        self.discard()
        return self.scores

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


def output_folder(configured: str | None, default: Path) -> Path:
    """``batch.output`` as a local folder (an s3:// output is refused by name: its writes are not atomic)."""
    if configured and "://" in configured:
        raise BatchSourceError(f"batch.output={configured}: only local (or mounted) folders are supported for now")
    return Path(configured) if configured else default


def _files(source: Path) -> list[Path]:
    if source.is_dir():
        return sorted(p for p in source.rglob("*.parquet") if not any(part.startswith(("_", ".")) for part in p.parts))
    return [source]


def source_hash(source: str) -> str:
    """md5 of the file, or of the folder's part names and contents (the manifest's record of what was scored)."""
    digest = hashlib.md5(usedforsecurity=False)
    root = Path(source)
    for file in _files(root):
        digest.update(str(file.relative_to(root) if root.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            while chunk := handle.read(2**20):
                digest.update(chunk)
    return digest.hexdigest()


def read_source(source: str) -> dd.DataFrame:
    """A CSV file (read as text, so wrong types reach validation), a Parquet file or a folder of Parquet parts."""
    path = Path(source)
    if "://" in source:
        raise BatchSourceError(f"{source}: batch sources on object stores are not supported yet; copy it to a local folder")
    if not path.exists():
        raise BatchSourceError(f"{source}: batch source not found")
    if path.is_file() and path.suffix.lower() == ".csv":
        return dd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], blocksize=CSV_BLOCK_BYTES)
    files = _files(path)
    if not files:
        raise BatchSourceError(f"{source}: no Parquet files found")
    return dd.read_parquet([str(f) for f in files], split_row_groups="adaptive")


def parquet_rows(path: Path) -> int:
    return int(pq.ParquetFile(path).metadata.num_rows)


@contextlib.contextmanager
def dask_client(local_workers: int | None) -> Iterator[Any]:
    """The cluster at ``DASK_SCHEDULER_ADDRESS`` (Dask's own variable), else an embedded local cluster."""
    from distributed import Client, LocalCluster

    address = os.environ.get("DASK_SCHEDULER_ADDRESS")
    if address:
        with Client(address, timeout="30s") as client:
            yield client
        return
    workers = local_workers or cpu_threads()
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.WARNING
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client
