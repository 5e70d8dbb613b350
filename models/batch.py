"""Batch scoring: the input as Dask partitions, one partition as a worker scores it, the cluster run.

A partition is validated (bad rows become rejects with a reason, never dropped),
scored with the champion (and the challenger while it is in shadow or canary),
and written as one Parquet part of the run's staging folder, one rejects part and
one part of the batch prediction log the monitor reads. Part names are fixed by
the partition number, so a partition re-run after a lost worker overwrites its own
files instead of adding rows.

Each worker holds a version's compiled scorer once, not once per partition: the flow
loads it from the registry once and sends it to every worker that does not hold it
yet (:func:`ship_scorers`), so workers neither import MLflow nor each load the model;
a worker that joins mid-run loads it itself (:func:`scorer`).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from dask import delayed
from distributed import as_completed

from features.gold import KNOWN, latest_per_entity
from features.validation import SchemaError
from models.fast_scorer import FastScorer
from slipway.batch_io import dask_client, parquet_rows, read_source, write_part
from slipway.lake import write_parquet
from slipway.settings import BatchSettings, DataSettings

FLOAT32_MAX = float(np.finfo(np.float32).max)
ScorerKey = tuple[str, str, str, str]  # tracking URI, model, version, the version's fingerprint (run id, creation time)
_SCORERS: dict[ScorerKey, FastScorer] = {}
_LOCK = threading.Lock()
LOADS: dict[str, int] = {}  # version → times this process loaded it (tests read it on the workers)


@dataclass(frozen=True)
class BatchJob:
    """Everything a worker needs, passed with each partition (workers share no state with the flow)."""

    tracking_uri: str
    model_name: str
    version: str
    data: DataSettings
    staging: str
    rejects: str
    batch_log: str
    run_id: str
    scored_at: str
    shadow_version: str | None = None
    # version → its run id and creation time: a registry recreated under the same URI, whose "v1" is
    # another model, never meets a scorer a long-running worker still holds for the old one
    fingerprints: dict[str, str] = field(default_factory=dict)
    carry: list[str] = field(default_factory=list)
    threads: int = 1


def scorer_key(job: BatchJob, version: str) -> ScorerKey:
    return (job.tracking_uri, job.model_name, version, job.fingerprints.get(version, ""))


def scorer(key: ScorerKey) -> FastScorer:
    """The version's compiled scorer as this process holds it; loaded from the registry if it was not sent."""
    tracking_uri, model_name, version, _ = key
    with _LOCK:
        if key not in _SCORERS:
            import mlflow  # only a worker that joined after the scorers were sent pays for MLflow

            from models.registry import load_scorer

            mlflow.set_tracking_uri(tracking_uri)
            _install(key, load_scorer(model_name, version))
        return _SCORERS[key]


def _install(key: ScorerKey, loaded: FastScorer) -> None:
    _SCORERS[key] = loaded
    LOADS[key[2]] = LOADS.get(key[2], 0) + 1


def held_scorers() -> list[ScorerKey]:
    """The scorers this process holds (run on each worker)."""
    with _LOCK:
        return list(_SCORERS)


def install_scorer(key: ScorerKey, loaded: FastScorer) -> None:
    """Hold a scorer the flow sent (run on each worker that lacks it)."""
    with _LOCK:
        if tuple(key) not in _SCORERS:
            _install((key[0], key[1], key[2], key[3]), loaded)


def ship_scorers(client: Any, job: BatchJob, load: Callable[[str], FastScorer]) -> dict[str, int]:
    """Load each of the run's versions here once and send it to the workers that do not hold it yet.

    Returns how many workers each version was sent to (none: every worker held it).
    """
    held = {worker: {tuple(k) for k in keys} for worker, keys in client.run(held_scorers).items()}
    sent = {}
    for version in [job.version, *([job.shadow_version] if job.shadow_version else [])]:
        key = scorer_key(job, version)
        missing = [worker for worker, keys in held.items() if key not in keys]
        if missing:
            client.run(install_scorer, key, load(version), workers=missing)
            sent[version] = len(missing)
    return sent


def _trimmed(values: pd.Series) -> pa.Array:
    """Values as trimmed text in Arrow (vectorised; strings that Dask reads are Arrow-backed already)."""
    if isinstance(values.dtype, pd.ArrowDtype) or str(values.dtype).startswith("string"):
        array = pa.array(values, from_pandas=True)
    else:
        array = pa.array(values.astype(object).where(values.notna(), None).map(_as_text), type=pa.string(), from_pandas=True)
    return pc.utf8_trim_whitespace(array.cast(pa.string()))


def _as_text(value: object) -> object:
    return value if value is None or isinstance(value, str) else str(value)


def _text(values: pd.Series) -> pd.Series:
    """Values as trimmed Arrow-backed text, missing and empty as null."""
    trimmed = _trimmed(values)
    cleaned = pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)
    return pd.Series(pd.arrays.ArrowExtensionArray(cleaned), index=values.index)


def _blank(values: pd.Series) -> np.ndarray:
    """Missing, empty or whitespace-only."""
    if pd.api.types.is_numeric_dtype(values):
        return np.asarray(values.isna())
    trimmed = _trimmed(values)
    return np.asarray(pc.fill_null(pc.equal(trimmed, ""), True).to_numpy(zero_copy_only=False), dtype=bool)


def reasons(frame: pd.DataFrame, data: DataSettings) -> pd.Series:
    """Why each row cannot be scored ("" when it can): the first problem found, naming the column and value.

    Masks are computed column by column; a message is built only for the rows it names.
    """
    out = np.full(len(frame), "", dtype=object)
    flagged = np.zeros(len(frame), dtype=bool)

    def flag(bad: np.ndarray, message: str, values: pd.Series | None = None) -> None:
        fresh = bad & ~flagged
        if fresh.any():
            shown = values[fresh].astype(str).str.slice(0, 40) if values is not None else None
            out[fresh] = message if shown is None else (message + shown).to_numpy()
            flagged[fresh] = True

    flag(_blank(frame[data.entity]), f"missing entity id ({data.entity})")
    if KNOWN in frame.columns:  # ids joined with the entity table
        flag(np.asarray(frame[KNOWN].isna()), "unknown entity: ", frame[data.entity])
    for column in data.numeric:
        raw = frame[column]
        number = np.asarray(pd.to_numeric(raw, errors="coerce"), dtype=float)
        missing = _blank(raw)
        flag(missing, f"missing feature {column}")
        flag(np.isnan(number) & ~missing, f"{column}: not a number: ", raw)
        with np.errstate(invalid="ignore"):
            flag(~np.isnan(number) & ~(np.abs(number) <= FLOAT32_MAX), f"{column}: outside the float32 range")
    for column in data.categorical:
        flag(_blank(frame[column]), f"missing feature {column}")
    return pd.Series(out, index=frame.index)


def typed_features(frame: pd.DataFrame, data: DataSettings) -> pd.DataFrame:
    """Valid rows' features as the model reads them: numbers as float64, categories as trimmed text."""
    out = pd.DataFrame(index=frame.index)
    for column in data.numeric:
        out[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in data.categorical:
        out[column] = _text(frame[column])
    return out


def score_partition(frame: pd.DataFrame, part: int, job: BatchJob) -> dict[str, Any]:
    """Validate, score and write one partition; returns its counts (rows_in = rows_scored + rows_rejected)."""
    data = job.data
    why = reasons(frame, data)
    bad, good = frame[why != ""], frame[why == ""]
    features = typed_features(good, data)
    name = f"part-{part:05d}.parquet"
    if len(bad):
        rejects = bad.astype("string").assign(reason=why[why != ""].to_numpy())
        write_part(rejects.reset_index(drop=True), job.rejects, name)
    if len(good):
        champion = scorer(scorer_key(job, job.version))
        scores = champion.predict_frame(features, job.threads)
        out = pd.DataFrame(
            {
                "entity": _text(good[data.entity]).to_numpy(),
                "score": scores,
                "model_version": job.version,
                "scored_at": pd.Timestamp(job.scored_at),
            }
        )
        if job.shadow_version is not None:
            shadow = scorer(scorer_key(job, job.shadow_version))
            out["shadow_version"] = job.shadow_version
            out["shadow_score"] = shadow.predict_frame(features, job.threads)
        for column in job.carry:
            out[column] = good[column].to_numpy()
        write_part(out, job.staging, name)
        log = features.reset_index(drop=True).assign(
            entity=out["entity"], score=scores, served_version=job.version, time=out["scored_at"], run=job.run_id
        )
        day = f"date={pd.Timestamp(job.scored_at):%Y-%m-%d}"
        write_parquet(log, Path(job.batch_log) / day / f"{job.run_id.removeprefix('run=')}-{name}")
    return {"part": part, "rows_in": len(frame), "rows_scored": len(good), "rows_rejected": len(bad), "worker": _worker()}


def _worker() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return "in-process"


def entity_table(gold: Path, data: DataSettings, as_of: pd.Timestamp, partition_rows: int) -> dd.DataFrame:
    """Every entity of the feature store's offline source with its newest features at ``as_of``."""
    if not gold.exists():
        raise RuntimeError(f"{gold} not found: run the materialize flow first")
    table = dd.read_parquet(str(gold))
    table = table[table[data.timestamp] <= as_of]
    parts = max(1, math.ceil(parquet_rows(gold) / partition_rows))
    meta = table._meta.assign(**{KNOWN: True})
    return table.shuffle(on=data.entity, npartitions=parts).map_partitions(latest_per_entity, data, meta=meta)


def input_rows(source: str | None, gold: Path, data: DataSettings, cfg: BatchSettings, as_of: pd.Timestamp) -> dd.DataFrame:
    """The source's rows (with the entity table joined when it carries ids only), or the entity table."""
    if source is None:
        return entity_table(gold, data, as_of, cfg.partition_rows)
    rows = read_source(source)
    absent = [c for c in data.features if c not in rows.columns]
    ids_only = len(absent) == len(data.features)  # entity ids alone: features come from the feature store
    missing = [c for c in [data.entity, *cfg.carry_columns] if c not in rows.columns]
    if missing or (absent and not ids_only):
        raise SchemaError(missing + ([] if ids_only else absent), source)
    if not ids_only:
        return rows
    ids = rows.assign(**{data.entity: rows[data.entity].astype(str)})
    return ids.merge(entity_table(gold, data, as_of, cfg.partition_rows), on=data.entity, how="left")


def score_on_cluster(
    rows: dd.DataFrame,
    job: BatchJob,
    local_workers: int | None,
    report: Callable[[str], None],
    load: Callable[[str], FastScorer],
) -> list[dict[str, Any]]:
    """Score every partition on the cluster (``DASK_SCHEDULER_ADDRESS``, else a local one); counts per partition.

    ``load`` gives a version's scorer from the registry; it is called once per version, here,
    and only when some worker does not hold that version yet.
    """
    parts = rows.to_delayed()
    tasks = [delayed(score_partition)(part, i, job, dask_key_name=f"score-{job.run_id}-{i}") for i, part in enumerate(parts)]
    done: list[dict[str, Any]] = []
    started = time.monotonic()
    with dask_client(local_workers) as client:
        sent = ship_scorers(client, job, load)
        shipped = "; ".join(f"version {v} loaded and sent to {n} worker(s)" for v, n in sent.items())
        report(f"score: {shipped or 'every worker held the model already'} ({time.monotonic() - started:.1f} s)")
        for future in as_completed(client.compute(tasks)):
            done.append(future.result())
            scored = sum(int(d["rows_in"]) for d in done)
            elapsed = time.monotonic() - started
            report(f"score: {len(done)}/{len(parts)} partitions, {scored} rows (last on {done[-1]['worker']}, {elapsed:.1f} s)")
    return sorted(done, key=lambda d: int(d["part"]))
