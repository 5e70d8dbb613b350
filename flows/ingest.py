"""Ingest flow: raw batch → bronze → Great Expectations → silver + quarantine."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from prefect import Task, flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun

from features import expectations, validation
from flows.common import ensure_demo_source, home, load_params
from slipway import lake, storage
from slipway.settings import Settings


@dataclass(frozen=True)
class Reconciliation:
    """What happened to every row of a batch; rows_in = accepted + quarantined."""

    batch_id: str
    rows_in: int
    rows_accepted: int
    rows_quarantined: int

    def line(self) -> str:
        counts = f"rows_in={self.rows_in} rows_accepted={self.rows_accepted} rows_quarantined={self.rows_quarantined}"
        return f"{counts} batch={self.batch_id}"


def _is_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry network hiccups, not a missing file or a bad format."""
    try:
        state.result()
    except storage.SourceError as exc:
        return exc.transient
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return False


@task(retries=3, retry_delay_seconds=[1, 5, 15], retry_condition_fn=_is_transient, cache_policy=NO_CACHE)
def fetch_batch(source: str) -> storage.RawBatch:
    return storage.fetch(source)


@task(cache_policy=NO_CACHE)
def archive_bronze(batch: storage.RawBatch) -> str:
    return str(lake.archive_bronze(home(), batch))


@task(cache_policy=NO_CACHE)
def validate_batch(batch: storage.RawBatch, batch_id: str, settings: Settings) -> validation.Verdict:
    """Type the batch, run the GX suite, keep its results, and decide each row."""
    data = settings.data
    raw = storage.parse(batch)
    try:
        validation.check_schema(raw.columns, data, batch.source)
    except validation.SchemaError as exc:
        lake.write_json(
            {"batch_id": batch_id, "source": batch.source, "rejected": str(exc), "missing": exc.missing},
            home().quarantine / f"{batch_id}.rejected.json",
        )
        raise
    typed = validation.type_batch(raw, data)
    run = expectations.validate(typed.frame, data, batch_id)
    lake.write_json(run.to_json(), home().validations / f"{batch_id}.json")
    duplicates = validation.duplicate_followers(typed.frame, [data.entity, data.timestamp], run.duplicate_rows)
    known = lake.silver_keys(home(), data.entity, data.timestamp)
    return validation.decide(raw, typed, run.failures, duplicates, known, data)


@task(cache_policy=NO_CACHE)
def store_verdict(verdict: validation.Verdict, batch_id: str) -> Reconciliation:
    for table in (home().silver, home().quarantine):
        table.mkdir(parents=True, exist_ok=True)  # present even when empty, for DVC
    if not verdict.reconciles:
        raise RuntimeError(f"batch {batch_id} does not reconcile: {verdict.rows_in} rows in")
    if len(verdict.quarantined):
        lake.write_parquet(verdict.quarantined, home().quarantine / f"{batch_id}.parquet")
    if len(verdict.accepted):
        lake.write_parquet(verdict.accepted, home().silver / f"{batch_id}.parquet")
    return Reconciliation(batch_id, verdict.rows_in, len(verdict.accepted), len(verdict.quarantined))


@flow(name="ingest", log_prints=True)
def ingest(params: str = "params.yaml") -> Reconciliation:
    """Ingest the configured source; print and publish the row reconciliation."""
    settings = load_params(params)
    ensure_demo_source(settings)
    batch = fetch_batch(settings.data.source)
    archive_bronze(batch)
    batch_id = lake.new_batch_id(batch)
    verdict = validate_batch(batch, batch_id, settings)
    result = store_verdict(verdict, batch_id)
    create_table_artifact(key="ingest-reconciliation", table=[asdict(result)], description=result.line())
    print(result.line())
    return result
