"""One partition of batch scoring in-process: rejects with reasons, scores equal to the pipeline's, fixed part names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from features import gold
from features.gold import KNOWN
from models import batch, training
from models.fast_scorer import FastScorer
from tests.models.conftest import CFG, DATA

URI, NAME = "sqlite:///unused.db", "lead-scoring"


@pytest.fixture(scope="module")
def pipeline(split: training.Split) -> Pipeline:
    return training.refit_xgboost(split.development, DATA, CFG, {"max_depth": 3}, 40)


@pytest.fixture
def job(tmp_path: Path, pipeline: Pipeline) -> Iterator[batch.BatchJob]:
    for version in ("1", "2"):  # the worker's cache, filled as a worker fills it on its first partition
        batch._SCORERS[(URI, NAME, version, "")] = FastScorer(pipeline, DATA)
    yield batch.BatchJob(
        URI, NAME, "1", DATA, str(tmp_path / "scores"), str(tmp_path / "rejects"), str(tmp_path / "log"),
        "run=20260601T020000Z-abc123", "2026-06-01T02:00:00+00:00", carry=["campaign"],
    )  # fmt: skip
    batch._SCORERS.clear()


def source_rows(split: training.Split, n: int = 50) -> pd.DataFrame:
    rows = split.test.X.head(n).astype(object).reset_index(drop=True)
    return rows.assign(lead_id=[f"L{i}" for i in range(n)], campaign="spring")


def test_bad_rows_become_rejects_naming_the_column_and_value(split: training.Split, job: batch.BatchJob) -> None:
    rows = source_rows(split)
    rows.loc[0, "page_views"] = "lots"
    rows.loc[1, "region"] = "   "
    rows.loc[2, "lead_id"] = None
    rows.loc[3, "calls"] = 1e39
    rows.loc[4, "meetings"] = None
    stats = batch.score_partition(rows, 7, job)
    assert stats["rows_in"] == 50 and stats["rows_scored"] == 45 and stats["rows_rejected"] == 5
    rejects = pd.read_parquet(Path(job.rejects) / "part-00007.parquet")
    assert rejects["reason"].tolist() == [
        "page_views: not a number: lots",
        "missing feature region",
        "missing entity id (lead_id)",
        "calls: outside the float32 range",
        "missing feature meetings",
    ]
    assert rejects.loc[0, "page_views"] == "lots"  # the raw value is kept, as text


def test_scores_equal_the_pipeline_and_carry_columns_come_along(
    split: training.Split, job: batch.BatchJob, pipeline: Pipeline
) -> None:
    rows = source_rows(split)
    batch.score_partition(rows, 0, job)
    out = pd.read_parquet(Path(job.staging) / "part-00000.parquet")
    expected = training.predict_proba(pipeline, gold.to_feature_frame(rows, DATA))
    np.testing.assert_allclose(out["score"], expected, rtol=1e-6, atol=1e-9)
    assert list(out.columns) == ["entity", "score", "model_version", "scored_at", "campaign"]
    assert out["entity"].tolist() == rows["lead_id"].tolist() and set(out["model_version"]) == {"1"}
    log = pd.read_parquet(Path(job.batch_log) / "date=2026-06-01" / "20260601T020000Z-abc123-part-00000.parquet")
    assert len(log) == 50 and log["page_views"].dtype == "float64" and set(log["served_version"]) == {"1"}


def test_a_re_run_partition_replaces_its_files_instead_of_adding_rows(split: training.Split, job: batch.BatchJob) -> None:
    rows = source_rows(split)
    for _ in range(2):  # a lost worker's partition is run again elsewhere
        batch.score_partition(rows, 3, job)
    assert [p.name for p in Path(job.staging).iterdir()] == ["part-00003.parquet"]
    assert len(pd.read_parquet(Path(job.staging))) == 50


def test_shadow_scores_sit_beside_the_champions(split: training.Split, job: batch.BatchJob) -> None:
    shadowed = batch.BatchJob(**{**job.__dict__, "shadow_version": "2"})
    batch.score_partition(source_rows(split, 5), 0, shadowed)
    out = pd.read_parquet(Path(job.staging) / "part-00000.parquet")
    assert set(out["shadow_version"]) == {"2"} and np.allclose(out["shadow_score"], out["score"])


def test_ids_the_entity_table_does_not_know_are_rejected(split: training.Split, job: batch.BatchJob) -> None:
    rows = source_rows(split, 3)
    rows[KNOWN] = pd.Series([True, None, True], dtype=object)
    rows.loc[1, DATA.features] = None
    stats = batch.score_partition(rows, 0, job)
    assert stats["rows_rejected"] == 1
    assert pd.read_parquet(Path(job.rejects) / "part-00000.parquet")["reason"].tolist() == ["unknown entity: L1"]


def test_the_flow_sends_a_version_once_and_again_only_when_its_fingerprint_changes(
    job: batch.BatchJob, pipeline: Pipeline
) -> None:
    from distributed import Client, LocalCluster

    batch._SCORERS.clear()
    loads: list[str] = []

    def load(version: str) -> FastScorer:
        loads.append(version)
        return FastScorer(pipeline, DATA)

    with (
        LocalCluster(n_workers=2, processes=False, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        assert batch.ship_scorers(client, job, load) == {"1": 2} and loads == ["1"]
        assert batch.ship_scorers(client, job, load) == {} and loads == ["1"]  # every worker holds it
        # the same number in a registry recreated under the same URI is another model: sent again
        recreated = batch.BatchJob(**{**job.__dict__, "fingerprints": {"1": "run-b:1700000000000"}})
        assert batch.ship_scorers(client, recreated, load) == {"1": 2} and loads == ["1", "1"]
    assert (URI, NAME, "1", "run-b:1700000000000") in batch._SCORERS
