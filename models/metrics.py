"""Evaluation metrics for a binary scorer."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score


def classification_metrics(y: np.ndarray, score: np.ndarray, top_k_fraction: float) -> dict[str, float]:
    """ROC-AUC, PR-AUC, log loss, Brier, and precision/recall among the top-k scored."""
    k = max(1, round(top_k_fraction * len(y)))
    top = np.argsort(-score, kind="stable")[:k]
    positives = max(int(y.sum()), 1)
    return {
        "roc_auc": float(roc_auc_score(y, score)),
        "pr_auc": float(average_precision_score(y, score)),
        "log_loss": float(log_loss(y, np.clip(score, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "brier": float(brier_score_loss(y, score)),
        "precision_at_k": float(y[top].mean()),
        "recall_at_k": float(y[top].sum() / positives),
        "positive_rate": float(y.mean()),
    }


def roc_auc_or_none(y: np.ndarray, score: np.ndarray) -> float | None:
    """ROC-AUC, or None when it is undefined (no rows, or a single label class)."""
    y = np.asarray(y)
    return float(roc_auc_score(y, score)) if len(y) and 0 < y.sum() < len(y) else None
