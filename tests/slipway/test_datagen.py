import pandas as pd

from slipway.datagen import LEAD_CATEGORICAL, LEAD_NUMERIC, generate_leads
from slipway.settings import FaultSettings, GenerateSettings


def test_generation_is_seeded_and_realistic() -> None:
    cfg = GenerateSettings(rows=5000, seed=3)
    a, b = generate_leads(cfg).frame, generate_leads(cfg).frame
    pd.testing.assert_frame_equal(a, b)
    positive = (a["converted"] == "yes").mean()
    assert 0.08 <= positive <= 0.17
    assert set(LEAD_NUMERIC + LEAD_CATEGORICAL) <= set(a.columns)
    stamps = pd.to_datetime(a["created_at"])
    assert (stamps.max() - stamps.min()).days > 150  # several months


def test_engagement_carries_signal() -> None:
    frame = generate_leads(GenerateSettings(rows=8000)).frame
    converted = frame["converted"] == "yes"
    assert frame.loc[converted, "meetings"].mean() > 1.5 * frame.loc[~converted, "meetings"].mean()


def test_covariate_drift_shifts_the_late_rows() -> None:
    plain = generate_leads(GenerateSettings(rows=6000)).frame
    drifted = generate_leads(GenerateSettings(rows=6000, covariate_drift=1.0)).frame
    late = slice(4500, None)
    assert drifted["page_views"][late].mean() < 0.7 * plain["page_views"][late].mean()


def test_faults_are_disjoint_and_reported() -> None:
    data = generate_leads(
        GenerateSettings(rows=4000, faults=FaultSettings(nulls=0.01, out_of_range=0.01, wrong_types=0.01, duplicates=0.01))
    )
    sizes = {k: len(v) for k, v in data.faults.items()}
    assert sizes == {"nulls": 40, "out_of_range": 40, "wrong_types": 40, "duplicates": 40}
    assert len(data.faulty_rows) == 160
    assert len(data.frame) == 4040
    assert data.frame.loc[data.faults["nulls"]].isna().any(axis=1).all()
    numeric = data.frame.loc[data.faults["out_of_range"], ["page_views", "response_time_hours", "email_opens"]].astype(float)
    assert (numeric < 0).any(axis=1).all()
