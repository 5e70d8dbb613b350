"""The registered model: raw declared features in, probability of the positive class out."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc.model import PythonModel
from sklearn.pipeline import Pipeline

from features.gold import to_feature_frame
from slipway.settings import DataSettings


class ScoringModel(PythonModel):
    """Wraps a fitted pipeline so every consumer scores rows the same way.

    Encoding lives inside the pipeline, and inputs are typed by the same function
    used in training, so the model needs only the feature store's raw columns.
    """

    def __init__(self, pipeline: Pipeline, data: DataSettings) -> None:
        self.pipeline = pipeline
        self.data = data

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> np.ndarray:
        frame = to_feature_frame(pd.DataFrame(model_input), self.data)
        return np.asarray(self.pipeline.predict_proba(frame)[:, 1], dtype=float)
