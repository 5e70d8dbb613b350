"""The monitor's computation in-process: a window taken in pieces, the training window, PSI + Evidently on a shift."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from evidently.core.report import Snapshot
from evidently.ui.workspace import Workspace

from models import dashboard, drift, monitoring
from models.comparison import psi
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


def window(reference: pd.DataFrame, *parts: pd.DataFrame, labels: pd.Series | None = None, n: int = 2000) -> monitoring.Window:
    win = monitoring.Window(reference, DATA, pd.Series(dtype=int) if labels is None else labels, n)
    for part in parts:
        win.add_frame(part)
    return win


def test_a_window_taken_in_pieces_counts_every_row_as_one_frame_would_and_keeps_a_bounded_sample() -> None:
    reference, current = frame(3000, 0), frame(10_000, 1, visits_shift=1.0)
    current.loc[::7, "region"] = None
    labels = pd.Series([1, 0, 1], index=["E5", "E9000", "unseen"])
    whole = window(reference, current, labels=labels)
    pieces = window(reference, *(current.iloc[i : i + 999] for i in range(0, len(current), 999)), labels=labels)
    assert whole.rows == pieces.rows == 10_000 and whole.counter.psi() == pieces.counter.psi()
    expected = psi(reference["visits"].to_numpy(), current["visits"].to_numpy(), drift.FEATURE_BINS)
    assert pieces.counter.psi()["visits"] == expected and pieces.counter.psi()["region"] > 0.1  # missing is a category
    y, scores = pieces.labelled()
    assert y.tolist() == [1, 0] and scores.tolist() == current.set_index("entity").loc[["E5", "E9000"], "score"].tolist()
    sample = pieces.sample()
    assert len(sample) == 2000 and sample["entity"].is_unique and set(sample["entity"]) <= set(current["entity"])
    assert abs(sample["visits"].mean() - current["visits"].mean()) < 0.2  # uniform, not the first or last pieces


def test_the_reference_is_the_versions_training_window() -> None:
    rows = pd.DataFrame({"t": pd.date_range("2026-01-01", periods=10, freq="D", tz="UTC"), "v": range(10)})
    tags = {"training_window_start": "2026-01-03T00:00:00+00:00", "training_window_end": "2026-01-05T00:00:00+00:00"}
    assert monitoring.in_training_window(rows, tags, "t")["v"].tolist() == [2, 3, 4]
    assert len(monitoring.in_training_window(rows, {}, "t")) == 10  # no window recorded: all rows


def test_a_shifted_feature_is_named_and_the_report_is_written(tmp_path: Path) -> None:
    cfg = MonitorSettings(sample_rows=2000)
    reference, current = frame(3000, 0), frame(3000, 1, visits_shift=3.0)
    labels = pd.Series([1, 0], index=["E0", "E1"])
    verdict = monitoring.assess(reference, window(reference, current, labels=labels), 0.8, DATA, cfg, tmp_path)
    assert verdict.feature_psi["visits"] > cfg.max_feature_psi > verdict.feature_psi["calls"]
    assert any("visits" in reason for reason in verdict.drift) and verdict.labelled == 2
    assert (tmp_path / "evidently.html").stat().st_size > 10_000 and (tmp_path / "evidently.json").exists()
    table = monitoring.psi_table(verdict, cfg, "3")
    assert table[0]["feature"] == "visits" and table[0]["drifted"] and table[-1]["feature"] == "(score, v3)"
    assert set(monitoring.verdict_metrics(verdict)) >= {"psi_visits", "score_psi", "drifted_share", "rows"}


def test_the_same_distribution_is_not_drift(tmp_path: Path) -> None:
    reference = frame(3000, 0)
    verdict = monitoring.assess(reference, window(reference, frame(3000, 2)), None, DATA, MonitorSettings(), tmp_path)
    assert verdict.drift == [] and verdict.degraded == [] and max(verdict.feature_psi.values()) < 0.05


def test_a_conversion_drop_among_scored_entities_is_a_business_degradation(tmp_path: Path) -> None:
    cfg = MonitorSettings(sample_rows=2000, min_labelled_rows=200, max_conversion_drop=0.10)
    reference = frame(3000, 0).assign(y=np.r_[np.ones(600), np.zeros(2400)].astype(int))  # converts at 20%
    current = frame(3000, 2)
    ids = current["entity"]
    # 400 scored entities have their labels: 15% converted (a 25% relative drop); each was scored three times
    labels = pd.Series(np.r_[np.ones(60), np.zeros(340)].astype(int), index=ids[:400].to_numpy())
    win = window(reference, current, current.iloc[:400], current.iloc[:400], labels=labels)
    verdict = monitoring.assess(reference, win, None, DATA, cfg, tmp_path)
    assert verdict.labelled_entities == 400 and verdict.labelled == 1200  # entities once, scored rows each time
    assert verdict.reference_conversion == 0.2 and verdict.current_conversion == 0.15
    assert len(verdict.business) == 1 and "15.0% on 400 labelled entities vs 20.0%" in verdict.business[0]
    assert verdict.drift == []  # the features did not move: only the business metric did

    steady = pd.Series(np.r_[np.ones(78), np.zeros(322)].astype(int), index=ids[:400].to_numpy())  # 19.5%: within 10%
    assert monitoring.assess(reference, window(reference, current, labels=steady), None, DATA, cfg, tmp_path).business == []
    few = pd.Series(np.r_[np.ones(15), np.zeros(135)].astype(int), index=ids[:150].to_numpy())  # 10%, but too few to judge
    assert monitoring.assess(reference, window(reference, current, labels=few), None, DATA, cfg, tmp_path).business == []


def test_each_monitor_run_adds_one_snapshot_to_the_models_evidently_project(tmp_path: Path) -> None:
    cfg = MonitorSettings(sample_rows=5000)  # the whole window is compared
    reference = frame(3000, 0).assign(y=np.r_[np.ones(600), np.zeros(2400)].astype(int))
    workspace, aucs = tmp_path / "evidently", []
    for run, shift in enumerate((0.0, 3.0)):
        current = frame(3000, run + 1, visits_shift=shift)
        labels = pd.Series(np.r_[np.ones(30), np.zeros(170)].astype(int), index=current["entity"][:200].to_numpy())
        out = tmp_path / f"run{run}"
        verdict = monitoring.assess(reference, window(reference, current, labels=labels, n=5000), 0.8, DATA, cfg, out)
        aucs.append(verdict.current_auc)
        dashboard.record(workspace, "leads", DATA, Snapshot.load(out / monitoring.SNAPSHOT), f"run {run}")
    ws = Workspace(str(workspace))
    (project,) = ws.search_project(dashboard.project_name("leads"))
    runs = ws.list_runs(project.id)
    assert len(runs) == 2  # one per run; the project and its panels were not duplicated
    titles = [p.title for p in ws.get_dashboard(project.id).panels]
    assert titles[1:] == [
        "Share of drifted features",
        "PSI per feature",
        "Score distribution",
        "Rows per window",
        "ROC-AUC on labelled rows (once labels arrive)",
        "Conversion rate of scored rows (once labels arrive)",
    ]
    values: dict[str, list[float]] = {}
    for snapshot_id in runs:
        snapshot = ws.get_run(project.id, snapshot_id)
        assert snapshot is not None
        for result in Snapshot.load_model(snapshot).dict()["metrics"]:
            values.setdefault(result["metric_name"], []).append(result["value"])
    psi_visits = values["ValueDrift(column=visits,method=psi,threshold=0.1)"]
    assert min(psi_visits) < 0.1 < 1.0 < max(psi_visits)  # the second run's shift shows on the dashboard's PSI line
    assert values["MeanValue(column=label)"] == [0.15, 0.15]  # conversion of the labelled scored rows
    assert None not in aucs and np.allclose(sorted(values["MeanValue(column=roc_auc)"]), sorted(aucs))  # the monitor's, per run
