import numpy as np
import pandas as pd

from models.policy import evaluate
from slipway.settings import PromotionSettings

RNG = np.random.default_rng(0)
Y = RNG.integers(0, 2, 4000)
GOOD = Y * 0.6 + RNG.uniform(size=4000) * 0.8  # strongly informative
WEAK = Y * 0.2 + RNG.uniform(size=4000)  # barely informative
SLICES = pd.DataFrame({"region": np.where(np.arange(4000) < 2000, "emea", "apac")})
CFG = PromotionSettings(slices=["region"], min_auc_gain=0.02, max_slice_regression=0.05)


def test_a_better_challenger_passes_with_its_metrics() -> None:
    verdict = evaluate(Y, GOOD, WEAK, SLICES, CFG)
    assert verdict.passed and verdict.metrics["roc_auc_gain"] > 0.1
    assert "slice_region=emea_roc_auc_change" in verdict.metrics


def test_a_worse_challenger_is_refused_with_the_reason() -> None:
    verdict = evaluate(Y, WEAK, GOOD, SLICES, CFG)
    assert not verdict.passed
    assert any("ROC-AUC gain" in r for r in verdict.reasons)


def test_a_slice_regression_is_refused_even_with_overall_gain() -> None:
    challenger = GOOD.copy()
    apac = SLICES["region"].to_numpy() == "apac"
    challenger[apac] = RNG.uniform(size=apac.sum())  # useless on one slice
    champion = np.where(apac, GOOD, WEAK) * 0.5 + WEAK * 0.5
    verdict = evaluate(Y, challenger, champion, SLICES, CFG.model_copy(update={"min_auc_gain": -1.0}))
    assert not verdict.passed
    assert verdict.reasons == [r for r in verdict.reasons if r.startswith("slice region=apac")]


def test_without_a_champion_better_than_chance_is_enough() -> None:
    assert evaluate(Y, WEAK, None, SLICES, CFG).passed
    assert not evaluate(Y, RNG.uniform(size=4000) * 0 + 0.5, None, SLICES, CFG).passed


def test_single_class_window_cannot_pass() -> None:
    verdict = evaluate(np.zeros(100, dtype=int), GOOD[:100], None, SLICES.head(100), CFG)
    assert not verdict.passed and "single label class" in verdict.reasons[0]
