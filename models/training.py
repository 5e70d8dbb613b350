"""Time-based splits and the two model families: XGBoost and a linear baseline.

Every fitted model is a scikit-learn ``Pipeline`` that takes the declared feature
columns under their original names and does its own encoding, so the registered
model needs nothing but raw features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from xgboost import XGBClassifier

from features.gold import to_feature_frame
from slipway.processes import cpu_threads
from slipway.settings import DataSettings, TrainSettings


@dataclass(frozen=True)
class Part:
    """One time slice of the training set."""

    X: pd.DataFrame
    y: np.ndarray
    start: pd.Timestamp
    end: pd.Timestamp


@dataclass(frozen=True)
class Split:
    train: Part
    validation: Part
    test: Part

    def train_and_validation(self) -> Part:
        return Part(
            pd.concat([self.train.X, self.validation.X]),
            np.concatenate([self.train.y, self.validation.y]),
            self.train.start,
            self.validation.end,
        )


def time_split(frame: pd.DataFrame, data: DataSettings, cfg: TrainSettings, timestamp: str) -> Split:
    """Oldest rows train, the next validate, the newest test: no look-ahead."""
    ordered = frame.sort_values(timestamp, kind="stable").reset_index(drop=True)
    n = len(ordered)
    cut_val = int(n * (1 - cfg.validation_fraction - cfg.test_fraction))
    cut_test = int(n * (1 - cfg.test_fraction))

    def part(rows: pd.DataFrame) -> Part:
        labels = rows[data.label].to_numpy(dtype=int)
        if len(rows) == 0 or labels.min() == labels.max():
            raise ValueError(f"a time slice has {len(rows)} rows and a single label class: more data is needed")
        stamps = rows[timestamp]
        return Part(to_feature_frame(rows, data), labels, stamps.min(), stamps.max())

    return Split(part(ordered[:cut_val]), part(ordered[cut_val:cut_test]), part(ordered[cut_test:]))


def preprocessor(data: DataSettings, scale: bool) -> ColumnTransformer:
    """One-hot categories; impute and scale numbers only for the linear model."""
    numeric: Any = make_pipeline(SimpleImputer(strategy="median"), StandardScaler()) if scale else "passthrough"
    return ColumnTransformer(
        [
            ("numeric", numeric, list(data.numeric)),
            ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), list(data.categorical)),
        ],
        verbose_feature_names_out=False,
    )


def fit_xgboost(
    split: Split,
    data: DataSettings,
    cfg: TrainSettings,
    params: dict[str, Any],
    callbacks: Sequence[Any] = (),
    threads: int | None = None,
) -> Pipeline:
    """Fit on the train slice with early stopping on the validation slice, on ``threads`` threads (default: every core)."""
    prep = preprocessor(data, scale=False).fit(split.train.X)
    model = XGBClassifier(
        **params,
        n_estimators=cfg.max_estimators,
        early_stopping_rounds=cfg.early_stopping_rounds,
        eval_metric="auc",
        random_state=cfg.seed,
        n_jobs=threads or cpu_threads(),
        callbacks=list(callbacks) or None,
    )
    model.fit(
        prep.transform(split.train.X),
        split.train.y,
        eval_set=[(prep.transform(split.validation.X), split.validation.y)],
        verbose=False,
    )
    return Pipeline([("prep", prep), ("model", model)])


def refit_xgboost(part: Part, data: DataSettings, cfg: TrainSettings, params: dict[str, Any], n_estimators: int) -> Pipeline:
    """Refit with a fixed number of trees (found by early stopping) on more data."""
    model = XGBClassifier(**params, n_estimators=n_estimators, eval_metric="auc", random_state=cfg.seed, n_jobs=cpu_threads())
    pipeline = Pipeline([("prep", preprocessor(data, scale=False)), ("model", model)])
    return pipeline.fit(part.X, part.y)


def fit_baseline(part: Part, data: DataSettings, cfg: TrainSettings) -> Pipeline:
    """Regularised logistic regression: the bar XGBoost has to clear."""
    model = LogisticRegression(C=1.0, max_iter=2000, random_state=cfg.seed)
    return Pipeline([("prep", preprocessor(data, scale=True)), ("model", model)]).fit(part.X, part.y)


def predict_proba(model: Pipeline, X: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.predict_proba(X)[:, 1], dtype=float)


def best_iteration(pipeline: Pipeline) -> int:
    """Trees kept by early stopping (for the refit)."""
    model = pipeline.named_steps["model"]
    return int(model.best_iteration) + 1
