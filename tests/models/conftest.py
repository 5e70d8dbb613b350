"""Shared data for the model tests: generated leads typed, joined and split by time."""

import pandas as pd
import pytest

from features import gold, validation
from models import training
from slipway.datagen import generate_leads
from slipway.settings import GenerateSettings, TrainSettings, load_settings
from tests.conftest import REPO

DATA = load_settings(REPO / "params.yaml").data
CFG = TrainSettings(n_trials=4, max_estimators=300, seed=1)


def lead_frame(rows: int, seed: int) -> pd.DataFrame:
    """Generated leads typed, with features and labels joined as the training set has them."""
    raw = generate_leads(GenerateSettings(rows=rows, seed=seed)).frame.astype(str)
    silver = validation.type_batch(raw, DATA).frame
    silver[DATA.label] = silver[DATA.label].astype("int8")
    joined = gold.build_labels(silver, DATA).merge(gold.build_features(silver, DATA), on=[DATA.entity, DATA.timestamp])
    return joined.rename(columns={DATA.timestamp: "event_timestamp"})


@pytest.fixture(scope="package")
def frame() -> pd.DataFrame:
    return lead_frame(6000, seed=5)


@pytest.fixture(scope="package")
def split(frame: pd.DataFrame) -> training.Split:
    return training.time_split(frame, DATA, CFG, "event_timestamp")
