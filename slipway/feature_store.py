"""Opening the Feast store and reading from it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from feast import FeatureStore

from slipway.settings import Settings

FEATURE_REPO = Path(__file__).resolve().parent.parent / "feature_repo"
EVENT_TIMESTAMP = "event_timestamp"


def open_store(repo: Path = FEATURE_REPO) -> FeatureStore:
    """The store configured by ``feature_repo/feature_store.yaml`` (``${SLIPWAY_HOME}`` expanded)."""
    return FeatureStore(repo_path=str(repo))


def training_frame(store: FeatureStore, labels: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Point-in-time join of the feature service onto label events.

    Each label gets the latest feature values at or before its event time, so no
    feature from the future leaks into training.
    """
    data = settings.data
    entity_df = labels.rename(columns={data.timestamp: EVENT_TIMESTAMP})
    service = store.get_feature_service(settings.features.service)
    frame = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    return frame.sort_values([EVENT_TIMESTAMP, data.entity], kind="stable").reset_index(drop=True)
