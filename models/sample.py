"""A small, complete deployment built without Prefect, for tests and benchmarks.

Generated leads → silver → gold → Feast (offline and online) → two registered
XGBoost versions, ``champion`` (v1) and ``challenger`` (v2). Environment
(``SLIPWAY_HOME``, ``MLFLOW_TRACKING_URI``) must already point at a scratch home.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from features import feast_defs, gold, validation
from models import registry, training
from models.pyfunc import ScoringModel
from slipway import lake
from slipway.datagen import generate_leads
from slipway.feature_store import open_store
from slipway.paths import Home
from slipway.settings import FaultSettings, Settings
from slipway.tracking import use_experiment


def clean_leads(settings: Settings) -> pd.DataFrame:
    """Generated leads without faults, typed as ingest types them (silver)."""
    assert settings.generate is not None, "the sample deployment needs a generate: section"
    clean = settings.generate.model_copy(update={"faults": FaultSettings()})  # faults are the ingest tests' business
    typed = validation.type_batch(generate_leads(clean).frame.astype(str), settings.data).frame
    typed[settings.data.label] = typed[settings.data.label].astype("int8")
    return typed


def _labelled_features(typed: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    data = settings.data
    return gold.build_labels(typed, data).merge(gold.build_features(typed, data), on=[data.entity, data.timestamp])


def sample_split(settings: Settings) -> training.Split:
    """The sample deployment's training split (clean generated leads, split in time)."""
    frame = _labelled_features(clean_leads(settings), settings)
    return training.time_split(frame, settings.data, settings.train, settings.data.timestamp)


def register_version(
    settings: Settings, split: training.Split, params: dict[str, Any], trees: int, shuffle_labels: bool = False
) -> registry.RegisteredVersion:
    """Fit and register one XGBoost version; ``shuffle_labels`` makes one no better than chance."""
    data, part = settings.data, split.development
    if shuffle_labels:
        part = replace(part, y=np.random.default_rng(0).permutation(part.y))
    pipeline = training.refit_xgboost(part, data, settings.train, params, trees)
    use_experiment("sample-deployment", Home.current())
    with mlflow.start_run() as run:
        model = ScoringModel(pipeline, data)
        return registry.log_and_register(run, model, split.test.X.head(3), settings.registry.model_name, {})


def build_sample_deployment(settings: Settings) -> pd.DataFrame:
    """Build it and return the held-out rows (features plus entity id) for requests."""
    data, home = settings.data, Home.current()
    typed = clean_leads(settings)
    lake.write_parquet(typed, home.silver / "sample.parquet")  # so the materialize and retrain flows can rebuild gold
    lake.write_parquet(gold.build_features(typed, data), home.gold / "features.parquet")
    lake.write_parquet(gold.build_labels(typed, data), home.gold / "labels.parquet")
    store = open_store()
    store.apply(feast_defs.build_definitions(data, settings.features, home).all())
    store.materialize(typed[data.timestamp].min().to_pydatetime(), datetime.now(UTC))
    frame = _labelled_features(typed, settings)  # already in time order, so split rows keep its index
    split = training.time_split(frame, data, settings.train, data.timestamp)
    first = register_version(settings, split, {"max_depth": 3}, 60)
    second = register_version(settings, split, {"max_depth": 5, "learning_rate": 0.05}, 120)
    registry.set_alias(first, registry.CHAMPION)
    registry.set_alias(second, registry.CHALLENGER)
    return split.test.X.assign(**{data.entity: frame.loc[split.test.X.index, data.entity]})
