"""Stub models for the service's in-process tests: a score from a row, or a failure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bentos.router import LoadedModel


class Linear:
    """Scores ``offset + x / 100``; counts its predict calls and the rows it saw."""

    def __init__(self, offset: float) -> None:
        self.offset, self.calls, self.rows = offset, 0, 0

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        self.calls += 1
        self.rows += len(rows)
        return np.asarray([self.offset + float(r["x"]) / 100 for r in rows])


class Broken:
    def predict(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        raise ValueError("feature shape mismatch, expected 13 got 12")


def model(version: str, scorer: Any) -> LoadedModel:
    return LoadedModel(version, scorer)
