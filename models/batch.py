"""Batch scoring of one partition, as a Dask worker runs it.

A partition is validated (bad rows become rejects with a reason, never dropped),
scored with the champion (and the challenger while it is in shadow or canary),
and written as one Parquet part of the run's staging folder, one rejects part and
one part of the batch prediction log the monitor reads. Part names are fixed by
the partition number, so a partition re-run after a lost worker overwrites its own
files instead of adding rows. Each worker process loads a version once
(:func:`scorer`), not once per partition.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from features.gold import KNOWN
from models.fast_scorer import FastScorer
from slipway.lake import write_parquet
from slipway.settings import DataSettings

FLOAT32_MAX = float(np.finfo(np.float32).max)
_SCORERS: dict[tuple[str, str, str], FastScorer] = {}
_LOCK = threading.Lock()
LOADS: dict[str, int] = {}  # version → times this process loaded it (the tests read it through the workers)


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
    carry: list[str] = field(default_factory=list)
    threads: int = 1


def scorer(tracking_uri: str, model_name: str, version: str) -> FastScorer:
    """The version's compiled scorer, loaded once per worker process."""
    key = (tracking_uri, model_name, version)
    with _LOCK:
        if key not in _SCORERS:
            mlflow.set_tracking_uri(tracking_uri)
            inner = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}").unwrap_python_model()
            _SCORERS[key] = FastScorer(inner.pipeline, inner.data)
            LOADS[version] = LOADS.get(version, 0) + 1
        return _SCORERS[key]


def _text(values: pd.Series) -> pd.Series:
    """Values as trimmed text, missing (and empty) as NA."""
    text = values.astype("string").str.strip()
    return text.mask(text == "")


def reasons(frame: pd.DataFrame, data: DataSettings) -> pd.Series:
    """Why each row cannot be scored ("" when it can): the first problem found, naming the column and value."""
    out = pd.Series("", index=frame.index, dtype=object)

    def flag(bad: pd.Series, message: pd.Series | str) -> None:
        fresh = bad & (out == "")
        out[fresh] = message[fresh] if isinstance(message, pd.Series) else message

    flag(_text(frame[data.entity]).isna(), f"missing entity id ({data.entity})")
    if KNOWN in frame.columns:  # ids joined with the entity table
        flag(frame[KNOWN].isna(), "unknown entity: " + frame[data.entity].astype(str).str.slice(0, 40))
    for column in data.numeric:
        raw = frame[column]
        number = pd.to_numeric(raw, errors="coerce").astype(float)
        missing = raw.isna() if pd.api.types.is_numeric_dtype(raw) else _text(raw).isna()
        flag(missing, f"missing feature {column}")
        flag(number.isna() & ~missing, column + ": not a number: " + raw.astype(str).str.slice(0, 40))
        flag(~number.isna() & ~(number.abs() <= FLOAT32_MAX), f"{column}: outside the float32 range")
    for column in data.categorical:
        flag(_text(frame[column]).isna(), f"missing feature {column}")
    return out


def typed_features(frame: pd.DataFrame, data: DataSettings) -> pd.DataFrame:
    """Valid rows' features as the model reads them: numbers as float64, categories as trimmed text."""
    out = pd.DataFrame(index=frame.index)
    for column in data.numeric:
        out[column] = pd.to_numeric(frame[column], errors="coerce").astype("float64")
    for column in data.categorical:
        out[column] = _text(frame[column]).astype(str)
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
        write_parquet(rejects.reset_index(drop=True), Path(job.rejects) / name)
    if len(good):
        champion = scorer(job.tracking_uri, job.model_name, job.version)
        scores = champion.predict_frame(features, job.threads)
        out = pd.DataFrame(
            {
                "entity": _text(good[data.entity]).astype(str).to_numpy(),
                "score": scores,
                "model_version": job.version,
                "scored_at": pd.Timestamp(job.scored_at),
            }
        )
        if job.shadow_version is not None:
            shadow = scorer(job.tracking_uri, job.model_name, job.shadow_version)
            out["shadow_version"] = job.shadow_version
            out["shadow_score"] = shadow.predict_frame(features, job.threads)
        for column in job.carry:
            out[column] = good[column].to_numpy()
        write_parquet(out, Path(job.staging) / name)
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
