"""Behavioural tests of a trained model (Made-With-ML style): invariance, direction, minimum quality.

The model is the registered kind (a ``ScoringModel`` around the refitted XGBoost
pipeline), fitted on generated leads whose effects are known from the generator.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from models import metrics, training
from models.pyfunc import ScoringModel
from tests.models.conftest import CFG, DATA, lead_frame

PARAMS = {"max_depth": 3, "learning_rate": 0.05, "min_child_weight": 5}


@pytest.fixture(scope="module")
def model(split: training.Split) -> ScoringModel:
    return ScoringModel(training.refit_xgboost(split.development, DATA, CFG, PARAMS, 200), DATA)


@pytest.fixture(scope="module")
def rows(split: training.Split) -> pd.DataFrame:
    return split.test.X


def test_invariance_to_batching_column_order_extra_columns_and_integer_types(model: ScoringModel, rows: pd.DataFrame) -> None:
    base = model.predict(None, rows)
    np.testing.assert_allclose(model.predict(None, rows.iloc[::-1])[::-1], base)  # a row scores alone as in any batch
    np.testing.assert_allclose(model.predict(None, rows.iloc[[7]]), base[[7]])
    rearranged = rows[list(reversed(rows.columns))].assign(lead_id="L1", created_at="2026-05-01", note="irrelevant")
    np.testing.assert_allclose(model.predict(None, rearranged), base)
    counts = [c for c in DATA.numeric if (rows[c] == rows[c].round()).all()]
    np.testing.assert_allclose(model.predict(None, rows.astype(dict.fromkeys(counts, "int64"))), base)


@pytest.mark.parametrize(
    ("column", "change", "direction"),
    [("meetings", 2, +1), ("page_views", 20, +1), ("email_clicks", 3, +1), ("response_time_hours", 24, -1)],
)
def test_direction_of_known_effects(model: ScoringModel, rows: pd.DataFrame, column: str, change: float, direction: int) -> None:
    """More engagement raises a lead's score; a slower first response lowers it."""
    base = model.predict(None, rows)
    moved = (model.predict(None, rows.assign(**{column: rows[column] + change})) - base) * direction
    assert moved.mean() > 0.005
    assert (moved >= -1e-9).mean() >= 0.9  # a tree model may wobble on a few rows, never on most


def test_a_referral_outscores_a_cold_outbound_lead(model: ScoringModel, rows: pd.DataFrame) -> None:
    referral = model.predict(None, rows.assign(lead_source="referral"))
    cold = model.predict(None, rows.assign(lead_source="cold_outbound"))
    assert (referral - cold).mean() > 0.05


def test_minimum_quality_on_a_fixed_dataset(model: ScoringModel) -> None:
    fixed = lead_frame(3000, seed=11)  # another seed than training: the same market, other leads
    score = model.predict(None, fixed)
    assert ((score > 0) & (score < 1)).all()
    assert metrics.classification_metrics(fixed[DATA.label].to_numpy(), score, 0.1)["roc_auc"] >= 0.74
