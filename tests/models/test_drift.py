"""Drift verdicts on real data (scikit-learn's bundled breast-cancer set) and on hand-made cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer

from models.drift import categorical_psi, feature_psi, judge
from slipway.settings import DataSettings, MonitorSettings

CFG = MonitorSettings(min_rows=50)


def cancer() -> tuple[pd.DataFrame, DataSettings]:
    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns=lambda c: c.replace(" ", "_"))
    numeric = [c for c in frame.columns if c != "target"][:12]
    frame["size_band"] = pd.qcut(frame["mean_area"], 3, labels=["small", "medium", "large"]).astype(str)
    data = DataSettings(source="-", entity="id", timestamp="t", label="target", numeric=numeric, categorical=["size_band"])
    return frame, data


def verdict(reference: pd.DataFrame, current: pd.DataFrame, data: DataSettings) -> list[str]:
    return judge(len(current), feature_psi(reference, current, data), 0.0, 0.0, None, (np.array([]), np.array([])), CFG).drift


def test_a_random_split_of_real_data_shows_no_drift() -> None:
    frame, data = cancer()
    shuffled = frame.sample(frac=1.0, random_state=0)
    assert verdict(shuffled.iloc[:285], shuffled.iloc[285:], data) == []


def test_a_real_population_change_is_drift_on_the_features_that_changed() -> None:
    frame, data = cancer()
    benign, malignant = frame[frame["target"] == 1], frame[frame["target"] == 0]
    reasons = verdict(benign, malignant, data)  # a clinic that starts seeing the other population
    assert any(r.startswith("mean_radius: PSI") for r in reasons) and any(r.startswith("size_band: PSI") for r in reasons)
    assert not any(r.startswith("mean_fractal_dimension: PSI") for r in reasons)  # nearly equal in both groups


def test_categorical_psi_counts_new_categories_and_too_few_rows_give_no_verdict() -> None:
    old = pd.Series(["a"] * 50 + ["b"] * 50)
    assert categorical_psi(old, old.sample(frac=1.0, random_state=1)) < 1e-9
    assert categorical_psi(old, pd.Series(["c"] * 100)) > 5
    few = judge(10, {"x": 9.0}, 1.0, 9.0, None, (np.array([]), np.array([])), CFG)
    assert not few.enough_rows and few.drift == []


def test_performance_degradation_needs_enough_labelled_rows() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    noise = rng.random(400)
    empty = (np.array([]), np.array([]))
    assert judge(400, {}, 0.0, 0.0, 0.8, (y, noise), CFG).degraded  # chance-level scores against 0.8 at training
    assert not judge(400, {}, 0.0, 0.0, 0.8, (y[:20], noise[:20]), CFG).degraded
    assert not judge(400, {}, 0.0, 0.0, None, (y, noise), CFG).degraded
    assert judge(400, {}, 0.0, 0.0, None, empty, CFG).current_auc is None
