"""Batch scoring's edges: reading the source as Dask partitions, the run's folders, the commit.

Sources and the output are local (or mounted) paths or ``s3://`` URLs (through fsspec's
s3fs, so the standard ``AWS_*`` variables, ``AWS_ENDPOINT_URL`` included, apply). A run
writes everything under ``<output>/_staging/run=<id>/`` (Parquet readers skip names
starting with ``_``), then commits: the rejects land in ``<output>/rejects/run=<id>/``
and the scores in ``<output>/run=<id>/`` with the manifest ``_SUCCESS``. On a local disk
each is one atomic rename, so a run that fails or is killed leaves nothing visible; on
S3, which cannot rename, the manifest is written last and marks a complete run.
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
import fsspec
import pandas as pd
import pyarrow.parquet as pq

from slipway.lake import parquet_table, write_parquet
from slipway.processes import cpu_threads

MANIFEST = "_SUCCESS"
CSV_BLOCK_BYTES = 64 * 2**20


class BatchSourceError(ValueError):
    """The batch source cannot be read; the message names it."""


def _fs(location: str) -> tuple[Any, str]:
    """The fsspec filesystem of a local path or an ``s3://`` URL (s3fs: the standard AWS_* variables apply)."""
    scheme = location.split("://", 1)[0] if "://" in location else "file"
    if scheme not in ("file", "s3"):
        raise BatchSourceError(f"{location}: only local paths and s3:// URLs are supported")
    fs, path = fsspec.core.url_to_fs(location)
    return fs, str(path)


def _join(folder: str, *names: str) -> str:
    return "/".join([folder.rstrip("/"), *names])


@dataclass(frozen=True)
class RunFolders:
    """Where one run stages its parts and where they land when it commits (a local folder or an s3:// prefix)."""

    output: str
    run: str  # run=<UTC time>-<short id>

    @classmethod
    def new(cls, output: str, now: datetime) -> RunFolders:
        return cls(output.rstrip("/"), f"run={now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}")

    @property
    def remote(self) -> bool:
        return "://" in self.output

    @property
    def staging(self) -> str:
        return _join(self.output, "_staging", self.run)

    @property
    def staged_scores(self) -> str:
        return _join(self.staging, "scores")

    @property
    def staged_rejects(self) -> str:
        return _join(self.staging, "rejects")

    @property
    def scores(self) -> str:
        return _join(self.output, self.run)

    @property
    def rejects(self) -> str:
        return _join(self.output, "rejects", self.run)

    def commit(self, manifest: dict[str, Any]) -> str:
        """Make the run visible with its manifest (``_SUCCESS``); returns where its scores are.

        Local: the manifest goes into the staged folder, then one rename each (rejects first,
        scores last), so the run appears whole. S3 has no rename: each staged object is copied
        into the run folder and the manifest is written last, so an S3 run folder without
        ``_SUCCESS`` is not complete (the convention Hadoop's and Spark's committers follow).
        """
        text = json.dumps(manifest, indent=2, default=str)
        if self.remote:
            fs, _ = _fs(self.output)
            for source, target in ((self.staged_rejects, self.rejects), (self.staged_scores, self.scores)):
                for key in _parts(fs, _fs(source)[1]):
                    fs.copy(key, _join(_fs(target)[1], key.rsplit("/", 1)[1]))
            with fs.open(_join(_fs(self.scores)[1], MANIFEST), "w") as handle:
                handle.write(text)
        else:
            staged = Path(self.staged_scores)
            staged.mkdir(parents=True, exist_ok=True)
            (staged / MANIFEST).write_text(text)
            if Path(self.staged_rejects).exists():
                Path(self.rejects).parent.mkdir(parents=True, exist_ok=True)
                os.replace(self.staged_rejects, self.rejects)
            os.replace(staged, self.scores)
        self.discard()
        return self.scores

    def discard(self, partial: bool = False) -> None:
        """Remove the staging folder; with ``partial``, also what an interrupted S3 commit copied."""
        if not self.remote:
            shutil.rmtree(self.staging, ignore_errors=True)
            return
        fs, _ = _fs(self.output)
        for folder in [self.staging, *([self.scores, self.rejects] if partial else [])]:
            with contextlib.suppress(FileNotFoundError):
                fs.rm(_fs(folder)[1], recursive=True)


def sweep_incomplete(output: str) -> list[str]:
    """Remove what runs that died left under ``output``; returns the folders removed.

    Call it only while no other run writes to ``output`` (the score flow holds a Prefect
    global concurrency limit per output). Locally that is staging folders only (a run
    appears by one rename); on S3 also run folders without ``_SUCCESS``: a commit killed
    while it copied, whose parts a reader listing the prefix would otherwise see.
    """
    fs, root = _fs(output) if "://" in output else (fsspec.filesystem("file"), str(Path(output)))
    fs.invalidate_cache()  # what other processes wrote since this one last listed
    found = [(p, p) for p in _folders(fs, _join(root, "_staging"))]
    if "://" in output:
        for folder in _folders(fs, root):
            name = folder.rsplit("/", 1)[1]
            if name.startswith("run=") and not fs.exists(_join(folder, MANIFEST)):
                found += [(folder, folder), (_join(root, "rejects", name), folder)]
    removed = []
    for folder, shown in found:
        with contextlib.suppress(FileNotFoundError):
            fs.rm(folder, recursive=True)
            if shown not in removed:
                removed.append(shown)
    return [f"s3://{f}" if "://" in output else f for f in removed]


def _folders(fs: Any, path: str) -> list[str]:
    try:
        return sorted(str(e["name"]).rstrip("/") for e in fs.ls(path, detail=True) if e["type"] == "directory")
    except FileNotFoundError:
        return []


def _parts(fs: Any, folder: str) -> list[str]:
    """The Parquet parts under ``folder`` (none when it does not exist)."""
    try:
        return sorted(str(p) for p in fs.find(folder) if str(p).endswith(".parquet"))
    except FileNotFoundError:
        return []


def write_part(frame: pd.DataFrame, folder: str, name: str) -> None:
    """One part file: renamed into place locally; on S3 an object appears whole once its upload completes."""
    if "://" not in folder:
        write_parquet(frame, Path(folder) / name)
        return
    fs, path = _fs(folder)
    with fs.open(_join(path, name), "wb") as handle:
        pq.write_table(parquet_table(frame), handle)


def output_folder(configured: str | None, default: Path) -> str:
    """``batch.output``: a local (or mounted) folder or an ``s3://bucket/prefix``."""
    if configured and "://" in configured:
        _fs(configured)  # other schemes are refused by name
        return configured
    return str(Path(configured) if configured else default)


def _files(source: Path) -> list[Path]:
    if source.is_dir():
        return sorted(p for p in source.rglob("*.parquet") if not any(part.startswith(("_", ".")) for part in p.parts))
    return [source]


def _remote_files(fs: Any, path: str) -> list[str]:
    """A file's key, or the Parquet parts under a prefix (skipping ``_``/``.`` names, as Parquet readers do)."""
    if fs.isfile(path):
        return [path]
    return [k for k in _parts(fs, path) if not any(p.startswith(("_", ".")) for p in k[len(path) :].split("/"))]


def source_hash(source: str) -> str:
    """md5 of the file, or of the folder's part names and contents; on S3, of the keys and their ETags."""
    digest = hashlib.md5(usedforsecurity=False)
    if "://" in source:
        fs, path = _fs(source)
        for key in _remote_files(fs, path):
            digest.update(f"{key[len(path) :]}:{fs.info(key).get('ETag', '')}".encode())
        return digest.hexdigest()
    root = Path(source)
    for file in _files(root):
        digest.update(str(file.relative_to(root) if root.is_dir() else file.name).encode())
        with open(file, "rb") as handle:
            while chunk := handle.read(2**20):
                digest.update(chunk)
    return digest.hexdigest()


def read_source(source: str) -> dd.DataFrame:
    """A CSV file (read as text, so wrong types reach validation), a Parquet file or a folder of parts, local or S3."""
    if "://" in source:
        fs, path = _fs(source)
        if not fs.exists(path):
            raise BatchSourceError(f"{source}: batch source not found")
        if path.lower().endswith(".csv"):
            return _read_csv(source)
        keys = _remote_files(fs, path)
        if not keys:
            raise BatchSourceError(f"{source}: no Parquet files found")
        return dd.read_parquet([f"s3://{k}" for k in keys], split_row_groups="adaptive")
    local = Path(source)
    if not local.exists():
        raise BatchSourceError(f"{source}: batch source not found")
    if local.is_file() and local.suffix.lower() == ".csv":
        return _read_csv(source)
    files = _files(local)
    if not files:
        raise BatchSourceError(f"{source}: no Parquet files found")
    return dd.read_parquet([str(f) for f in files], split_row_groups="adaptive")


def _read_csv(source: str) -> dd.DataFrame:
    return dd.read_csv(source, dtype=str, keep_default_na=False, na_values=[""], blocksize=CSV_BLOCK_BYTES)


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
