"""Reading raw batches from local paths or ``s3://`` URIs.

S3 goes through boto3, so the standard ``AWS_*`` variables and
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` (for MinIO, moto or any
S3-compatible store) apply unchanged.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

PERMANENT_S3_ERRORS = {"NoSuchKey", "NoSuchBucket", "404", "403", "AccessDenied", "InvalidAccessKeyId"}


class SourceError(ValueError):
    """The configured source cannot be read; the message names it.

    ``transient`` marks failures worth retrying (a network error), as opposed to a
    missing file or a bad format, which no retry will fix.
    """

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class RawBatch:
    """The bytes of one raw batch exactly as received, and where they came from."""

    source: str
    name: str
    content: bytes

    @cached_property
    def md5(self) -> str:
        """Hashed once: bronze's address, the batch id and the archive metadata all use it."""
        return hashlib.md5(self.content, usedforsecurity=False).hexdigest()

    @property
    def is_parquet(self) -> bool:
        return self.name.lower().endswith((".parquet", ".pq"))


def fetch(source: str) -> RawBatch:
    """Read a CSV or Parquet source, local or on S3, as bytes."""
    if not source.lower().endswith((".csv", ".parquet", ".pq")):
        raise SourceError(f"data.source {source!r}: expected a .csv or .parquet file")
    if source.startswith("s3://"):
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        url = urlparse(source)
        try:
            body = boto3.client("s3").get_object(Bucket=url.netloc, Key=url.path.lstrip("/"))["Body"].read()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            raise SourceError(f"data.source {source!r}: {exc}", transient=code not in PERMANENT_S3_ERRORS) from exc
        except BotoCoreError as exc:
            raise SourceError(f"data.source {source!r}: {exc}", transient=True) from exc
        return RawBatch(source, Path(url.path).name, body)
    path = Path(source)
    if not path.is_file():
        raise SourceError(f"data.source {source!r}: file not found")
    return RawBatch(source, path.name, path.read_bytes())


# Cell texts read as missing, as pandas' readers treat them (the empty string included).
MISSING_TEXTS = frozenset(
    {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA"}
    | {"NULL", "NaN", "None", "n/a", "nan", "null"}
)


NOT_UTF8 = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, as surrogateescape keeps them


@dataclass(frozen=True)
class Malformed:
    """A physical line of a CSV that is not a well-formed record, kept verbatim."""

    line: int  # 1-based; the header is line 1
    text: str
    reason: str


@dataclass
class ParsedBatch:
    """Every record of a batch: the well-formed ones as a frame, the others as lines.

    ``rows_in`` counts records in the file: each well-formed record once, and each
    physical line of a malformed record once, so nothing a lenient parser would fold
    into another row's cell escapes the reconciliation.
    """

    frame: pd.DataFrame  # values as text (CSV) or as the file types them (Parquet); missing as None
    lines: list[int] | None  # the CSV line each frame row starts on; None for Parquet
    malformed: list[Malformed]

    @property
    def rows_in(self) -> int:
        return len(self.frame) + len(self.malformed)


def parse(batch: RawBatch) -> ParsedBatch:
    """Parse a batch strictly, keeping CSV values as text so typing can name bad cells."""
    if batch.is_parquet:
        try:
            frame = pd.read_parquet(io.BytesIO(batch.content))
        except Exception as exc:
            raise SourceError(f"data.source {batch.source!r}: cannot parse: {exc}") from exc
        return ParsedBatch(frame.reset_index(drop=True), None, [])
    return _parse_csv(batch)


def _parse_csv(batch: RawBatch) -> ParsedBatch:
    """One record per physical line: a record that spans lines or has the wrong field count is malformed.

    A line break inside a quoted field is legal CSV, but in a tabular batch it is far
    more often an unbalanced quote swallowing the lines after it, so such a record is
    quarantined line by line rather than trusted. Values are trimmed; empty is missing.
    """
    text = batch.content.decode("utf-8-sig", errors="surrogateescape")
    physical = list(io.StringIO(text, newline=""))
    reader = csv.reader(iter(physical), strict=True)
    undecodable = NOT_UTF8.search(text) is not None
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise SourceError(f"data.source {batch.source!r}: empty file, no header line") from None
    except csv.Error as exc:
        raise SourceError(f"data.source {batch.source!r}: line 1: unreadable header: {exc}") from None
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise SourceError(f"data.source {batch.source!r}: line 1: column(s) named twice: {', '.join(map(repr, repeated))}")
    records: list[list[str]] = []
    lines: list[int] = []
    malformed: list[Malformed] = []

    def refuse(start: int, end: int, reason: str) -> None:
        for line in range(start, end + 1):
            raw = physical[line - 1].rstrip("\r\n").encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            malformed.append(Malformed(line, raw, reason))

    done = reader.line_num
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            refuse(done + 1, reader.line_num, f"line {done + 1}: malformed CSV ({exc})")
            done = reader.line_num
            continue
        start, done = done + 1, reader.line_num
        if not record:
            continue  # a blank line holds no record
        if done > start:
            refuse(start, done, f"lines {start}-{done} form one record: an unbalanced quote or a line break in a field")
        elif len(record) != len(header):
            refuse(start, done, f"line {start}: {len(record)} fields, the header has {len(header)}")
        elif undecodable and NOT_UTF8.search(physical[start - 1]):
            refuse(start, done, f"line {start}: not valid UTF-8")
        else:
            records.append(record)
            lines.append(start)
    frame = pd.DataFrame(records, columns=header, dtype=object)
    for column in frame.columns:
        values = frame[column].str.strip()
        frame[column] = values.where(~values.isin(MISSING_TEXTS), None)
    return ParsedBatch(frame, lines, malformed)
