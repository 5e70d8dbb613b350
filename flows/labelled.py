"""Labelled rows the promote and monitor flows judge models by, read from gold and through Feast."""

from __future__ import annotations

import pandas as pd

from features import gold
from flows.common import home
from models import training
from slipway.feature_store import EVENT_TIMESTAMP, open_store, training_frame
from slipway.settings import Settings


def latest_labels(settings: Settings) -> pd.Series:
    """Each entity's most recent label from gold, indexed by entity id as text (how the prediction log keeps it)."""
    return gold.latest_labels(pd.read_parquet(home().gold / "labels.parquet"), settings.data)


def evaluation_window(settings: Settings) -> training.Part:
    """The newest, held-out slice of gold as the training split defines it, read through Feast."""
    frame = training_frame(open_store(), pd.read_parquet(home().gold / "labels.parquet"), settings)
    return training.time_split(frame, settings.data, settings.train, EVENT_TIMESTAMP).test
