"""Pipeline flow: ingest → materialize → train, as subflows of one run."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import flow

from flows.ingest import Reconciliation, ingest
from flows.materialize import materialize
from flows.train import TrainResult, train


@dataclass(frozen=True)
class PipelineResult:
    ingest: Reconciliation
    feature_rows: int
    train: TrainResult

    def line(self) -> str:
        return f"{self.ingest.line()}\n{self.train.line()}"


@flow(name="pipeline", log_prints=True)
def pipeline(params: str = "params.yaml") -> PipelineResult:
    """Take the configured source to a registered challenger."""
    reconciliation = ingest(params)
    feature_rows = materialize(params)
    return PipelineResult(reconciliation, feature_rows, train(params))
