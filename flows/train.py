"""Train flow: point-in-time training set → Optuna over XGBoost vs a baseline → MLflow registry.

Model choice is by time-series cross-validation on the rows older than the test
window. The winner's evaluation fit (those rows only) is scored on the test window:
that is the version's estimate. The registered model is then fitted on every
labelled row, so production learns from the newest data too. Each step is its own
task (visible and retryable in the Prefect UI); they share one MLflow run, which
each task resumes by id.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pandas as pd
from mlflow.data.pandas_dataset import from_pandas
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from sklearn.pipeline import Pipeline

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

    def line(self) -> str:
        auc = self.test_metrics["roc_auc"]
        fitted = f"registered {self.model_name} v{self.version} ({self.winner}) as challenger"
        return f"{fitted}; holdout roc_auc={auc:.4f} (evaluation fit)"


@dataclass(frozen=True)
class Candidate:
    family: str  # xgboost or logistic_regression
    validation_roc_auc: float
    params: dict[str, Any]
    trees: int = 0
    study: str = ""
    history: tuple[float, ...] = ()  # validation ROC-AUC of each trial, in order


@task(retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def load_training_set(settings: Settings) -> pd.DataFrame:
    labels_path = home().gold / "labels.parquet"
    if not labels_path.exists():
        raise RuntimeError(f"{labels_path} not found: run the materialize flow first")
    return training_frame(open_store(), pd.read_parquet(labels_path), settings)


def _joined(values: list[str], limit: int = 4000) -> str:
    """A list as one tag value, within MLflow's limit (the full list is in the logged dataset's profile)."""
    text = ",".join(values) or "unknown"
    return text if len(text) <= limit else f"{text[: limit - 40]}… ({len(values)} in all)"


@task(cache_policy=NO_CACHE)
def log_training_set(frame: pd.DataFrame, settings: Settings, run_id: str) -> tuple[list[dict[str, Any]], str]:
    """Log the training set as the run's input (digest, source, schema); returns the batches it came from and its digest."""
    batches = lake.gold_batches(home())
    with warnings.catch_warnings():  # its hint about integer columns concerns inferred signatures, not this log
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
        dataset = from_pandas(frame, source=str(home().gold / "labels.parquet"), targets=settings.data.label, name="training_set")
    with mlflow.start_run(run_id=run_id):
        mlflow.log_input(dataset, context="training")
        mlflow.log_dict({"batches": batches}, "lineage/batches.json")
    return batches, dataset.digest


def _log_trials(study: optuna.Study) -> None:
    """One nested MLflow run per finished trial of the study, whichever process ran it."""
    for trial in study.get_trials(deepcopy=False, states=tuning.FINISHED):
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True):
            mlflow.log_params(trial.params)
            values = trial.user_attrs.get("validation_metrics", {})
            mlflow.log_metrics({f"validation_{k}": v for k, v in values.items()})
            mlflow.set_tags({"optuna_trial": trial.number, "optuna_state": trial.state.name})


@task(cache_policy=NO_CACHE)
def tune(settings: Settings, split: training.Split, frame: pd.DataFrame, run_id: str) -> Candidate:
    """Optuna over XGBoost; an interrupted study is resumed, not restarted."""
    cfg, logger = settings.train, get_run_logger()
    name, storage = tuning.study_name(settings, frame), optuna_storage(home())
    study = tuning.create_study(cfg, name, storage)
    if already := tuning.finished_trials(study):
        logger.info("resuming Optuna study %s: %d of %d trials already finished", name, already, cfg.n_trials)

    def progress(done: int, wanted: int, best: float | None) -> None:
        logger.info(
            "Optuna trial %d/%d finished; best validation ROC-AUC %s", done, wanted, "-" if best is None else f"{best:.4f}"
        )

    best = tuning.tune(study, split, settings.data, cfg, storage, progress)
    with mlflow.start_run(run_id=run_id):
        _log_trials(study)
        mlflow.log_params({"optuna_study": name, "optuna_workers": cfg.workers})
        mlflow.log_metric("validation_roc_auc_xgboost", float(best.value or 0))
    history = tuple(t.value for t in study.trials if t.value is not None)
    return Candidate("xgboost", float(best.value or 0), dict(best.params), int(best.user_attrs["best_iteration"]), name, history)


@task(cache_policy=NO_CACHE)
def baseline(settings: Settings, split: training.Split, run_id: str) -> Candidate:
    """The logistic baseline on the same folds: the bar XGBoost has to clear."""
    data, cfg = settings.data, settings.train

    def fit(part: training.Part, _: training.Part) -> Pipeline:
        return training.fit_baseline(part, data, cfg)

    mean, _ = tuning.cross_validate(split.folds(cfg.cv_folds), fit, cfg)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metric("validation_roc_auc_baseline", mean["roc_auc"])
    return Candidate("logistic_regression", mean["roc_auc"], {})


def fit_winner(settings: Settings, part: training.Part, winner: Candidate) -> Pipeline:
    if winner.family == "logistic_regression":
        return training.fit_baseline(part, settings.data, settings.train)
    return training.refit_xgboost(part, settings.data, settings.train, winner.params, winner.trees)


@task(cache_policy=NO_CACHE)
def evaluate(
    settings: Settings, split: training.Split, winner: Candidate, history: tuple[float, ...], run_id: str
) -> tuple[dict[str, float], str]:
    """The evaluation fit: the winner fitted on the development rows and scored on the newest, unseen ones.

    Its metrics are the version's estimate; it is logged next to the registered model
    (as ``evaluation_model``) so the promotion policy can compare on rows neither saw.
    """
    model = fit_winner(settings, split.development, winner)
    score = training.predict_proba(model, split.test.X)
    test = metrics.classification_metrics(split.test.y, score, settings.train.top_k_fraction)
    with mlflow.start_run(run_id=run_id):
        if winner.family == "xgboost":
            mlflow.log_params({f"best_{k}": v for k, v in winner.params.items()} | {"best_trees": winner.trees})
        mlflow.log_metrics({f"test_{k}": v for k, v in test.items()})
        plots.log_evaluation(model, split.test.y, score, list(history))
        uri = registry.log_evaluation_model(ScoringModel(model, settings.data), split.test.X.head(5))
    return test, uri


@task(cache_policy=NO_CACHE)
def final_fit(settings: Settings, split: training.Split, winner: Candidate) -> Pipeline:
    """The winner fitted on every labelled row, the newest included: the model that is registered."""
    return fit_winner(settings, split.everything(), winner)


def lineage(
    settings: Settings,
    split: training.Split,
    winner: Candidate,
    study: str,
    evaluation_uri: str,
    batches: list[dict[str, Any]],
    digest: str,
) -> dict[str, str]:
    """What the version was trained on and how, as registry tags."""
    return {
        "git_commit": registry.git_commit(REPO),
        "dvc_data_md5": _joined([b["md5"] for b in batches]),  # the raw batches' contents, as DVC hashes a file
        "bronze_batches": _joined([b["batch_id"] for b in batches]),
        "training_set_digest": digest,
        "feast_feature_service": settings.features.service,
        "params_hash": settings.fingerprint(),
        "optuna_study": study,
        "optuna_storage": tuning.redacted(optuna_storage(home())),
        "training_window_start": split.development.start.isoformat(),
        "training_window_end": split.test.end.isoformat(),  # the registered fit saw every labelled row
        "evaluation_fit_window_end": split.development.end.isoformat(),
        "test_window_start": split.test.start.isoformat(),
        "test_window_end": split.test.end.isoformat(),
        "model_family": winner.family,
        registry.EVALUATION_MODEL_TAG: evaluation_uri,
    }


@task(cache_policy=NO_CACHE)
def register(settings: Settings, split: training.Split, model: Pipeline, tags: dict[str, str], run_id: str) -> str:
    """Log the pyfunc with its lineage, register it and point ``challenger`` at it; returns the version."""
    with mlflow.start_run(run_id=run_id) as run:
        mlflow.set_tags(tags)
        version = registry.log_and_register(
            run, ScoringModel(model, settings.data), split.test.X.head(5), settings.registry.model_name, tags
        )
    registry.set_alias(version, registry.CHALLENGER)
    return version.version


@flow(name="train", log_prints=True)
def train(params: str = "params.yaml") -> TrainResult:
    """Train, register and alias a new challenger."""
    settings = load_params(params)
    data, cfg = settings.data, settings.train
    frame = load_training_set(settings)
    training.check_training_set(frame, data)
    split = training.time_split(frame, data, cfg, EVENT_TIMESTAMP)
    use_experiment(cfg.experiment, home())
    with mlflow.start_run(run_name=f"train-{datetime.now(UTC):%Y%m%d-%H%M%S}") as run:
        mlflow.log_params({"n_rows": len(frame), "n_trials": cfg.n_trials, "features": ",".join(data.features)})
    run_id = run.info.run_id
    batches, digest = log_training_set(frame, settings, run_id)
    tuned, linear = tune(settings, split, frame, run_id), baseline(settings, split, run_id)
    winner = tuned if tuned.validation_roc_auc >= linear.validation_roc_auc else linear
    test, evaluation_uri = evaluate(settings, split, winner, tuned.history, run_id)
    model = final_fit(settings, split, winner)
    version = register(
        settings, split, model, lineage(settings, split, winner, tuned.study, evaluation_uri, batches, digest), run_id
    )
    lake.write_json(
        {"model_version": version, "model_family": winner.family, **{f"test_{k}": v for k, v in test.items()}},
        home().reports / "train_metrics.json",
    )
    name = settings.registry.model_name
    table = "\n".join(f"| {k} | {v:.4f} |" for k, v in test.items())
    summary = f"{name} v{version} ({winner.family}) is now `challenger`"
    create_markdown_artifact(key="train-result", markdown=f"# {summary}\n\n| holdout metric | value |\n|---|---|\n{table}\n")
    result = TrainResult(name, version, run_id, winner.family, test)
    print(result.line())
    return result
