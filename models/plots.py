"""Diagnostic figures logged with every training run."""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve


def _figure(title: str) -> tuple[Figure, Axes]:
    """A figure outside pyplot's global state: no backend to pick, nothing left open."""
    fig = Figure(figsize=(5, 4), dpi=100)
    ax = fig.subplots()
    ax.set_title(title)
    return fig, ax


def roc(y: np.ndarray, score: np.ndarray) -> Figure:
    fig, ax = _figure("ROC (test)")
    fpr, tpr, _ = roc_curve(y, score)
    ax.plot(fpr, tpr)
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    return fig


def precision_recall(y: np.ndarray, score: np.ndarray) -> Figure:
    fig, ax = _figure("Precision-recall (test)")
    precision, recall, _ = precision_recall_curve(y, score)
    ax.plot(recall, precision)
    ax.axhline(y.mean(), linestyle="--", color="grey")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    return fig


def calibration(y: np.ndarray, score: np.ndarray) -> Figure:
    fig, ax = _figure("Calibration (test)")
    observed, predicted = calibration_curve(y, score, n_bins=10, strategy="quantile")
    ax.plot(predicted, observed, marker="o")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed positive rate")
    return fig


def importance(names: list[str], values: np.ndarray, top: int = 20) -> Figure:
    fig, ax = _figure("Feature importance")
    order = np.argsort(values)[-top:]
    ax.barh([names[i] for i in order], values[order])
    fig.tight_layout()
    return fig


def optimisation_history(values: list[float]) -> Figure:
    fig, ax = _figure("Optimisation history (validation ROC-AUC)")
    trials = np.arange(len(values))
    ax.scatter(trials, values, s=12)
    ax.plot(trials, np.maximum.accumulate(values), color="tab:red")
    ax.set_xlabel("trial")
    ax.set_ylabel("ROC-AUC")
    return fig


def score_distributions(scores: dict[str, np.ndarray]) -> Figure:
    """Histograms of each version's scores on the same rows (e.g. champion and challenger in shadow)."""
    fig, ax = _figure("Score distribution on the same live rows")
    bins = [i / 40 for i in range(41)]
    for label, values in scores.items():
        ax.hist(values, bins=bins, alpha=0.5, label=f"{label} ({len(values)} rows)")
    ax.set_xlabel("score")
    ax.set_ylabel("rows")
    ax.legend()
    return fig


def log_evaluation(model: Any, y: Any, score: Any, trial_values: list[float]) -> None:
    """The holdout curves, the feature importance and the search history, as figures on the active MLflow run."""
    mlflow.log_figure(roc(y, score), "plots/roc.png")
    mlflow.log_figure(precision_recall(y, score), "plots/precision_recall.png")
    mlflow.log_figure(calibration(y, score), "plots/calibration.png")
    estimator = model.named_steps["model"]
    values = getattr(estimator, "feature_importances_", None)
    if values is None:
        values = abs(estimator.coef_[0])
    names = list(model.named_steps["prep"].get_feature_names_out())
    mlflow.log_figure(importance(names, values), "plots/feature_importance.png")
    mlflow.log_figure(optimisation_history(trial_values), "plots/optimisation_history.png")
