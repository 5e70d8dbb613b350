"""Score flow: batch scoring on a Dask cluster, every entity of the feature store or the rows of a source.

Partitions are scored in parallel by Dask workers (``models/batch.py``); the run
becomes visible under ``batch.output`` only once every partition is written
(``slipway/batch_io.py``), with a manifest of counts, versions, lineage and the
source's hash. Rejected rows keep their reason; scored rows reach the monitor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import dask.dataframe as dd
import mlflow
import pandas as pd
from distributed import as_completed
from mlflow import MlflowClient
from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from features.gold import KNOWN, latest_per_entity
from features.validation import SchemaError
from flows.common import home, load_params
from models import registry
from models.batch import BatchJob, score_partition
from models.routing import Mode
from slipway.batch_io import RunFolders, dask_client, output_folder, parquet_rows, read_source, source_hash
from slipway.settings import Settings


@dataclass(frozen=True)
class ScoreResult:
    run: str
    model_version: str
    shadow_version: str | None
    rows_in: int
    rows_scored: int
    rows_rejected: int

    def line(self) -> str:
        counts = f"rows_in={self.rows_in} rows_scored={self.rows_scored} rows_rejected={self.rows_rejected}"
        return f"{counts} model_version={self.model_version} run={self.run}"


def entity_table(settings: Settings, as_of: pd.Timestamp) -> dd.DataFrame:
    """Every entity of the feature store's offline source with its newest features at ``as_of``."""
    data, gold = settings.data, home().gold / "features.parquet"
    if not gold.exists():
        raise RuntimeError(f"{gold} not found: run the materialize flow first")
    table = dd.read_parquet(str(gold))
    table = table[table[data.timestamp] <= as_of]
    parts = max(1, math.ceil(parquet_rows(gold) / settings.batch.partition_rows))
    meta = table._meta.assign(**{KNOWN: True})
    return table.shuffle(on=data.entity, npartitions=parts).map_partitions(latest_per_entity, data, meta=meta)


def input_rows(settings: Settings, source: str | None, as_of: pd.Timestamp) -> dd.DataFrame:
    """The source's rows (with the entity table joined when it carries ids only), or the entity table."""
    data = settings.data
    if source is None:
        return entity_table(settings, as_of)
    rows = read_source(source)
    absent = [c for c in data.features if c not in rows.columns]
    ids_only = len(absent) == len(data.features)  # entity ids alone: features come from the feature store
    missing = [c for c in [data.entity, *settings.batch.carry_columns] if c not in rows.columns]
    if missing or (absent and not ids_only):
        raise SchemaError(missing + ([] if ids_only else absent), source)
    if not ids_only:
        return rows
    ids = rows.assign(**{data.entity: rows[data.entity].astype(str)})
    return ids.merge(entity_table(settings, as_of), on=data.entity, how="left")


def versions(settings: Settings) -> tuple[str, str | None]:
    """The champion, and the challenger while it is in shadow or canary (scored beside it)."""
    name = settings.registry.model_name
    champion = registry.alias_version(name, registry.CHAMPION)
    if champion is None:
        raise RuntimeError(f"{name!r} has no champion to score with: promote one first")
    challenger = registry.alias_version(name, registry.CHALLENGER)
    in_evaluation = registry.current_routing(name).mode is not Mode.CHAMPION and challenger != champion
    return champion, challenger if in_evaluation else None


@task(cache_policy=NO_CACHE)
def score_partitions(settings: Settings, rows: dd.DataFrame, job: BatchJob) -> list[dict[str, object]]:
    """Submit one task per partition to the cluster; report each as it finishes."""
    parts = rows.to_delayed()
    with dask_client(settings.batch.local_workers) as client:
        futures = client.compute([_delayed_score(part, i, job) for i, part in enumerate(parts)])
        done: list[dict[str, object]] = []
        for future in as_completed(futures):
            done.append(future.result())
            rows_so_far = sum(int(str(d["rows_in"])) for d in done)
            print(f"score: {len(done)}/{len(parts)} partitions, {rows_so_far} rows (last on {done[-1]['worker']})")
    return sorted(done, key=lambda d: int(str(d["part"])))


def _delayed_score(part: object, index: int, job: BatchJob) -> object:
    from dask import delayed

    return delayed(score_partition)(part, index, job, dask_key_name=f"score-{job.run_id}-{index}")


def _as_of(as_of: str | None, now: datetime) -> pd.Timestamp:
    """``as_of`` as an aware UTC time (a time without a zone is read as UTC, and said so in the manifest)."""
    stamp = pd.Timestamp(as_of) if as_of else pd.Timestamp(now)
    return stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)


@flow(name="score", log_prints=True)
def score(params: str = "params.yaml", source: str | None = None, as_of: str | None = None) -> ScoreResult:
    """Score every entity of the feature store (newest features at ``as_of``, default now) or the rows of ``source``."""
    settings = load_params(params)
    name, now = settings.registry.model_name, datetime.now(UTC)
    cutoff = _as_of(as_of, now)
    champion, shadow = versions(settings)
    folders = RunFolders.new(output_folder(settings.batch.output, home().scores), now)
    job = BatchJob(
        tracking_uri=mlflow.get_tracking_uri(),
        model_name=name,
        version=champion,
        data=settings.data,
        staging=str(folders.staged_scores),
        rejects=str(folders.staged_rejects),
        batch_log=str(home().batch_predictions),
        run_id=folders.run,
        scored_at=now.isoformat(),
        shadow_version=shadow,
        carry=list(settings.batch.carry_columns),
    )
    try:
        stats = score_partitions(settings, input_rows(settings, source, cutoff), job)
        totals = {k: sum(int(str(s[k])) for s in stats) for k in ("rows_in", "rows_scored", "rows_rejected")}
        manifest = {
            **totals,
            "run": folders.run,
            "model": name,
            "model_version": champion,
            "shadow_version": shadow,
            "lineage": MlflowClient().get_model_version(name, champion).tags,
            "as_of": cutoff.isoformat(),
            "source": source or "feature store (offline source of the feature view)",
            "source_md5": source_hash(source) if source else None,
            "scored_at": now.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "partitions": stats,
        }
        path = folders.commit(manifest)
    except BaseException:
        folders.discard()  # nothing partial is ever visible; a re-run starts a new run folder
        raise
    result = ScoreResult(str(path), champion, shadow, totals["rows_in"], totals["rows_scored"], totals["rows_rejected"])
    create_table_artifact(key="score-reconciliation", table=[{**totals, "run": folders.run}], description=result.line())
    print(result.line())
    return result
