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

from features.gold import MISSING_CATEGORY, to_feature_frame
from slipway.processes import cpu_threads
from slipway.settings import DataSettings, TrainSettings


@dataclass(frozen=True)
class Part:
    """One time slice of the training set: features, labels and event times, in time order."""

    X: pd.DataFrame
    y: np.ndarray
    times: pd.Series

    @property
    def start(self) -> pd.Timestamp:
        return pd.Timestamp(self.times.iloc[0])

    @property
    def end(self) -> pd.Timestamp:
        return pd.Timestamp(self.times.iloc[-1])

    def __len__(self) -> int:
        return len(self.y)

    def rows(self, begin: int, stop: int, what: str) -> Part:
        """Rows ``[begin, stop)`` as their own slice; both label classes are required."""
        return _part(self.X.iloc[begin:stop], self.y[begin:stop], self.times.iloc[begin:stop], what)


def _part(X: pd.DataFrame, y: np.ndarray, times: pd.Series, what: str) -> Part:
    if len(y) == 0 or y.min() == y.max():
        classes = "no rows" if len(y) == 0 else f"only label {int(y[0])} in its {len(y)} rows"
        raise ValueError(f"{what} has {classes}: both classes are needed (more labelled data, or fewer train.cv_folds)")
    return Part(X, y, times)  # the index stays the row's position in the time-ordered frame


@dataclass(frozen=True)
class Split:
    """The development rows (tuning, then the evaluation fit) and the newest rows (its evaluation)."""

    development: Part
    test: Part

    def everything(self) -> Part:
        """Every labelled row, for the final fit that is registered."""
        X = pd.concat([self.development.X, self.test.X], ignore_index=True)
        times = pd.concat([self.development.times, self.test.times], ignore_index=True)
        return _part(X, np.concatenate([self.development.y, self.test.y]), times, "the labelled rows")

    def folds(self, k: int) -> list[tuple[Part, Part]]:
        """Expanding time windows over the development rows: fold i fits on blocks 0..i, validates on block i+1."""
        n = len(self.development)
        edges = [round(n * i / (k + 1)) for i in range(k + 2)]
        return [
            (
                self.development.rows(0, edges[i + 1], f"fold {i + 1}/{k}'s fitting window"),
                self.development.rows(edges[i + 1], edges[i + 2], f"fold {i + 1}/{k}'s validation window"),
            )
            for i in range(k)
        ]


def check_training_set(frame: pd.DataFrame, data: DataSettings) -> None:
    """Refuse a training set no model can learn from, naming the key to fix."""
    if frame.empty:
        raise ValueError("no labelled rows to train on: run ingest and materialize first")
    labels = frame[data.label].dropna().unique()
    if len(labels) < 2:
        only = labels[0] if len(labels) else "missing"
        raise ValueError(
            f"data.label {data.label!r}: every one of the {len(frame)} labelled rows is {only}; a binary label needs both classes"
        )
    for key, columns in (("data.numeric", data.numeric), ("data.categorical", data.categorical)):
        for column in columns:
            values = frame[column].dropna()
            if column in data.categorical:
                values = values[values.astype(str) != MISSING_CATEGORY]
            if values.empty:
                raise ValueError(f"{key}: {column!r} is missing in every training row; drop it or fix the source")
            if values.nunique() == 1:
                only = values.tolist()[0]
                raise ValueError(
                    f"{key}: {column!r} has the single value {only!r} in every training row; it cannot inform the model"
                )


def time_split(frame: pd.DataFrame, data: DataSettings, cfg: TrainSettings, timestamp: str) -> Split:
    """The newest ``train.test_fraction`` of rows is the test window; everything older is development."""
    ordered = frame.sort_values(timestamp, kind="stable").reset_index(drop=True)
    cut = int(len(ordered) * (1 - cfg.test_fraction))
    labels = ordered[data.label].to_numpy(dtype=int)
    features = to_feature_frame(ordered, data)
    times = ordered[timestamp]

    def part(begin: int, stop: int, what: str) -> Part:
        return _part(features.iloc[begin:stop], labels[begin:stop], times.iloc[begin:stop], what)

    return Split(part(0, cut, "the development window"), part(cut, len(ordered), "the test window"))


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
    train: Part,
    validation: Part,
    data: DataSettings,
    cfg: TrainSettings,
    params: dict[str, Any],
    callbacks: Sequence[Any] = (),
    threads: int | None = None,
) -> Pipeline:
    """Fit on ``train`` with early stopping on ``validation``, on ``threads`` threads (default: every core)."""
    prep = preprocessor(data, scale=False).fit(train.X)
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
        prep.transform(train.X),
        train.y,
        eval_set=[(prep.transform(validation.X), validation.y)],
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
