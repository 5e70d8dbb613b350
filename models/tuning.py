"""Optuna search over XGBoost on time-series cross-validation: seeded TPE, pruning between folds.

A study lives in a storage (SQLite under ``SLIPWAY_HOME`` by default, PostgreSQL in
production) under a name derived from the training set and the settings, so a run
that was interrupted resumes the same study instead of starting over. With
``train.workers`` above one, that many processes share the study through the
storage, each running whole trials, as Optuna's docs recommend for parallel search.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import warnings
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from sklearn.pipeline import Pipeline
from sqlalchemy.engine import make_url

from models.metrics import classification_metrics
from models.training import Part, Split, best_iteration, fit_xgboost, predict_proba
from slipway.processes import cpu_threads
from slipway.settings import DataSettings, Settings, TrainSettings

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
Progress = Callable[[int, int, float | None], None]  # finished trials, wanted trials, best value so far


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


CONNECTIONS_PER_PROCESS = 2  # the trial loop and the heartbeat thread: the most one process can hold


def open_storage(url: str) -> RDBStorage:
    """A database storage whose trials send heartbeats, holding at most ``CONNECTIONS_PER_PROCESS`` connections.

    A trial left ``RUNNING`` by a killed process stops beating; after the grace
    period the next worker marks it failed and a retry of it is queued. SQLAlchemy's
    default pool would let each process open up to 15 connections; with
    ``train.workers`` processes a run holds at most ``(workers + 1) * 2`` (see the
    README's connection budget).
    """
    engine: dict[str, Any] = {"pool_pre_ping": True}
    if not url.startswith("sqlite"):
        engine |= {"pool_size": CONNECTIONS_PER_PROCESS, "max_overflow": 0, "pool_timeout": 60}
    with warnings.catch_warnings():  # heartbeats are marked experimental; they are what resumption needs
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(
            url,
            engine_kwargs=engine,
            heartbeat_interval=5,
            grace_period=20,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
        )


def redacted(url: str) -> str:
    """The storage URL with any password masked, fit for lineage tags and logs."""
    return make_url(url).render_as_string(hide_password=True)


def _sampler(cfg: TrainSettings, worker: int = 0) -> optuna.samplers.TPESampler:
    # constant_liar: running trials count as bad results, so parallel workers spread out.
    return optuna.samplers.TPESampler(seed=cfg.seed + worker, constant_liar=True)


def _pruner() -> optuna.pruners.MedianPruner:
    # steps are cross-validation folds: after the first fold a trial below the median is stopped
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)


def create_study(cfg: TrainSettings, name: str, storage: str | None) -> optuna.Study:
    """A maximising study; an existing one of that name is resumed when ``storage`` is persistent."""
    return optuna.create_study(
        study_name=name,
        storage=open_storage(storage) if storage else None,
        direction="maximize",
        sampler=_sampler(cfg),
        pruner=_pruner(),
        load_if_exists=True,
    )


def study_name(settings: Settings, frame: pd.DataFrame) -> str:
    """Same training set and search, same study: a re-run after a crash resumes it.

    Only what changes the search counts: the data and feature settings and the
    training settings but for the trial budget, the time limit and the worker count
    (raising ``train.n_trials`` continues the study). Promotion or serving settings
    do not start a new study.
    """
    search = {
        "data": settings.data.model_dump(mode="json"),
        "features": settings.features.model_dump(mode="json"),
        "train": settings.train.model_dump(mode="json", exclude={"n_trials", "timeout_seconds", "workers"}),
    }
    digest = hashlib.sha256(json.dumps(search, sort_keys=True).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return f"{settings.registry.model_name}-{digest.hexdigest()[:12]}"


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def cross_validate(
    folds: list[tuple[Part, Part]], fit: Callable[[Part, Part], Pipeline], cfg: TrainSettings, trial: optuna.Trial | None = None
) -> tuple[dict[str, float], list[Pipeline]]:
    """Mean validation metrics over expanding time windows, and each fold's fitted pipeline.

    With a ``trial`` the running mean is reported after every fold, so the pruner can
    stop a hopeless trial early.
    """
    per_fold: list[dict[str, float]] = []
    fitted: list[Pipeline] = []
    for step, (fit_part, validation) in enumerate(folds):
        pipeline = fit(fit_part, validation)
        per_fold.append(classification_metrics(validation.y, predict_proba(pipeline, validation.X), cfg.top_k_fraction))
        fitted.append(pipeline)
        if trial is not None:
            trial.report(float(np.mean([m["roc_auc"] for m in per_fold])), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
    mean = {key: float(np.mean([m[key] for m in per_fold])) for key in per_fold[0]}
    return mean, fitted


def _objective(split: Split, data: DataSettings, cfg: TrainSettings, threads: int) -> Callable[[optuna.Trial], float]:
    folds = split.folds(cfg.cv_folds)

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("pid", os.getpid())  # which worker ran it
        params = suggest_params(trial)

        def fit(part: Part, validation: Part) -> Pipeline:
            return fit_xgboost(part, validation, data, cfg, params, threads=threads)

        metrics, fitted = cross_validate(folds, fit, cfg, trial)
        trial.set_user_attr("best_iteration", round(float(np.mean([best_iteration(p) for p in fitted]))))
        trial.set_user_attr("validation_metrics", metrics)
        return metrics["roc_auc"]

    return objective


def _worker(storage: str, name: str, split: Split, data: DataSettings, cfg: TrainSettings, worker: int, threads: int) -> None:
    """One worker process: load the shared study and run trials until it has enough."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=open_storage(storage), sampler=_sampler(cfg, worker), pruner=_pruner())
    if finished_trials(study) >= cfg.n_trials:
        return
    done = MaxTrialsCallback(cfg.n_trials, states=FINISHED)
    study.optimize(_objective(split, data, cfg, threads), timeout=cfg.timeout_seconds, gc_after_trial=True, callbacks=[done])


def tune(
    study: optuna.Study,
    split: Split,
    data: DataSettings,
    cfg: TrainSettings,
    storage: str | None = None,
    progress: Progress | None = None,
) -> optuna.trial.FrozenTrial:
    """Run the trials the study still lacks and return its best trial.

    Trials already finished in the study (by an interrupted run, or other workers)
    count towards ``cfg.n_trials``. A trial is scored by its mean ROC-AUC over
    ``cfg.cv_folds`` expanding time windows; it keeps those mean metrics and its mean
    early-stopped tree count as user attributes, and the refits use the latter.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    workers = cfg.workers
    threads = max(1, cpu_threads() // workers)

    def report(*_: Any) -> None:
        if progress is not None:
            best = [t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]
            progress(finished_trials(study), cfg.n_trials, max(best, default=None))

    remaining = cfg.n_trials - finished_trials(study)
    if remaining > 0 and workers == 1:
        objective = _objective(split, data, cfg, threads)
        study.optimize(objective, n_trials=remaining, timeout=cfg.timeout_seconds, gc_after_trial=True, callbacks=[report])
    elif remaining > 0:
        if storage is None:
            raise ValueError("train.workers > 1 needs a study storage the workers share (a database URL)")
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(_worker, storage, study.study_name, split, data, cfg, i, threads) for i in range(workers)]
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=10, return_when=FIRST_EXCEPTION)
                report()
                for future in done:
                    future.result()  # a worker's error is the run's error
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise RuntimeError(f"study {study.study_name!r}: no trial completed")
    return study.best_trial
