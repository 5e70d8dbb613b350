"""Messy files as new users bring them: each trap is a small real file, read as ingest reads it.

Every physical record is accounted for (rows_in = accepted + quarantined), nothing
is guessed, and what cannot be trusted is quarantined with its line and reason, or
the batch is refused with a message naming the key to set.
"""

from pathlib import Path

import pandas as pd
import pytest

from features import expectations, validation
from slipway import storage
from slipway.datagen import generate_leads
from slipway.settings import DataSettings, GenerateSettings, load_settings
from tests.conftest import REPO

DATA = load_settings(REPO / "params.yaml").data
HEADER = ",".join(generate_leads(GenerateSettings(rows=1)).frame.columns)


def lines(n: int, seed: int = 3) -> list[str]:
    """``n`` clean data lines of the lead dataset, as a CSV export writes them."""
    text = generate_leads(GenerateSettings(rows=n, seed=seed)).frame.to_csv(index=False)
    return text.splitlines()[1:]


def ingest_file(path: Path, data: DataSettings = DATA) -> validation.Verdict:
    """What the ingest flow does with a file, without Prefect: parse, type, GX, decide."""
    parsed = storage.parse(storage.fetch(str(path)))
    validation.check_schema(parsed.frame.columns, data, str(path))
    typed = validation.type_batch(parsed.frame, data)
    suite = expectations.validate(typed.frame, data, "trap")
    duplicates = validation.duplicate_followers(typed.frame, [data.entity, data.timestamp], suite.duplicate_rows)
    verdict = validation.decide(parsed, typed, suite.failures, duplicates, None, data)
    assert verdict.reconciles, "rows_in must equal accepted + quarantined"
    return verdict


def write(path: Path, body: list[str], header: str = HEADER) -> Path:
    path.write_text("\n".join([header, *body]) + "\n")
    return path


def reasons(verdict: validation.Verdict) -> dict[int, str]:
    """Quarantine reasons by CSV line."""
    q = verdict.quarantined
    return dict(zip(q[validation.LINE_COLUMN].astype(int), q[validation.REASON_COLUMN], strict=True))


def test_an_unbalanced_quote_cannot_swallow_lines(tmp_path: Path) -> None:
    body = lines(11)
    fields = body[3].split(",")
    fields[2] = '"' + fields[2]  # an opening quote that never closes on its line
    body[3] = ",".join(fields)
    fields = body[5].split(",")
    fields[3] = fields[3] + '"'  # ... until this one, two lines further down
    body[5] = ",".join(fields)
    verdict = ingest_file(write(tmp_path / "quote.csv", body))
    assert verdict.rows_in == 11  # the file's 11 records, not the 9 rows a lenient parser makes of them
    assert (len(verdict.accepted), len(verdict.quarantined)) == (8, 3)
    found = reasons(verdict)
    assert sorted(found) == [5, 6, 7]  # data lines 4-6 are file lines 5-7
    assert all("lines 5-7 form one record: an unbalanced quote" in r for r in found.values())
    kept = verdict.quarantined[validation.RECORD_COLUMN].tolist()
    assert kept == body[3:6]  # verbatim, to fix and re-ingest


def test_wrong_field_counts_and_bytes_that_are_not_utf8_are_quarantined_by_line(tmp_path: Path) -> None:
    body = lines(6)
    body[1] = body[1] + ",extra"
    body[2] = ",".join(body[2].split(",")[:-2])
    path = write(tmp_path / "fields.csv", body)
    path.write_bytes(path.read_bytes().replace(b"paid_search", b"paid_s\xe9arch", 1))
    verdict = ingest_file(path)
    found = reasons(verdict)
    assert verdict.rows_in == 6 and found[3] == "line 3: 16 fields, the header has 15"
    assert found[4] == "line 4: 13 fields, the header has 15"
    assert any("not valid UTF-8" in r for r in found.values())


@pytest.mark.parametrize(
    ("stamp", "fmt", "zone", "expected"),
    [
        ("03/04/2026", None, None, None),  # day or month? never guessed
        ("13/04/2026", None, None, None),
        ("03/04/2026", "%d/%m/%Y", "UTC", "2026-04-03T00:00:00+00:00"),
        ("03/04/2026", "%m/%d/%Y", "UTC", "2026-03-04T00:00:00+00:00"),
        ("13/04/2026", "%m/%d/%Y", "UTC", None),  # no 13th month
        ("2026-04-03 10:00:00", None, None, None),  # naive: needs data.timezone
        ("2026-04-03 10:00:00", None, "Europe/Paris", "2026-04-03T08:00:00+00:00"),
        ("2026-04-03T10:00:00+02:00", None, None, "2026-04-03T08:00:00+00:00"),
        ("2026-04-03T10:00:00Z", None, "Europe/Paris", "2026-04-03T10:00:00+00:00"),  # an offset wins over the zone
        ("2026-03-29 02:30:00", None, "Europe/Paris", None),  # skipped by the DST change: not a local time
    ],
)
def test_timestamps_are_read_by_format_or_iso_8601_never_guessed(
    tmp_path: Path, stamp: str, fmt: str | None, zone: str | None, expected: str | None
) -> None:
    data = DATA.model_copy(update={"timestamp_format": fmt, "timezone": zone})
    fields = lines(1)[0].split(",")
    fields[1] = stamp
    verdict = ingest_file(write(tmp_path / "stamp.csv", [",".join(fields)]), data)
    if expected is None:
        assert len(verdict.accepted) == 0
        reason = verdict.quarantined[validation.REASON_COLUMN].iloc[0]
        assert reason.startswith("created_at: ") and stamp in reason
        if zone is None and fmt is None and "-" in stamp:
            assert "set data.timezone" in reason
        elif fmt is None and zone is None:
            assert "ISO 8601" in reason
    else:
        assert verdict.accepted["created_at"].iloc[0].isoformat() == expected


def test_parquet_times_without_a_zone_need_data_timezone(tmp_path: Path) -> None:
    frame = generate_leads(GenerateSettings(rows=5)).frame
    frame["created_at"] = pd.to_datetime(frame["created_at"]).dt.tz_localize(None)
    frame.to_parquet(tmp_path / "naive.parquet", index=False)
    refused = ingest_file(tmp_path / "naive.parquet")
    assert len(refused.accepted) == 0 and refused.quarantined[validation.REASON_COLUMN].str.contains("data.timezone").all()
    accepted = ingest_file(tmp_path / "naive.parquet", DATA.model_copy(update={"timezone": "America/New_York"}))
    assert len(accepted.accepted) == 5 and str(accepted.accepted["created_at"].dt.tz) == "UTC"


def test_whitespace_is_trimmed_and_empty_is_missing(tmp_path: Path) -> None:
    body = lines(4)
    first = body[0].split(",")
    first[0], first[3] = "   ", " \t "  # a blank entity id and a blank category
    body[0] = ",".join(first)
    second = body[1].split(",")
    second[0], second[2] = f"  {second[0]} ", f" {second[2]}  "
    body[1] = ",".join(second)
    verdict = ingest_file(write(tmp_path / "blank.csv", body))
    assert reasons(verdict) == {2: "lead_id: missing value; industry: missing value"}
    trimmed = verdict.accepted.iloc[0]
    assert trimmed["lead_id"] == second[0].strip() and trimmed["lead_source"] == second[2].strip()


def test_values_beyond_float32_are_quarantined_by_name(tmp_path: Path) -> None:
    body = lines(3)
    fields = body[0].split(",")
    fields[12] = "1e39"  # days_since_first_contact has no configured range: still refused
    body[0] = ",".join(fields)
    verdict = ingest_file(write(tmp_path / "huge.csv", body))
    assert reasons(verdict)[2].startswith("days_since_first_contact: outside the float32-safe range")


def test_a_label_with_three_values_fails_the_batch_and_keeps_its_rows(tmp_path: Path) -> None:
    body = lines(30)
    body = [line.rsplit(",", 1)[0] + ",maybe" if i % 3 == 0 else line for i, line in enumerate(body)]
    verdict = ingest_file(write(tmp_path / "label.csv", body))
    assert len(verdict.quarantined) == 10  # kept, with their reason
    with pytest.raises(validation.TooManyBadRows, match=r"10 of 30 rows \(33%\).*data.max_quarantine_share 0.05") as err:
        validation.check_share(verdict, DATA, "label.csv")
    assert "converted: not a binary label: 10 rows" in str(err.value)
    validation.check_share(verdict, DATA.model_copy(update={"max_quarantine_share": 0.5}), "label.csv")  # allowed


def test_an_all_null_feature_fails_the_batch_naming_the_column(tmp_path: Path) -> None:
    body = [",".join(f if i != 9 else "" for i, f in enumerate(line.split(","))) for line in lines(20)]
    verdict = ingest_file(write(tmp_path / "null.csv", body))
    with pytest.raises(validation.TooManyBadRows, match="calls: missing value: 20 rows"):
        validation.check_share(verdict, DATA, "null.csv")


def test_an_empty_file_and_a_repeated_column_are_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(storage.SourceError, match=r"empty\.csv.*empty file"):
        storage.parse(storage.fetch(str(tmp_path / "empty.csv")))
    write(tmp_path / "twice.csv", lines(2), header=HEADER + ",calls")
    with pytest.raises(storage.SourceError, match=r"twice\.csv.*line 1: column\(s\) named twice: 'calls'"):
        storage.parse(storage.fetch(str(tmp_path / "twice.csv")))


def test_blank_lines_hold_no_record_and_quoted_commas_are_values(tmp_path: Path) -> None:
    body = lines(3)
    fields = body[1].split(",")
    fields[3] = '"retail, online"'
    body[1] = ",".join(fields)
    verdict = ingest_file(write(tmp_path / "quoted.csv", [body[0], "", body[1], "", body[2]]))
    assert verdict.rows_in == 3 and len(verdict.accepted) == 3
    assert "retail, online" in set(verdict.accepted["industry"])
