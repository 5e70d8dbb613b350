"""The service's compiled scorer gives the registered pipeline's scores, for both model families."""

import numpy as np
import pandas as pd
import pytest

from features import gold
from models import fast_scorer, training
from models.fast_scorer import DensePredict, FastScorer
from tests.models.conftest import CFG, DATA


@pytest.mark.parametrize("family", ["xgboost", "logistic_regression"])
def test_compiled_scores_equal_the_pipeline(family: str, split: training.Split) -> None:
    if family == "xgboost":
        pipeline = training.refit_xgboost(split.development, DATA, CFG, {"max_depth": 4}, 60)
    else:
        pipeline = training.fit_baseline(split.development, DATA, CFG)
    rows = [{str(k): v for k, v in r.items()} for r in split.test.X.head(200).to_dict("records")]
    rows[0]["industry"] = "aerospace"  # unseen category
    rows[1]["page_views"] = None  # missing number
    rows[2]["region"] = None  # missing category
    rows[3]["lead_source"] = f"  {rows[3]['lead_source']} "  # padded: trimmed, as ingest and the pyfunc trim
    rows[4]["industry"] = "   "  # blank: missing
    expected = training.predict_proba(pipeline, gold.to_feature_frame(pd.DataFrame(rows), DATA))
    np.testing.assert_allclose(FastScorer(pipeline, DATA).predict(rows), expected, rtol=1e-6, atol=1e-9)
    frame = pd.DataFrame(rows)
    np.testing.assert_allclose(FastScorer(pipeline, DATA).predict_frame(frame, threads=2), expected, rtol=1e-6, atol=1e-9)
    typed = frame.astype({"calls": "Int64"})  # an integer column as a source types it, with a missing value
    typed.loc[5, "calls"] = pd.NA
    rows[5]["calls"] = None
    again = training.predict_proba(pipeline, gold.to_feature_frame(pd.DataFrame(rows), DATA))
    np.testing.assert_allclose(FastScorer(pipeline, DATA).predict_frame(typed), again, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("family", ["xgboost", "logistic_regression"])
def test_frame_scores_cross_chunk_boundaries(family: str, split: training.Split, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch scoring fills one reused matrix a chunk at a time: no row keeps a value from an earlier chunk."""
    if family == "xgboost":
        pipeline = training.refit_xgboost(split.development, DATA, CFG, {"max_depth": 4}, 60)
    else:
        pipeline = training.fit_baseline(split.development, DATA, CFG)
    frame = split.test.X.head(103).reset_index(drop=True)
    frame.loc[frame.index % 2 == 0, "industry"] = "aerospace"  # unseen: all zeros, where the row before had a one
    frame.loc[frame.index % 3 == 0, "page_views"] = np.nan
    expected = training.predict_proba(pipeline, gold.to_feature_frame(frame, DATA))
    scorer = FastScorer(pipeline, DATA)
    monkeypatch.setattr(fast_scorer, "CHUNK_ROWS", 10)  # 11 chunks, the last one short
    np.testing.assert_allclose(scorer.predict_frame(frame), expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(scorer.predict_frame(frame.head(5)), expected[:5], rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(scorer.predict_frame(frame.head(0)), np.empty(0))


def test_direct_prediction_equals_inplace_predict(split: training.Split) -> None:
    """The direct C call returns XGBoost's own predictions, bit for bit, for one row, many rows and missing values."""
    pipeline = training.refit_xgboost(split.development, DATA, CFG, {"max_depth": 4}, 60)
    booster = pipeline.named_steps["model"].get_booster()
    scorer = FastScorer(pipeline, DATA)
    x = np.random.default_rng(7).normal(size=(500, scorer.layout.width)).astype(np.float32)
    x[::7, 0] = np.nan
    for rows in (x[:1], x):
        assert np.array_equal(DensePredict(booster)(rows), booster.inplace_predict(rows))
    assert np.array_equal(DensePredict(booster)(x.astype(float)), booster.inplace_predict(x))
    assert DensePredict(booster)(x[:0]).shape == (0,)
    with pytest.raises(ValueError, match="Feature shape mismatch"):  # a broken model fails when it scores, as XGBoost's
        DensePredict(booster)(np.zeros((1, scorer.layout.width + 1), dtype=np.float32))
