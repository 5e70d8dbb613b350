"""A small, complete deployment built without Prefect, for tests and benchmarks.

Generated leads → silver → gold → Feast (offline and online) → two registered
XGBoost versions, ``champion`` (v1) and ``challenger`` (v2). Environment
(``SLIPWAY_HOME``, ``MLFLOW_TRACKING_URI``) must already point at a scratch home.
"""

from __future__ import annotations

from datetime import UTC, datetime

import mlflow
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


def build_sample_deployment(settings: Settings) -> pd.DataFrame:
    """Build it and return the held-out rows (features plus entity id) for requests."""
    data, home = settings.data, Home.current()
    assert settings.generate is not None, "the sample deployment needs a generate: section"
    clean = settings.generate.model_copy(update={"faults": FaultSettings()})  # faults are the ingest tests' business
    typed = validation.type_batch(generate_leads(clean).frame.astype(str), data).frame
    typed[data.label] = typed[data.label].astype("int8")
    lake.write_parquet(gold.build_features(typed, data), home.gold / "features.parquet")
    store = open_store()
    store.apply(feast_defs.build_definitions(data, settings.features, home).all())
    store.materialize(typed[data.timestamp].min().to_pydatetime(), datetime.now(UTC))
    frame = gold.build_labels(typed, data).merge(gold.build_features(typed, data), on=[data.entity, data.timestamp])
    split = training.time_split(frame, data, settings.train, data.timestamp)
    use_experiment("sample-deployment", home)
    versions = []
    for params, trees in (({"max_depth": 3}, 60), ({"max_depth": 5, "learning_rate": 0.05}, 120)):
        pipeline = training.refit_xgboost(split.train, data, settings.train, params, trees)
        with mlflow.start_run() as run:
            model = ScoringModel(pipeline, data)
            versions.append(registry.log_and_register(run, model, split.test.X.head(3), settings.registry.model_name, {}))
    registry.set_alias(versions[0], registry.CHAMPION)
    registry.set_alias(versions[1], registry.CHALLENGER)
    return split.test.X.assign(**{data.entity: frame.loc[split.test.X.index, data.entity]})
