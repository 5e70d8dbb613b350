"""Silver → gold: the model's features and labels, by pure functions.

Gold keeps the declared feature columns under their original names (the model
contract), typed for Feast: numbers as float64, categories as strings. Labels are
kept apart, keyed by entity and event time, so a training set is a point-in-time
join of labels onto features.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from slipway.settings import DataSettings

MISSING_CATEGORY = "__missing__"


def _keyed_window(silver: pd.DataFrame, data: DataSettings, start: datetime | None, end: datetime | None) -> pd.DataFrame:
    """Rows in ``[start, end)`` reduced to their typed key: entity id and UTC event time."""
    keep = pd.Series(True, index=silver.index)
    if start is not None:
        keep &= silver[data.timestamp] >= pd.Timestamp(start)
    if end is not None:
        keep &= silver[data.timestamp] < pd.Timestamp(end)
    rows = silver.loc[keep]
    return pd.DataFrame(
        {data.entity: rows[data.entity].astype(str), data.timestamp: pd.to_datetime(rows[data.timestamp], utc=True)},
        index=rows.index,
    )


def _in_time_order(frame: pd.DataFrame, data: DataSettings) -> pd.DataFrame:
    return frame.sort_values([data.timestamp, data.entity], kind="stable").reset_index(drop=True)


def build_features(
    silver: pd.DataFrame, data: DataSettings, start: datetime | None = None, end: datetime | None = None
) -> pd.DataFrame:
    """Feature rows in ``[start, end)``, sorted by event time."""
    gold = _keyed_window(silver, data, start, end)
    for column in data.numeric:
        gold[column] = silver.loc[gold.index, column].astype("float64")
    for column in data.categorical:
        gold[column] = silver.loc[gold.index, column].astype(str)
    return _in_time_order(gold, data)


def build_labels(
    silver: pd.DataFrame, data: DataSettings, start: datetime | None = None, end: datetime | None = None
) -> pd.DataFrame:
    """Label events in ``[start, end)``: entity, event time and the 0/1 label."""
    labels = _keyed_window(silver, data, start, end)
    labels[data.label] = silver.loc[labels.index, data.label].astype("int8")
    return _in_time_order(labels, data)


def to_feature_frame(rows: pd.DataFrame, data: DataSettings) -> pd.DataFrame:
    """The model's input frame: declared features only, in declared order, typed.

    Shared by training and serving so a row scores the same wherever it comes from.
    """
    missing = [c for c in data.features if c not in rows.columns]
    if missing:
        raise KeyError(f"missing feature column(s): {', '.join(map(repr, missing))}")
    out = pd.DataFrame(index=rows.index)
    for column in data.numeric:
        out[column] = pd.to_numeric(rows[column], errors="coerce").astype("float64")
    for column in data.categorical:
        out[column] = category_text(rows[column])
    return out


def as_text(values: pd.Series) -> pd.Series:
    """Values as trimmed text, whatever type the reader gave them; empty and missing are ``<NA>``.

    A CSV gives a coded column as text ("3"); ``pd.read_csv`` or a Parquet file types it
    as int64 (3), or as float64 (3.0) once it has a gap. Whole numbers are written
    without a fraction so all three are the same category or entity id.
    """
    if pd.api.types.is_float_dtype(values.dtype):
        whole = values.notna() & (values == values.round())
        values = values.astype(object).where(~whole, values.where(whole).astype("Int64").astype(object))
    text = values.astype("string").str.strip()
    return text.mask(text == "")


def category_text(values: pd.Series) -> pd.Series:
    """Categories as the model reads them: text, missing as ``MISSING_CATEGORY``."""
    return as_text(values).fillna(MISSING_CATEGORY).astype(object).astype(str)


def latest_labels(labels: pd.DataFrame, data: DataSettings) -> pd.Series:
    """Each entity's most recent label, indexed by entity id as text (how the prediction log keeps it)."""
    newest = labels.sort_values(data.timestamp).drop_duplicates(data.entity, keep="last").set_index(data.entity)[data.label]
    newest.index = newest.index.astype(str)
    return newest


KNOWN = "_slipway_known"  # set on entity-table rows, so a join can tell unknown entities from missing features


def latest_per_entity(frame: pd.DataFrame, data: DataSettings) -> pd.DataFrame:
    """Each entity's newest feature row (the rows of one entity must all be in ``frame``)."""
    newest = frame.sort_values([data.entity, data.timestamp], kind="stable").drop_duplicates(data.entity, keep="last")
    return newest.assign(**{KNOWN: True})
