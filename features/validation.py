"""Bronze → silver: schema check, typing and the row-level verdict.

Pure functions over DataFrames. The Great Expectations suite (``expectations``)
finds the failing rows; this module types the raw batch, turns GX's findings into
one reason per quarantined row and reconciles the counts, so nothing is dropped
without a recorded reason.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from slipway.settings import DataSettings

LABEL_VALUES = {
    "1": 1,
    "0": 0,
    "1.0": 1,
    "0.0": 0,
    "yes": 1,
    "no": 0,
    "y": 1,
    "n": 0,
    "true": 1,
    "false": 0,
}

REASON_COLUMN = "_quarantine_reason"
ROW_COLUMN = "_source_row"


class SchemaError(ValueError):
    """The batch's columns cannot satisfy the configuration; it is rejected whole."""

    def __init__(self, missing: list[str], source: str) -> None:
        self.missing = missing
        super().__init__(f"{source}: batch rejected, missing required column(s): {', '.join(map(repr, missing))}")


def check_schema(columns: Iterable[str], data: DataSettings, source: str) -> None:
    """Reject a batch that lacks any configured column, naming every missing one."""
    present = set(columns)
    missing = [c for c in data.required_columns if c not in present]
    if missing:
        raise SchemaError(missing, source)


@dataclass
class TypedBatch:
    """A raw batch cast to its declared types, with the cells that would not cast."""

    frame: pd.DataFrame
    type_errors: dict[int, list[str]]


def _record(errors: dict[int, list[str]], mask: pd.Series, raw: pd.Series, message: str) -> None:
    for row in np.flatnonzero(mask.to_numpy()):
        errors[int(row)].append(f"{raw.name}: {message} ({raw.iloc[row]!r})")


def normalize_label(raw: pd.Series) -> pd.Series:
    """Map 0/1, yes/no, true/false (any case) to 0/1; anything else to <NA>."""
    text = raw.astype("string").str.strip().str.lower()
    return text.map(LABEL_VALUES, na_action="ignore").astype("Int8")


def type_batch(raw: pd.DataFrame, data: DataSettings) -> TypedBatch:
    """Cast the configured columns; a present value that does not cast is a type error.

    Missing values stay missing (GX reports them as nulls); only values that are there
    but have the wrong type are recorded here, so each fault gets its own reason.
    """
    raw = raw.reset_index(drop=True)
    errors: dict[int, list[str]] = defaultdict(list)
    out = pd.DataFrame(index=raw.index)
    out[data.entity] = raw[data.entity].astype("string").str.strip()
    stamps = pd.to_datetime(raw[data.timestamp], utc=True, errors="coerce", format="mixed")
    _record(errors, raw[data.timestamp].notna() & stamps.isna(), raw[data.timestamp], "not a timestamp")
    out[data.timestamp] = stamps
    label = normalize_label(raw[data.label])
    _record(errors, raw[data.label].notna() & label.isna(), raw[data.label], "not a binary label")
    out[data.label] = label
    for column in data.numeric:
        values = pd.to_numeric(raw[column], errors="coerce").astype("float64")
        _record(errors, raw[column].notna() & values.isna(), raw[column], "not a number")
        infinite = pd.Series(np.isinf(values.to_numpy()), index=values.index)
        _record(errors, infinite, raw[column], "not a finite number")
        out[column] = values.mask(infinite)
    for column in data.categorical:
        out[column] = raw[column].astype("string").str.strip()
    return TypedBatch(out, dict(errors))


@dataclass
class Verdict:
    """Which rows of a batch are accepted and why the others are quarantined."""

    accepted: pd.DataFrame
    quarantined: pd.DataFrame
    rows_in: int

    @property
    def reconciles(self) -> bool:
        return self.rows_in == len(self.accepted) + len(self.quarantined)


def duplicate_followers(frame: pd.DataFrame, keys: list[str], flagged: Iterable[int]) -> list[int]:
    """Among rows GX flagged as sharing a key, every occurrence after the first."""
    rows = sorted(set(flagged))
    if not rows:
        return []
    subset = frame.loc[rows, keys]
    return [int(r) for r in subset.index[subset.duplicated(keep="first")]]


def decide(
    raw: pd.DataFrame,
    typed: TypedBatch,
    failures: dict[int, list[str]],
    duplicates: list[int],
    known_keys: pd.MultiIndex | None,
    data: DataSettings,
) -> Verdict:
    """Combine type errors, GX failures, in-batch and cross-batch duplicates into a verdict.

    ``raw`` rows are kept verbatim in the quarantine (as text), so a quarantined row
    can be fixed and re-ingested without loss.
    """
    reasons: dict[int, list[str]] = defaultdict(list)
    for source in (typed.type_errors, failures):
        for row, messages in source.items():
            reasons[row].extend(messages)
    for row in duplicates:
        reasons[row].append(f"duplicate ({data.entity}, {data.timestamp}) within the batch")
    if known_keys is not None and len(known_keys):
        keys = pd.MultiIndex.from_frame(typed.frame[[data.entity, data.timestamp]])
        for seen in np.flatnonzero(keys.isin(known_keys)).tolist():
            reasons[seen].append(f"({data.entity}, {data.timestamp}) already in silver")
    bad = sorted(reasons)
    good = typed.frame.index.difference(bad)
    quarantined = raw.reset_index(drop=True).loc[bad].astype("string")
    quarantined.insert(0, REASON_COLUMN, ["; ".join(dict.fromkeys(reasons[r])) for r in bad])
    quarantined.insert(0, ROW_COLUMN, bad)
    accepted = typed.frame.loc[good].copy()
    accepted[data.label] = accepted[data.label].astype("int8")
    return Verdict(accepted.reset_index(drop=True), quarantined.reset_index(drop=True), len(raw))
