"""Scoring rows without pandas on the hot path.

The registered pipeline (one-hot encoder + XGBoost or scaled logistic regression)
is compiled into plain arrays once; each request then builds one float matrix and
calls XGBoost's ``inplace_predict`` (or a dot product). Scores equal the pyfunc's,
which tests check, so the service is fast without a second source of truth.
"""

from __future__ import annotations

import ctypes
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from xgboost._data_utils import array_interface
from xgboost.core import _LIB, _check_call

from features.gold import MISSING_CATEGORY, category_text
from slipway.settings import DataSettings

if TYPE_CHECKING:  # not needed to score: a worker that receives a scorer does not import sklearn
    from sklearn.pipeline import Pipeline


CHUNK_ROWS = 16_384  # rows per model call in batch scoring: a few MB of matrix, reused
_SCRATCH = threading.local()


def _scratch(rows: int, width: int, dtype: type) -> np.ndarray:
    """This thread's reusable input matrix, at least ``rows`` × ``width``."""
    held: np.ndarray | None = getattr(_SCRATCH, "matrix", None)
    if held is None or len(held) < rows or held.shape[1] != width or held.dtype != dtype:
        held = _SCRATCH.matrix = np.empty((rows, width), dtype=dtype)
    return held


@dataclass(frozen=True)
class _Layout:
    numeric: list[str]
    categorical: list[tuple[str, dict[str, int]]]  # column → {category: output column}
    width: int


def _layout(pipeline: Pipeline, data: DataSettings) -> _Layout:
    prep = pipeline.named_steps["prep"]
    encoder = prep.named_transformers_["categorical"]
    offset = len(data.numeric)
    categorical = []
    for column, categories in zip(data.categorical, encoder.categories_, strict=True):
        categorical.append((column, {str(c): offset + i for i, c in enumerate(categories)}))
        offset += len(categories)
    return _Layout(list(data.numeric), categorical, offset)


# The same library with calls that keep the GIL: a one-row prediction (tens of µs) that
# releases it waits, on return, for any busy thread (the log writer) to hand it back,
# up to the 5 ms switch interval. Large batches release it, so other threads run.
c_bst_ulong = ctypes.c_uint64  # XGBoost's bst_ulong
_LIB_KEEPING_GIL = ctypes.PyDLL(_LIB._name, handle=_LIB._handle)
KEEP_GIL_BELOW_ROWS = 256


class DensePredict:
    """XGBoost's own C prediction entry point (``XGBoosterPredictFromDense``), called directly.

    ``Booster.inplace_predict`` ends in this same call, but first spends about 120 µs
    per call dispatching on the input's type (pandas, Arrow, polars, cuDF...) and
    building its JSON arguments; for a one-row request that is two thirds of the model's
    time. The arguments here are built once, for a float32 matrix whose width is checked
    each call, so each call is the C prediction alone. Outputs are the booster's, bit for bit
    (tests compare them with ``inplace_predict`` and the pyfunc).
    """

    def __init__(self, booster: Any) -> None:
        self.booster, self.width = booster, booster.num_features()
        options = {"type": 0, "training": False, "iteration_begin": 0, "iteration_end": 0, "strict_shape": False}
        self.config = json.dumps({**options, "missing": float("nan"), "cache_id": 0}).encode()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.width:  # as inplace_predict's validation: the model fails, per call
            raise ValueError(f"Feature shape mismatch, expected: {self.width}, got {x.shape[1:]}")
        if not len(x):  # XGBoost answers no rows with a null buffer
            return np.empty(0)
        shape, dims = ctypes.POINTER(c_bst_ulong)(), c_bst_ulong()
        preds = ctypes.POINTER(ctypes.c_float)()
        lib = _LIB_KEEPING_GIL if len(x) < KEEP_GIL_BELOW_ROWS else _LIB
        _check_call(
            lib.XGBoosterPredictFromDense(
                self.booster.handle,
                array_interface(x),
                self.config,
                None,
                ctypes.byref(shape),
                ctypes.byref(dims),
                ctypes.byref(preds),
            )
        )
        size = 1
        for axis in range(dims.value):
            size *= int(shape[axis])
        if size != len(x):
            raise ValueError(f"XGBoost returned {size} predictions for {len(x)} rows")
        # the buffer belongs to the booster (per thread) until its next prediction: copied out at once
        return np.ctypeslib.as_array(preds, shape=(size,)).astype(float)


class FastScorer:
    """Probability of the positive class for rows given as mappings of raw features."""

    def __init__(self, pipeline: Pipeline, data: DataSettings) -> None:
        self.layout = _layout(pipeline, data)
        model = pipeline.named_steps["model"]
        numeric_step = pipeline.named_steps["prep"].named_transformers_["numeric"]
        self._booster: Any = None
        self._impute: np.ndarray | None = None
        if hasattr(model, "get_booster"):
            self._booster = model.get_booster().copy()
            self._booster.set_param({"nthread": 1})  # one row at a time: threads only add overhead
            self._predict = DensePredict(self._booster)
        else:  # logistic regression behind imputer + scaler
            imputer, scaler = numeric_step.steps[0][1], numeric_step.steps[1][1]
            self._impute = np.asarray(imputer.statistics_, dtype=float)
            self._mean = np.asarray(scaler.mean_, dtype=float)
            self._scale = np.asarray(scaler.scale_, dtype=float)
            self._coef = np.asarray(model.coef_[0], dtype=float)
            self._intercept = float(model.intercept_[0])

    def matrix(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        layout = self.layout
        out = np.zeros((len(rows), layout.width), dtype=np.float32 if self._booster is not None else float)
        for i, row in enumerate(rows):
            for j, column in enumerate(layout.numeric):
                value = row.get(column)
                out[i, j] = np.nan if value is None else float(value)
            for column, positions in layout.categorical:
                value = row.get(column)
                text = "" if value is None else str(value).strip()  # trimmed, empty is missing: as gold.as_text
                position = positions.get(text or MISSING_CATEGORY)
                if position is not None:  # unseen category: all zeros, as handle_unknown="ignore"
                    out[i, position] = 1.0
        return out

    def _encoded(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """A typed frame, column by column, as the numeric block and each row's one-hot columns.

        The numeric block is rows × numeric features; the one-hot block, rows × categorical features,
        holds each row's output column per categorical feature (-1 for an unseen category).
        """
        layout = self.layout
        numeric = np.empty((len(frame), len(layout.numeric)), dtype=float)
        for j, column in enumerate(layout.numeric):
            values = frame[column]
            if not pd.api.types.is_numeric_dtype(values):
                values = pd.to_numeric(values, errors="coerce")
            numeric[:, j] = values.to_numpy(dtype=float, na_value=np.nan)
        hot = np.empty((len(frame), len(layout.categorical)), dtype=np.int64)
        for j, (column, positions) in enumerate(layout.categorical):
            text = pa.array(frame[column], from_pandas=True)
            if pa.types.is_string(text.type):  # trimmed, empty is missing: as gold.as_text, in Arrow
                text = pc.utf8_trim_whitespace(text)
                text = pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text)
            else:  # a coded column typed by the reader: as the pyfunc spells it
                text = pa.array(category_text(frame[column]), pa.string())
            text = pc.fill_null(text, MISSING_CATEGORY)
            index = pc.index_in(text, value_set=pa.array(list(positions), pa.string()))
            codes = index.fill_null(-1).to_numpy(zero_copy_only=False)
            columns = np.fromiter(positions.values(), dtype=np.int64, count=len(positions))
            hot[:, j] = np.where(codes >= 0, columns[np.maximum(codes, 0)], -1)
        return numeric, hot

    def _fill(self, out: np.ndarray, numeric: np.ndarray, hot: np.ndarray) -> np.ndarray:
        """``out`` (as many rows as ``numeric``) as the model's input matrix."""
        out.fill(0)
        out[:, : numeric.shape[1]] = numeric
        rows = np.arange(len(out))
        for j in range(hot.shape[1]):
            known = hot[:, j] >= 0  # an unseen category: all zeros, as handle_unknown="ignore"
            out[rows[known], hot[known, j]] = 1.0
        return out

    def _dtype(self) -> type:
        return np.float32 if self._booster is not None else float

    def frame_matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The same matrix as :meth:`matrix`, built column by column from a typed frame."""
        out: np.ndarray = np.empty((len(frame), self.layout.width), dtype=self._dtype())
        return self._fill(out, *self._encoded(frame))

    def predict_frame(self, frame: pd.DataFrame, threads: int = 1) -> np.ndarray:
        """Scores for every row of a frame of raw features, equal to :meth:`predict` on the same rows.

        The rows go through the model :data:`CHUNK_ROWS` at a time in one matrix this thread
        reuses: a whole partition's matrix (tens of MB) would be fresh memory on every call,
        and faulting it in costs more than the model does.
        """
        if self._booster is not None:
            self._booster.set_param({"nthread": threads})
        numeric, hot = self._encoded(frame)
        scores = np.empty(len(frame), dtype=float)
        chunk = CHUNK_ROWS
        buffer = _scratch(chunk, self.layout.width, self._dtype())
        for start in range(0, len(frame), chunk):
            stop = min(start + chunk, len(frame))
            x = self._fill(buffer[: stop - start], numeric[start:stop], hot[start:stop])
            scores[start:stop] = self._scores(x)
        return scores

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        return self._scores(self.matrix(rows))

    def _scores(self, x: np.ndarray) -> np.ndarray:
        if self._booster is not None:
            return self._predict(x)
        n = len(self.layout.numeric)
        numeric = x[:, :n]
        assert self._impute is not None
        numeric = np.where(np.isnan(numeric), self._impute, numeric)
        x[:, :n] = (numeric - self._mean) / self._scale
        return np.asarray(1.0 / (1.0 + np.exp(-(x @ self._coef + self._intercept))), dtype=float)
