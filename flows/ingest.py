"""Ingest flow: raw batch → bronze → Great Expectations → silver + quarantine."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from prefect import Task, flow, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun

from features import expectations, validation
from flows.common import check_source, home, load_params
from slipway import lake, storage
from slipway.settings import Settings


@dataclass(frozen=True)
class Reconciliation:
    """What happened to every row of a batch; rows_in = accepted + quarantined."""

    batch_id: str
    rows_in: int
    rows_accepted: int
    rows_quarantined: int
    already_ingested: bool = False

    def line(self) -> str:
        counts = f"rows_in={self.rows_in} rows_accepted={self.rows_accepted} rows_quarantined={self.rows_quarantined}"
        if self.already_ingested:
            return f"{counts} batch={self.batch_id}: this content is already ingested, nothing to do"
        return f"{counts} batch={self.batch_id}"


def _is_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry network hiccups only: not a missing file, a bad format, or a bug."""
    try:
        state.result()
    except storage.SourceError as exc:
        return exc.transient
    except (ConnectionError, TimeoutError):
        return True
    except Exception:  # noqa: BLE001 - a bug or a bad input: retrying would only repeat it
        return False
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
    parsed = storage.parse(batch)
    try:
        validation.check_schema(parsed.frame.columns, data, batch.source)
    except validation.SchemaError as exc:
        lake.write_json(
            {"batch_id": batch_id, "source": batch.source, "rejected": str(exc), "missing": exc.missing},
            home().quarantine / f"{batch_id}.rejected.json",
        )
        raise
    typed = validation.type_batch(parsed.frame, data)
    run = expectations.validate(typed.frame, data, batch_id)
    lake.write_json(run.to_json(), home().validations / f"{batch_id}.json")
    duplicates = validation.duplicate_followers(typed.frame, [data.entity, data.timestamp], run.duplicate_rows)
    known = lake.silver_keys(home(), data.entity, data.timestamp)
    return validation.decide(parsed, typed, run.failures, duplicates, known, data)


@task(cache_policy=NO_CACHE)
def store_verdict(verdict: validation.Verdict, batch: storage.RawBatch, batch_id: str, settings: Settings) -> Reconciliation:
    """Quarantine the bad rows, then accept the good ones unless too many were bad; record the batch as ingested."""
    for table in (home().silver, home().quarantine):
        table.mkdir(parents=True, exist_ok=True)  # present even when empty, for DVC
    if not verdict.reconciles:
        raise RuntimeError(f"batch {batch_id} does not reconcile: {verdict.rows_in} rows in")
    if len(verdict.quarantined):
        lake.write_parquet(verdict.quarantined, home().quarantine / f"{batch_id}.parquet")
    try:
        validation.check_share(verdict, settings.data, f"{batch.source} (batch {batch_id})")
    except validation.TooManyBadRows as exc:
        lake.write_json(
            {"batch_id": batch_id, "source": batch.source, "rejected": str(exc)},
            home().quarantine / f"{batch_id}.rejected.json",
        )
        raise
    if len(verdict.accepted):
        lake.write_parquet(verdict.accepted, home().silver / f"{batch_id}.parquet")
    result = Reconciliation(batch_id, verdict.rows_in, len(verdict.accepted), len(verdict.quarantined))
    lake.record_ingested(home(), batch, asdict(result))
    return result


@flow(name="ingest", log_prints=True)
def ingest(params: str = "params.yaml") -> Reconciliation:
    """Ingest the configured source; print and publish the row reconciliation.

    The same content ingested again is a no-op that says so; two ingests at once
    take turns deciding and writing silver.
    """
    settings = load_params(params)
    check_source(settings, params)
    batch = fetch_batch(settings.data.source)
    archive_bronze(batch)
    with lake.ingest_lock(home()):
        if done := lake.ingested(home(), batch):
            result = Reconciliation(
                done["batch_id"], done["rows_in"], done["rows_accepted"], done["rows_quarantined"], already_ingested=True
            )
        else:
            batch_id = lake.new_batch_id(batch)
            verdict = validate_batch(batch, batch_id, settings)
            result = store_verdict(verdict, batch, batch_id, settings)
    create_table_artifact(key="ingest-reconciliation", table=[asdict(result)], description=result.line())
    print(result.line())
    return result
