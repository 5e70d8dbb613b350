"""Model code and behaviour tests on generated data (no servers)."""

import numpy as np
import optuna
import pandas as pd
import pytest

from models import metrics, training, tuning
from models.pyfunc import ScoringModel
from slipway.settings import load_settings
from tests.conftest import REPO
from tests.models.conftest import CFG, DATA


def test_split_is_ordered_in_time(split: training.Split) -> None:
    assert split.train.end <= split.validation.start and split.validation.end <= split.test.start
    sizes = [len(split.train.y), len(split.validation.y), len(split.test.y)]
    assert sizes == [4200, 900, 900]


def test_split_refuses_a_single_class_slice(frame: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="single label class"):
        training.time_split(frame.assign(**{DATA.label: 0}), DATA, CFG, "event_timestamp")


def test_metrics_of_a_perfect_and_a_random_scorer() -> None:
    y = np.array([0, 0, 1, 1, 0, 1, 0, 0, 0, 0])
    perfect = metrics.classification_metrics(y, y.astype(float), 0.3)
    assert perfect["roc_auc"] == 1.0 and perfect["precision_at_k"] == 1.0 and perfect["recall_at_k"] == 1.0
    rng = np.random.default_rng(0)
    y_big = rng.integers(0, 2, 20000)
    assert abs(metrics.classification_metrics(y_big, rng.uniform(size=20000), 0.1)["roc_auc"] - 0.5) < 0.02


def test_tuned_model_learns_the_signal_and_is_valid(split: training.Split) -> None:
    study = tuning.create_study(CFG, "t", None)
    seen: list[int] = []
    best = tuning.tune(study, split, DATA, CFG, progress=lambda done, wanted, best: seen.append(done))
    assert len(study.trials) == 4 and seen == [1, 2, 3, 4] and best.user_attrs["best_iteration"] >= 1
    assert best.user_attrs["validation_metrics"]["roc_auc"] == best.value
    model = training.refit_xgboost(split.train_and_validation(), DATA, CFG, best.params, best.user_attrs["best_iteration"])
    score = training.predict_proba(model, split.test.X)
    assert ((score >= 0) & (score <= 1)).all()
    assert metrics.classification_metrics(split.test.y, score, 0.1)["roc_auc"] > 0.7  # minimum quality


def test_pruning_stops_hopeless_trials(split: training.Split) -> None:
    cfg = CFG.model_copy(update={"n_trials": 12})
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=0),
        pruner=optuna.pruners.ThresholdPruner(lower=0.99, n_warmup_steps=1),
    )
    with pytest.raises(RuntimeError, match="no trial completed"):
        tuning.tune(study, split, DATA, cfg)
    assert {t.state for t in study.trials} == {optuna.trial.TrialState.PRUNED}


def test_baseline_is_a_reasonable_bar(split: training.Split) -> None:
    baseline = training.fit_baseline(split.train, DATA, CFG)
    assert metrics.classification_metrics(split.test.y, training.predict_proba(baseline, split.test.X), 0.1)["roc_auc"] > 0.65


def test_scoring_model_behaviour(split: training.Split) -> None:
    pipeline = training.fit_baseline(split.train, DATA, CFG)
    model = ScoringModel(pipeline, DATA)
    rows = split.test.X.head(50).copy()
    base = model.predict(None, rows)
    # invariance: column order and extra columns do not change scores
    shuffled = rows[list(reversed(rows.columns))].assign(unrelated=1)
    np.testing.assert_allclose(model.predict(None, shuffled), base)
    # directional: more meetings never lowers the score of the linear baseline (positive coefficient)
    more = rows.assign(meetings=rows["meetings"] + 5)
    assert (model.predict(None, more) >= base - 1e-12).all()
    # unseen category is scored, not refused
    assert np.isfinite(model.predict(None, rows.assign(industry="aerospace"))).all()


def test_storage_urls_in_lineage_hide_the_password() -> None:
    shown = tuning.redacted("postgresql+psycopg://slipway:s3cret@db:5432/optuna")
    assert "s3cret" not in shown and shown == "postgresql+psycopg://slipway:***@db:5432/optuna"


def test_the_study_is_named_after_the_data_and_the_search(frame: pd.DataFrame) -> None:
    settings = load_settings(REPO / "params.yaml")
    name = tuning.study_name(settings, frame)
    same_search = settings.model_copy(
        update={
            "train": settings.train.model_copy(update={"n_trials": 99, "workers": 2, "timeout_seconds": 5}),
            "promotion": settings.promotion.model_copy(update={"approvers": ["carol"]}),
        }
    )
    assert tuning.study_name(same_search, frame) == name  # resumable after these changes
    other_search = settings.model_copy(update={"train": settings.train.model_copy(update={"seed": 8})})
    assert tuning.study_name(other_search, frame) != name
    assert tuning.study_name(settings, frame.iloc[1:]) != name
