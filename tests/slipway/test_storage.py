"""Raw sources: local CSV and Parquet, and s3:// through boto3 against an S3-compatible server."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import httpx
import pytest

from slipway import storage
from slipway.datagen import generate_leads, write_generated
from slipway.processes import free_port, running_server
from slipway.settings import GenerateSettings


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's standalone S3-compatible server, as a separate process."""
    port = free_port()
    server = str(Path(sys.executable).parent / "moto_server")
    url = f"http://127.0.0.1:{port}"
    with running_server(
        [server, "-H", "127.0.0.1", "-p", str(port)], _answers_at_all(url), tmp_path_factory.mktemp("moto") / "moto.log"
    ):
        yield url


def _answers_at_all(url: str) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            httpx.get(url, timeout=1)
        except httpx.HTTPError:
            return False
        return True

    return probe


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return s3_endpoint


def test_csv_and_parquet_sources_parse_to_the_same_rows(tmp_path: Path) -> None:
    data = generate_leads(GenerateSettings(rows=300))
    write_generated(data, str(tmp_path / "leads.csv"))
    write_generated(data, str(tmp_path / "leads.parquet"))
    from_csv = storage.parse(storage.fetch(str(tmp_path / "leads.csv"))).frame
    from_parquet = storage.parse(storage.fetch(str(tmp_path / "leads.parquet"))).frame
    assert from_csv.shape == from_parquet.shape == (300, 15)
    assert from_csv["page_views"].tolist() == from_parquet["page_views"].tolist()


@pytest.mark.e2e  # an S3-compatible server (moto) as a process
def test_s3_source_is_read_through_boto3(s3_env: str, tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    write_generated(generate_leads(GenerateSettings(rows=100)), str(path))
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="raw")
    s3.upload_file(str(path), "raw", "crm/2026/leads.csv")
    batch = storage.fetch("s3://raw/crm/2026/leads.csv")
    assert batch.content == path.read_bytes() and batch.name == "leads.csv"
    assert storage.parse(batch).rows_in == 100


@pytest.mark.e2e  # an S3-compatible server (moto) as a process
def test_missing_s3_object_names_the_uri(s3_env: str) -> None:
    boto3.client("s3").create_bucket(Bucket="empty")
    with pytest.raises(storage.SourceError, match=r"s3://empty/none\.csv"):
        storage.fetch("s3://empty/none.csv")


def test_bad_sources_are_named(tmp_path: Path) -> None:
    with pytest.raises(storage.SourceError, match=r"expected a \.csv or \.parquet"):
        storage.fetch(str(tmp_path / "leads.xlsx"))
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet")
    with pytest.raises(storage.SourceError, match=r"broken\.parquet.*cannot parse"):
        storage.parse(storage.fetch(str(broken)))
