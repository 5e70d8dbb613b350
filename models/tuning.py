"""Optuna search over XGBoost: seeded TPE, pruning through XGBoost's callback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
from optuna_integration import XGBoostPruningCallback

from models.metrics import classification_metrics
from models.training import Split, best_iteration, fit_xgboost, predict_proba
from slipway.settings import DataSettings, TrainSettings

TrialLogger = Callable[[optuna.Trial, dict[str, Any], dict[str, float]], None]


def suggest_params(trial: optuna.Trial) -> dict[str, Any]:
    """The XGBoost search space (tree count is left to early stopping)."""
    return {
        "max_depth": trial.suggest_int("max_depth", 2, 8),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 50.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 20.0, log=True),
        "reg_alpha": trial.suggest_float("reg_alpha", 1e-3, 5.0, log=True),
        "gamma": trial.suggest_float("gamma", 1e-3, 5.0, log=True),
    }


def create_study(cfg: TrainSettings, name: str, storage: str | None) -> optuna.Study:
    """A maximising study; resumable when ``storage`` is persistent."""
    return optuna.create_study(
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=cfg.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=20),
        load_if_exists=True,
    )


def tune(
    study: optuna.Study, split: Split, data: DataSettings, cfg: TrainSettings, log_trial: TrialLogger
) -> optuna.trial.FrozenTrial:
    """Run the search and return the best trial; its params and tree count drive the refit."""

    def objective(trial: optuna.Trial) -> float:
        params = suggest_params(trial)
        pruning = XGBoostPruningCallback(trial, "validation_0-auc")
        pipeline = fit_xgboost(split, data, cfg, params, callbacks=[pruning])
        metrics = classification_metrics(split.validation.y, predict_proba(pipeline, split.validation.X), cfg.top_k_fraction)
        trial.set_user_attr("best_iteration", best_iteration(pipeline))
        log_trial(trial, params, metrics)
        return metrics["roc_auc"]

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=cfg.n_trials, timeout=cfg.timeout_seconds, gc_after_trial=True)
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise RuntimeError(f"study {study.study_name!r}: no trial completed")
    return study.best_trial
