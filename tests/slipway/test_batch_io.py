"""The batch output's folders: what a run that died leaves, and what the next run sweeps."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from slipway.batch_io import MANIFEST, RunFolders, sweep_incomplete, write_part


def test_the_sweep_removes_only_what_dead_runs_staged_and_keeps_committed_runs(tmp_path: Path) -> None:
    output = str(tmp_path / "scores")
    frame = pd.DataFrame({"entity": ["a", "b"], "score": [0.1, 0.9]})
    done = RunFolders.new(output, datetime(2026, 12, 1, tzinfo=UTC))
    write_part(frame, done.staged_scores, "part-00000.parquet")
    write_part(frame.head(0), done.staged_rejects, "part-00000.parquet")
    committed = done.commit({"rows_in": 2})
    dead = RunFolders.new(output, datetime(2026, 12, 2, tzinfo=UTC))  # killed after writing a part
    write_part(frame, dead.staged_scores, "part-00000.parquet")

    assert sweep_incomplete(output) == [dead.staging]
    assert not Path(dead.staging).exists() and (Path(committed) / MANIFEST).exists()
    assert len(pd.read_parquet(committed)) == 2 and Path(done.rejects).exists()
    assert sweep_incomplete(output) == [] and sweep_incomplete(str(tmp_path / "never-written")) == []
