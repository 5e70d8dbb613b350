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
    assert split.development.end <= split.test.start
    assert [len(split.development), len(split.test)] == [5100, 900]
    folds = split.folds(3)
    assert [(len(fit), len(valid)) for fit, valid in folds] == [(1275, 1275), (2550, 1275), (3825, 1275)]  # expanding
    for fit, valid in folds:
        assert fit.end <= valid.start and fit.start == split.development.start
    assert len(split.everything()) == 6000 and split.everything().end == split.test.end


def test_split_refuses_a_single_class_slice(frame: pd.DataFrame) -> None:
    early = frame["event_timestamp"] <= frame["event_timestamp"].quantile(0.3)
    no_early_conversions = frame.copy()
    no_early_conversions.loc[early, DATA.label] = 0
    with pytest.raises(ValueError, match=r"fold 1/3's fitting window has only label 0 in its \d+ rows.*fewer train.cv_folds"):
        training.time_split(no_early_conversions, DATA, CFG, "event_timestamp").folds(3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"converted": 0}, r"data.label 'converted': every one of the 6000 labelled rows is 0; a binary label needs both"),
        ({"calls": np.nan}, r"data.numeric: 'calls' is missing in every training row"),
        ({"calls": 3.0}, r"data.numeric: 'calls' has the single value 3.0 in every training row"),
        ({"region": None}, r"data.categorical: 'region' is missing in every training row"),
    ],
)
def test_a_training_set_no_model_can_learn_from_is_refused_by_key(
    frame: pd.DataFrame, change: dict[str, float | int | None], message: str
) -> None:
    training.check_training_set(frame, DATA)  # the generated set is fine
    changed = frame.copy()
    for column, value in change.items():
        changed[column] = value
    with pytest.raises(ValueError, match=message):
        training.check_training_set(changed, DATA)


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
    model = training.refit_xgboost(split.development, DATA, CFG, best.params, best.user_attrs["best_iteration"])
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
    baseline = training.fit_baseline(split.development, DATA, CFG)
    assert metrics.classification_metrics(split.test.y, training.predict_proba(baseline, split.test.X), 0.1)["roc_auc"] > 0.65


def test_scoring_model_behaviour(split: training.Split) -> None:
    pipeline = training.fit_baseline(split.development, DATA, CFG)
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


def test_split_rows_keep_their_position_in_the_time_ordered_frame(frame: pd.DataFrame) -> None:
    ordered = frame.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    split = training.time_split(frame, DATA, CFG, "event_timestamp")
    for part in (split.development, split.test, *split.folds(3)[1]):
        assert (ordered.loc[part.X.index, "event_timestamp"].to_numpy() == part.times.to_numpy()).all()
    assert (split.everything().X.index == ordered.index).all()
