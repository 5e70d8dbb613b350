"""Train flow: point-in-time training set → Optuna over XGBoost vs a baseline → MLflow registry."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import home, load_params
from models import metrics, plots, registry, training, tuning
from models.pyfunc import ScoringModel
from slipway import lake
from slipway.feature_store import EVENT_TIMESTAMP, open_store, training_frame
from slipway.paths import optuna_storage
from slipway.settings import Settings
from slipway.tracking import use_experiment

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class TrainResult:
    model_name: str
    version: str
    run_id: str
    winner: str
    test_metrics: dict[str, float]


@task(retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def load_training_set(settings: Settings) -> pd.DataFrame:
    labels_path = home().gold / "labels.parquet"
    if not labels_path.exists():
        raise RuntimeError(f"{labels_path} not found: run the materialize flow first")
    return training_frame(open_store(), pd.read_parquet(labels_path), settings)


def _md5(path: str) -> str:
    if path.startswith("s3://") or not Path(path).is_file():
        return "unavailable"
    return hashlib.md5(Path(path).read_bytes(), usedforsecurity=False).hexdigest()


def _log_trials(study: optuna.Study) -> None:
    """One nested MLflow run per finished trial of the study, whichever process ran it."""
    for trial in study.get_trials(deepcopy=False, states=tuning.FINISHED):
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
            mlflow.log_params(trial.params)
            values = trial.user_attrs.get("validation_metrics", {})
            mlflow.log_metrics({f"validation_{k}": v for k, v in values.items()})
            mlflow.set_tags({"optuna_trial": trial.number, "optuna_state": trial.state.name})


@task(cache_policy=NO_CACHE)
def train_and_register(settings: Settings, frame: pd.DataFrame) -> TrainResult:
    """Tune, compare with the baseline, refit the winner, evaluate on the holdout, register."""
    data, cfg = settings.data, settings.train
    split = training.time_split(frame, data, cfg, EVENT_TIMESTAMP)
    use_experiment(cfg.experiment, home())
    started = datetime.now(UTC)
    name = tuning.study_name(settings, frame)
    storage = optuna_storage(home())
    logger = get_run_logger()
    with mlflow.start_run(run_name=f"train-{started:%Y%m%d-%H%M%S}") as run:
        mlflow.log_params({"n_rows": len(frame), "n_trials": cfg.n_trials, "features": ",".join(data.features)})
        study = tuning.create_study(cfg, name, storage)
        already = tuning.finished_trials(study)
        if already:
            logger.info("resuming Optuna study %s: %d of %d trials already finished", name, already, cfg.n_trials)

        def progress(done: int, wanted: int, best: float | None) -> None:
            shown = "-" if best is None else f"{best:.4f}"
            logger.info("Optuna trial %d/%d finished; best validation ROC-AUC %s", done, wanted, shown)

        best = tuning.tune(study, split, data, cfg, storage, progress)
        _log_trials(study)
        mlflow.log_params({"optuna_study": name, "optuna_workers": cfg.workers})
        baseline = training.fit_baseline(split.train, data, cfg)
        baseline_val = metrics.classification_metrics(
            split.validation.y, training.predict_proba(baseline, split.validation.X), cfg.top_k_fraction
        )
        mlflow.log_metrics(
            {"validation_roc_auc_xgboost": float(best.value or 0), "validation_roc_auc_baseline": baseline_val["roc_auc"]}
        )
        winner = "xgboost" if (best.value or 0) >= baseline_val["roc_auc"] else "logistic_regression"
        full = split.train_and_validation()
        if winner == "xgboost":
            params = {k: v for k, v in best.params.items()}
            model = training.refit_xgboost(full, data, cfg, params, int(best.user_attrs["best_iteration"]))
            mlflow.log_params({f"best_{k}": v for k, v in params.items()})
        else:
            model = training.fit_baseline(full, data, cfg)
        score = training.predict_proba(model, split.test.X)
        test = metrics.classification_metrics(split.test.y, score, cfg.top_k_fraction)
        mlflow.log_metrics({f"test_{k}": v for k, v in test.items()})
        _log_figures(model, split, score, study)
        lineage = {
            "git_commit": registry.git_commit(REPO),
            "dvc_data_md5": _md5(data.source),
            "feast_feature_service": settings.features.service,
            "params_hash": settings.fingerprint(),
            "optuna_study": name,
            "optuna_storage": tuning.redacted(storage),
            "training_window_start": split.train.start.isoformat(),
            "training_window_end": split.validation.end.isoformat(),
            "test_window_end": split.test.end.isoformat(),
            "model_family": winner,
        }
        mlflow.set_tags(lineage)
        version = registry.log_and_register(
            run, ScoringModel(model, data), split.test.X.head(5), settings.registry.model_name, lineage
        )
    registry.set_alias(version, registry.CHALLENGER)
    lake.write_json(
        {"model_version": version.version, "model_family": winner, **{f"test_{k}": v for k, v in test.items()}},
        home().reports / "train_metrics.json",
    )
    return TrainResult(version.name, version.version, version.run_id, winner, test)


def _log_figures(model: Any, split: training.Split, score: Any, study: optuna.Study) -> None:
    y = split.test.y
    mlflow.log_figure(plots.roc(y, score), "plots/roc.png")
    mlflow.log_figure(plots.precision_recall(y, score), "plots/precision_recall.png")
    mlflow.log_figure(plots.calibration(y, score), "plots/calibration.png")
    estimator = model.named_steps["model"]
    values = getattr(estimator, "feature_importances_", None)
    if values is None:
        values = abs(estimator.coef_[0])
    names = list(model.named_steps["prep"].get_feature_names_out())
    mlflow.log_figure(plots.importance(names, values), "plots/feature_importance.png")
    history = [t.value for t in study.trials if t.value is not None]
    mlflow.log_figure(plots.optimisation_history(history), "plots/optimisation_history.png")


@flow(name="train")
def train(params: str = "params.yaml") -> TrainResult:
    """Train, register and alias a new challenger."""
    settings = load_params(params)
    frame = load_training_set(settings)
    result = train_and_register(settings, frame)
    table = "\n".join(f"| {k} | {v:.4f} |" for k, v in result.test_metrics.items())
    summary = f"{result.model_name} v{result.version} ({result.winner}) is now `challenger`"
    create_markdown_artifact(key="train-result", markdown=f"# {summary}\n\n| holdout metric | value |\n|---|---|\n{table}\n")
    get_run_logger().info(summary)
    print(f"registered {summary}; holdout roc_auc={result.test_metrics['roc_auc']:.4f}")
    return result
