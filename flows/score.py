"""Score flow: batch scoring on a Dask cluster, every entity of the feature store or the rows of a source.

Partitions are scored in parallel by Dask workers (``models/batch.py``); the run
becomes visible under ``batch.output`` only once every partition is written
(``slipway/batch_io.py``), with a manifest of counts, versions, lineage and the
source's hash. Rejected rows keep their reason; scored rows reach the monitor.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime

import dask.dataframe as dd
import mlflow
import pandas as pd
from mlflow import MlflowClient
from prefect import flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import home, load_params
from models import batch, registry
from models.batch import BatchJob
from models.routing import Mode
from slipway.batch_io import RunFolders, output_folder, source_hash, sweep_incomplete
from slipway.orchestration import MIN_SLOT_LEASE_SECONDS, exclusive
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


@task(cache_policy=NO_CACHE)
def input_rows(settings: Settings, source: str | None, as_of: pd.Timestamp) -> dd.DataFrame:
    """The source's rows (with the feature store's newest features when it carries ids only), or every entity."""
    gold = home().gold / "features.parquet"
    return batch.input_rows(source, gold, settings.data, settings.batch, as_of)


def versions(settings: Settings) -> tuple[str, str | None]:
    """The champion, and the challenger while it is in shadow or canary (scored beside it)."""
    name = settings.registry.model_name
    champion = registry.alias_version(name, registry.CHAMPION)
    if champion is None:
        raise RuntimeError(f"{name!r} has no champion to score with: promote one first")
    challenger = registry.alias_version(name, registry.CHALLENGER)
    in_evaluation = registry.current_routing(name).mode is not Mode.CHAMPION and challenger != champion
    return champion, challenger if in_evaluation else None


def fingerprint(name: str, version: str) -> str:
    """What tells this model version from another that reuses its number (a registry recreated under the same URI)."""
    found = MlflowClient().get_model_version(name, version)
    return f"{found.run_id}:{found.creation_timestamp}"


@task(cache_policy=NO_CACHE)
def score_partitions(settings: Settings, rows: dd.DataFrame, job: BatchJob) -> list[dict[str, object]]:
    """One task per partition on the cluster, each reported as it finishes."""
    name = settings.registry.model_name
    return batch.score_on_cluster(rows, job, settings.batch.local_workers, print, lambda v: registry.load_scorer(name, v))


def _as_of(as_of: str | None, now: datetime) -> pd.Timestamp:
    """``as_of`` as an aware UTC time (a time without a zone is read as UTC, and said so in the manifest)."""
    stamp = pd.Timestamp(as_of) if as_of else pd.Timestamp(now)
    return stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)


@flow(name="score", log_prints=True)
def score(params: str = "params.yaml", source: str | None = None, as_of: str | None = None) -> ScoreResult:
    """Score every entity of the feature store (newest features at ``as_of``, default now) or the rows of ``source``."""
    settings = load_params(params)
    now = datetime.now(UTC)
    cutoff = _as_of(as_of, now)
    champion, shadow = versions(settings)
    output = output_folder(settings.batch.output, home().scores)
    slot = f"slipway-score-{hashlib.sha256(output.encode()).hexdigest()[:12]}"  # one run at a time per output
    with exclusive(slot, MIN_SLOT_LEASE_SECONDS, what=f"score runs into {output}"):
        for left in sweep_incomplete(output):
            print(f"removed {left}: left by a score run that died before it finished")
        return run_once(settings, source, cutoff, RunFolders.new(output, now), (champion, shadow), now)


def run_once(
    settings: Settings,
    source: str | None,
    cutoff: pd.Timestamp,
    folders: RunFolders,
    models: tuple[str, str | None],
    now: datetime,
) -> ScoreResult:
    """Score ``models`` (champion, shadow) into ``folders``' staging, then commit; a failure leaves nothing behind."""
    name, (champion, shadow) = settings.registry.model_name, models
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
        fingerprints={v: fingerprint(name, v) for v in (champion, shadow) if v is not None},
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
        folders.discard(partial=True)  # nothing partial is left; a re-run starts a new run folder
        raise
    result = ScoreResult(path, champion, shadow, totals["rows_in"], totals["rows_scored"], totals["rows_rejected"])
    create_table_artifact(key="score-reconciliation", table=[{**totals, "run": folders.run}], description=result.line())
    print(result.line())
    return result
