"""Bronze → silver: schema check, typing and the row-level verdict.

Pure functions over DataFrames. The Great Expectations suite (``expectations``)
finds the failing rows; this module types the raw batch, turns GX's findings into
one reason per quarantined row and reconciles the counts, so nothing is dropped
without a recorded reason.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from features import gold
from slipway.settings import DataSettings
from slipway.storage import ParsedBatch

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
ROW_COLUMN = "_source_row"  # position among the batch's well-formed records (0-based)
LINE_COLUMN = "_source_line"  # the CSV line the record starts on (the header is line 1)
RECORD_COLUMN = "_raw_record"  # a malformed CSV line, verbatim
FLOAT32_MAX = float(np.finfo(np.float32).max)  # XGBoost computes in float32: larger values cannot be learnt from
ZONE_SUFFIX = r"(?:[Zz]|[+-]\d{2}(?::?\d{2})?)$"


class BatchRejected(ValueError):
    """The batch as a whole is refused; the message says why. Its rows are kept (bronze, quarantine)."""


class SchemaError(BatchRejected):
    """The batch's columns cannot satisfy the configuration; it is rejected whole."""

    def __init__(self, missing: list[str], source: str) -> None:
        self.missing = missing
        super().__init__(f"{source}: batch rejected, missing required column(s): {', '.join(map(repr, missing))}")


class TooManyBadRows(BatchRejected):
    """More of the batch is quarantined than ``data.max_quarantine_share`` allows."""


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
    for row in np.flatnonzero(mask.to_numpy(dtype=bool, na_value=False)):
        errors[int(row)].append(f"{raw.name}: {message} ({raw.iloc[row]!r})")


def normalize_label(raw: pd.Series) -> pd.Series:
    """Map 0/1, yes/no, true/false (any case) to 0/1; anything else to <NA>."""
    text = raw.astype("string").str.strip().str.lower()
    return text.map(LABEL_VALUES, na_action="ignore").astype("Int8")


def parse_timestamps(raw: pd.Series, data: DataSettings) -> tuple[pd.Series, pd.Series]:
    """UTC times, and per row why a present value is not one (``<NA>`` where it is).

    Text is read by ``data.timestamp_format`` or else as ISO 8601 only, so 03/04/2026 is
    never guessed to be a day or a month. A time without an offset is local time in
    ``data.timezone``; without that key it is refused, not silently taken as UTC.
    """
    problems = pd.Series(pd.NA, index=raw.index, dtype="string")
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        if getattr(raw.dtype, "tz", None) is not None:
            return raw.dt.tz_convert("UTC"), problems
        stamps = _localize(raw, data, problems)
        return stamps, problems
    text = gold.as_text(raw)
    fmt = data.timestamp_format or "ISO8601"
    if data.timestamp_format:
        aware = pd.Series("%z" in fmt or "%Z" in fmt, index=raw.index)
    else:
        aware = text.str.contains(ZONE_SUFFIX, regex=True).fillna(False).astype(bool)
    parsed = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
    if aware.any():
        parsed[aware] = pd.to_datetime(text[aware], format=fmt, utc=True, errors="coerce")
    naive = ~aware & text.notna()
    if naive.any():
        local = pd.to_datetime(text[naive], format=fmt, errors="coerce")
        parsed[naive] = _localize(local, data, problems)
    key = (
        f"data.timestamp_format {data.timestamp_format!r}" if data.timestamp_format else "ISO 8601 (or set data.timestamp_format)"
    )
    unreadable = text.notna() & parsed.isna() & (aware | problems.isna())
    problems[unreadable] = f"not a timestamp in {key}"
    return parsed, problems


def _localize(naive: pd.Series, data: DataSettings, problems: pd.Series) -> pd.Series:
    """Naive times as UTC, read in ``data.timezone``; where that cannot be done, say why in ``problems``."""
    readable = naive.notna()
    if data.timezone is None:
        problems[readable[readable].index] = "a time without a zone offset: set data.timezone (or write the offset)"
        return pd.Series(pd.NaT, index=naive.index, dtype="datetime64[ns, UTC]")
    local = naive.dt.tz_localize(data.timezone, ambiguous="NaT", nonexistent="NaT")
    invalid = readable & local.isna()
    problems[invalid[invalid].index] = f"not a valid local time in data.timezone {data.timezone!r} (a DST change)"
    return pd.Series(local.dt.tz_convert("UTC"), index=naive.index)


def type_batch(raw: pd.DataFrame, data: DataSettings) -> TypedBatch:
    """Cast the configured columns; a present value that does not cast is a type error.

    Missing values stay missing (GX reports them as nulls); only values that are there
    but have the wrong type are recorded here, so each fault gets its own reason.
    Text is trimmed and an empty value is missing, for ids and categories alike.
    """
    raw = raw.reset_index(drop=True)
    errors: dict[int, list[str]] = defaultdict(list)
    out = pd.DataFrame(index=raw.index)
    out[data.entity] = gold.as_text(raw[data.entity])
    stamps, problems = parse_timestamps(raw[data.timestamp], data)
    for row in np.flatnonzero(problems.notna().to_numpy()):
        errors[int(row)].append(f"{data.timestamp}: {problems.iloc[row]} ({raw[data.timestamp].iloc[row]!r})")
    out[data.timestamp] = stamps
    label = normalize_label(raw[data.label])
    _record(errors, raw[data.label].notna() & label.isna(), raw[data.label], "not a binary label")
    out[data.label] = label
    for column in data.numeric:
        values = pd.to_numeric(raw[column], errors="coerce").astype("float64")
        _record(errors, raw[column].notna() & values.isna(), raw[column], "not a number")
        infinite = pd.Series(np.isinf(values.to_numpy()), index=values.index)
        _record(errors, infinite, raw[column], "not a finite number")
        huge = ~infinite & (values.abs() > FLOAT32_MAX)
        _record(errors, huge, raw[column], f"outside the float32-safe range (|x| <= {FLOAT32_MAX:.4g})")
        out[column] = values.mask(infinite | huge)
    for column in data.categorical:
        out[column] = gold.as_text(raw[column])
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
    parsed: ParsedBatch,
    typed: TypedBatch,
    failures: dict[int, list[str]],
    duplicates: list[int],
    known_keys: pd.MultiIndex | None,
    data: DataSettings,
) -> Verdict:
    """Combine malformed lines, type errors, GX failures, in-batch and cross-batch duplicates into a verdict.

    Rows are kept verbatim in the quarantine (as text), with their CSV line, so a
    quarantined row can be fixed and re-ingested without loss.
    """
    raw = parsed.frame.reset_index(drop=True)
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
    quarantined = raw.loc[bad].astype("string")
    lines = pd.array([parsed.lines[r] for r in bad] if parsed.lines is not None else [pd.NA] * len(bad), dtype="Int64")
    quarantined.insert(0, REASON_COLUMN, ["; ".join(dict.fromkeys(reasons[r])) for r in bad])
    quarantined.insert(0, LINE_COLUMN, pd.Series(lines, index=quarantined.index))
    quarantined.insert(0, ROW_COLUMN, pd.Series(bad, index=quarantined.index, dtype="Int64"))
    if parsed.malformed:
        broken = pd.DataFrame(
            {
                ROW_COLUMN: pd.array([pd.NA] * len(parsed.malformed), dtype="Int64"),
                LINE_COLUMN: pd.array([m.line for m in parsed.malformed], dtype="Int64"),
                REASON_COLUMN: [m.reason for m in parsed.malformed],
                RECORD_COLUMN: pd.array([m.text for m in parsed.malformed], dtype="string"),
            }
        )
        quarantined = pd.concat([quarantined, broken], ignore_index=True).sort_values(LINE_COLUMN, kind="stable")
        quarantined = quarantined.astype({c: "string" for c in raw.columns if c in quarantined})
    accepted = typed.frame.loc[good].copy()
    accepted[data.label] = accepted[data.label].astype("int8")
    return Verdict(accepted.reset_index(drop=True), quarantined.reset_index(drop=True), parsed.rows_in)


def check_share(verdict: Verdict, data: DataSettings, batch: str) -> None:
    """Fail a batch whose quarantined share exceeds ``data.max_quarantine_share``, saying what is wrong most."""
    if not verdict.rows_in or len(verdict.quarantined) / verdict.rows_in <= data.max_quarantine_share:
        return
    counts: dict[str, int] = defaultdict(int)
    for text in verdict.quarantined[REASON_COLUMN]:
        for reason in dict.fromkeys(re.sub(r" \(.*?\)$", "", part) for part in str(text).split("; ")):
            counts[re.sub(r"^lines? [\d-]+:? ?", "", reason)] += 1
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
    share = len(verdict.quarantined) / verdict.rows_in
    summary = "; ".join(f"{reason}: {n} rows" for reason, n in top)
    raise TooManyBadRows(
        f"{batch}: {len(verdict.quarantined)} of {verdict.rows_in} rows ({share:.0%}) quarantined, above "
        f"data.max_quarantine_share {data.max_quarantine_share:g}; nothing accepted (the bad rows are in quarantine, "
        f"the whole batch in bronze). "
        f"Most common: {summary}"
    )
