from datetime import UTC, datetime

import pandas as pd
import pytest

from features import gold
from slipway.settings import DataSettings

DATA = DataSettings(source="x.csv", entity="id", timestamp="t", label="y", numeric=["n.1"], categorical=["c c"])


def silver() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": ["b", "a", "c"],
            "t": pd.to_datetime(["2026-01-02", "2026-01-01", "2026-01-03"], utc=True),
            "y": pd.Series([1, 0, 1], dtype="int8"),
            "n.1": [1.0, 2.0, None],
            "c c": ["x", None, "z"],
        }
    )


def test_features_are_sorted_typed_and_windowed() -> None:
    out = gold.build_features(silver(), DATA, start=datetime(2026, 1, 2, tzinfo=UTC))
    assert out["id"].tolist() == ["b", "c"]
    assert list(out.columns) == ["id", "t", "n.1", "c c"]
    assert out["n.1"].dtype == "float64"


def test_labels_exclude_features() -> None:
    out = gold.build_labels(silver(), DATA, end=datetime(2026, 1, 3, tzinfo=UTC))
    assert list(out.columns) == ["id", "t", "y"] and out["id"].tolist() == ["a", "b"]


def test_feature_frame_keeps_declared_order_and_fills_missing_categories() -> None:
    rows = silver().assign(extra=1)[["c c", "extra", "n.1"]]
    frame = gold.to_feature_frame(rows, DATA)
    assert list(frame.columns) == ["n.1", "c c"]
    assert frame["c c"].tolist() == ["x", gold.MISSING_CATEGORY, "z"]


def test_feature_frame_names_missing_columns() -> None:
    with pytest.raises(KeyError, match="'c c'"):
        gold.to_feature_frame(silver()[["n.1"]], DATA)
