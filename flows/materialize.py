"""Materialize flow: silver → gold → ``feast apply`` → online store."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from features import feast_defs, gold
from flows.common import home, load_params
from slipway import lake
from slipway.feature_store import open_store
from slipway.settings import Settings


@task(cache_policy=NO_CACHE)
def build_gold(settings: Settings) -> pd.DataFrame:
    """Rebuild gold features and labels from all of silver."""
    silver = lake.read_table(home().silver)
    if silver.empty:
        raise RuntimeError(f"silver is empty under {home().silver}: run the ingest flow first")
    features = gold.build_features(silver, settings.data)
    lake.write_parquet(features, home().gold / "features.parquet")
    lake.write_parquet(gold.build_labels(silver, settings.data), home().gold / "labels.parquet")
    lake.write_json({"batches": lake.silver_batches(home())}, home().gold / lake.GOLD_BATCHES)  # what gold was built from
    return features


@task(retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def apply_and_materialize(settings: Settings, first_event: datetime, last_event: datetime) -> str:
    """``feast apply``, then load the online store.

    The first run materializes the whole history; later runs are incremental from
    the end of the previous one, as Feast intends.
    """
    store = open_store()
    definitions = feast_defs.build_definitions(settings.data, settings.features, home())
    store.apply(definitions.all())
    view = store.get_feature_view(settings.features.view)
    end = max(datetime.now(UTC), last_event)
    # Feast records a window only once it is fully loaded, so a re-run after a failure
    # loads the same window again (writes are idempotent) and the store ends complete.
    try:
        if view.materialization_intervals:
            store.materialize_incremental(end_date=end, feature_views=[view.name])
            return "incremental"
        store.materialize(start_date=first_event, end_date=end, feature_views=[view.name])
        return "full"
    except Exception as exc:
        raise RuntimeError(f"loading {view.name} into the online store failed: {printable(exc)}") from exc


def printable(exc: BaseException, limit: int = 600) -> str:
    """The error as readable text: online stores quote binary keys (NUL bytes PostgreSQL refuses in Prefect's state)."""
    text = "".join(c if c.isprintable() else "?" for c in f"{type(exc).__name__}: {exc}")
    return text if len(text) <= limit else f"{text[: limit // 3]} … {text[-(2 * limit) // 3 :]}"


@flow(name="materialize", log_prints=True)
def materialize(params: str = "params.yaml") -> int:
    """Build gold features and load them into Feast's offline and online stores."""
    settings = load_params(params)
    features = build_gold(settings)
    stamps = features[settings.data.timestamp]
    mode = apply_and_materialize(settings, stamps.min().to_pydatetime(), stamps.max().to_pydatetime())
    print(f"materialized {len(features)} feature rows ({mode})")
    return len(features)
