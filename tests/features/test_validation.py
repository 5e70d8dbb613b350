"""Code tests of typing and the verdict, and data tests: every injected fault is caught."""

import numpy as np
import pandas as pd
import pytest

from features import expectations, validation
from slipway.datagen import generate_leads
from slipway.settings import DataSettings, FaultSettings, GenerateSettings, load_settings
from slipway.storage import ParsedBatch
from tests.conftest import REPO

DATA = load_settings(REPO / "params.yaml").data


def run_batch(
    raw: pd.DataFrame | ParsedBatch, known: pd.MultiIndex | None = None, data: DataSettings = DATA
) -> validation.Verdict:
    parsed = raw if isinstance(raw, ParsedBatch) else ParsedBatch(raw, None, [])
    validation.check_schema(parsed.frame.columns, data, "batch.csv")
    typed = validation.type_batch(parsed.frame, data)
    suite = expectations.validate(typed.frame, data, "test")
    dups = validation.duplicate_followers(typed.frame, [data.entity, data.timestamp], suite.duplicate_rows)
    return validation.decide(parsed, typed, suite.failures, dups, known, data)


def as_csv_text(frame: pd.DataFrame) -> pd.DataFrame:
    """What the ingest flow sees from a CSV: every value as text, blanks as missing."""
    return frame.astype(object).where(frame.notna(), None).map(lambda v: None if v is None else str(v))


@pytest.mark.parametrize("fault", ["nulls", "out_of_range", "wrong_types", "duplicates"])
def test_every_injected_fault_lands_in_quarantine(fault: str) -> None:
    data = generate_leads(GenerateSettings(rows=3000, faults=FaultSettings(**{fault: 0.02})))
    verdict = run_batch(as_csv_text(data.frame))
    quarantined = set(verdict.quarantined[validation.ROW_COLUMN])
    assert quarantined == data.faulty_rows  # all faults caught, no clean row lost
    assert verdict.reconciles and verdict.rows_in == len(data.frame)
    assert verdict.quarantined[validation.REASON_COLUMN].str.len().gt(0).all()


def test_reasons_name_the_column_and_value() -> None:
    raw = as_csv_text(generate_leads(GenerateSettings(rows=200)).frame)
    raw.loc[3, "page_views"] = "twelve"
    raw.loc[5, "calls"] = "inf"
    raw.loc[7, "converted"] = "maybe"
    raw.loc[9, "response_time_hours"] = "-3"
    raw.loc[11, "industry"] = None
    reasons = run_batch(raw).quarantined.set_index(validation.ROW_COLUMN)[validation.REASON_COLUMN]
    assert reasons[3] == "page_views: not a number ('twelve'); page_views: missing value"
    assert reasons[5].startswith("calls: not a finite number ('inf')")
    assert reasons[7].startswith("converted: not a binary label ('maybe')")
    assert reasons[9] == "response_time_hours: outside [0.0, 8760.0]"
    assert reasons[11] == "industry: missing value"
    assert len(reasons) == 5


def test_quarantine_keeps_the_raw_values() -> None:
    raw = as_csv_text(generate_leads(GenerateSettings(rows=50)).frame)
    raw.loc[2, "page_views"] = "#REF!"
    row = run_batch(raw).quarantined.iloc[0]
    assert row["page_views"] == "#REF!" and row["lead_id"] == raw.loc[2, "lead_id"]


def test_broken_schema_is_rejected_naming_the_columns() -> None:
    data = generate_leads(GenerateSettings(rows=50, faults=FaultSettings(broken_schema=True)))
    with pytest.raises(validation.SchemaError, match=r"batch\.csv: batch rejected.*'meetings', 'region'"):
        run_batch(data.frame)


def test_keys_already_in_silver_are_quarantined() -> None:
    raw = as_csv_text(generate_leads(GenerateSettings(rows=100)).frame)
    first = run_batch(raw)
    known = pd.MultiIndex.from_frame(first.accepted[[DATA.entity, DATA.timestamp]])
    second = run_batch(raw, known)
    assert len(second.accepted) == 0 and len(second.quarantined) == 100
    assert second.quarantined[validation.REASON_COLUMN].str.contains("already in silver").all()


def test_accepted_rows_are_typed() -> None:
    verdict = run_batch(as_csv_text(generate_leads(GenerateSettings(rows=100)).frame))
    frame = verdict.accepted
    assert str(frame[DATA.timestamp].dt.tz) == "UTC"
    assert frame[DATA.label].dtype == np.int8 and set(frame[DATA.label]) <= {0, 1}
    assert all(frame[c].dtype == np.float64 for c in DATA.numeric)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("yes", 1), ("No", 0), ("TRUE", 1), ("false", 0), ("1", 1), ("0.0", 0), (" y ", 1), ("maybe", None), (None, None)],
)
def test_label_normalisation(raw: object, expected: int | None) -> None:
    value = validation.normalize_label(pd.Series([raw], dtype=object))[0]
    assert (value is pd.NA) if expected is None else value == expected
