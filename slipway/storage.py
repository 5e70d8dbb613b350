"""Reading raw batches from local paths or ``s3://`` URIs.

S3 goes through boto3, so the standard ``AWS_*`` variables and
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` (for MinIO, moto or any
S3-compatible store) apply unchanged.
"""

from __future__ import annotations

import hashlib
import io
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


def parse(batch: RawBatch) -> pd.DataFrame:
    """Parse a batch keeping every CSV value as text, so typing can name bad cells."""
    try:
        if batch.is_parquet:
            return pd.read_parquet(io.BytesIO(batch.content))
        return pd.read_csv(io.BytesIO(batch.content), dtype=str, keep_default_na=True)
    except Exception as exc:
        raise SourceError(f"data.source {batch.source!r}: cannot parse: {exc}") from exc
