"""The monitor's computation in-process: decoding the log, the training window, PSI + Evidently on a shifted window."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from models import monitoring
from slipway.settings import DataSettings, MonitorSettings

DATA = DataSettings(source="x.csv", entity="id", timestamp="t", label="y", numeric=["visits", "calls"], categorical=["region"])


def frame(n: int, seed: int, visits_shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "visits": rng.normal(10 + visits_shift, 2, n),
            "calls": rng.poisson(3, n).astype(float),
            "region": rng.choice(["emea", "amer", "apac"], n),
            "entity": [f"E{i}" for i in range(n)],
            monitoring.SCORE: rng.uniform(size=n),
        }
    )


def test_decode_turns_logged_json_into_typed_feature_columns() -> None:
    log = pd.DataFrame(
        {
            "features": [json.dumps({"visits": 3, "calls": 1.5, "region": "emea"}), json.dumps({"visits": None, "region": None})],
            "entity": ["E1", None],
            "score": [0.25, 0.5],
        }
    )
    decoded = monitoring.decode(log, DATA)
    assert list(decoded.columns) == ["visits", "calls", "region", "entity", "score"]
    assert decoded["visits"].tolist()[0] == 3 and np.isnan(decoded["calls"][1]) and decoded["score"].tolist() == [0.25, 0.5]


def test_the_reference_is_the_versions_training_window() -> None:
    rows = pd.DataFrame({"t": pd.date_range("2026-01-01", periods=10, freq="D", tz="UTC"), "v": range(10)})
    tags = {"training_window_start": "2026-01-03T00:00:00+00:00", "training_window_end": "2026-01-05T00:00:00+00:00"}
    assert monitoring.in_training_window(rows, tags, "t")["v"].tolist() == [2, 3, 4]
    assert len(monitoring.in_training_window(rows, {}, "t")) == 10  # no window recorded: all rows


def test_a_shifted_feature_is_named_and_the_report_is_written(tmp_path: Path) -> None:
    cfg = MonitorSettings(sample_rows=2000)
    reference, current = frame(3000, 0), frame(3000, 1, visits_shift=3.0)
    labels = pd.Series([1, 0], index=["E0", "E1"])
    verdict = monitoring.assess(reference, current, labels, 0.8, DATA, cfg, tmp_path)
    assert verdict.feature_psi["visits"] > cfg.max_feature_psi > verdict.feature_psi["calls"]
    assert any("visits" in reason for reason in verdict.drift) and verdict.labelled == 2
    assert (tmp_path / "evidently.html").stat().st_size > 10_000 and (tmp_path / "evidently.json").exists()
    table = monitoring.psi_table(verdict, cfg, "3")
    assert table[0]["feature"] == "visits" and table[0]["drifted"] and table[-1]["feature"] == "(score, v3)"
    assert set(monitoring.verdict_metrics(verdict)) >= {"psi_visits", "score_psi", "drifted_share", "rows"}


def test_the_same_distribution_is_not_drift(tmp_path: Path) -> None:
    verdict = monitoring.assess(frame(3000, 0), frame(3000, 2), pd.Series(dtype=int), None, DATA, MonitorSettings(), tmp_path)
    assert verdict.drift == [] and verdict.degraded == [] and max(verdict.feature_psi.values()) < 0.05
