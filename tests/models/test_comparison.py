"""Shadow report and canary health on hand-built prediction-log windows."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from models.comparison import (
    bootstrap_auc_difference,
    canary_health,
    psi,
    rank_agreement,
    shadow_report,
    top_k_overlap,
    watch_check,
)
from slipway.prediction_log import COLUMNS
from slipway.settings import PromotionSettings, WatchSettings

CFG = PromotionSettings(
    min_shadow_samples=50, min_canary_samples=20, max_error_rate=0.05, max_p99_latency_ms=10, max_score_psi=0.25
)


def window(rows: list[dict[str, object]]) -> pd.DataFrame:
    now = datetime.now(UTC)
    return pd.DataFrame([{"time": now, "request_id": str(i), **r} for i, r in enumerate(rows)]).reindex(columns=COLUMNS)


def test_psi_is_near_zero_for_one_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.beta(2, 5, 5000), rng.beta(2, 5, 5000)
    assert psi(a, b) < 0.01
    assert psi(a, np.clip(a + 0.3, 0, 1)) > 1.0


def test_bootstrap_interval_brackets_the_point_and_excludes_zero_for_a_clear_gain() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 2000)
    good, noise = y + rng.normal(0, 0.5, 2000), rng.random(2000)
    result = bootstrap_auc_difference(y, good, noise)
    assert result is not None
    point, low, high = result
    assert low < point < high and low > 0.2
    assert bootstrap_auc_difference(np.zeros(10), good[:10], noise[:10]) is None


def test_shadow_report_counts_samples_errors_and_labelled_rows() -> None:
    rows = [
        {"entity": f"e{i}", "score": 0.2 + 0.5 * (i % 2), "shadow_version": "2", "shadow_score": 0.25 + 0.5 * (i % 2)}
        for i in range(60)
    ] + [{"entity": "e999", "score": 0.3, "shadow_version": "2", "shadow_score": None, "error": "v2: ValueError: x"}]
    labels = pd.Series({f"e{i}": i % 2 for i in range(30)})
    latency = (np.full(10, 1.0), np.full(10, 2.0))
    report = shadow_report(window(rows), "1", "2", labels, latency, CFG)
    assert (report.samples, report.errors, report.labelled, report.agreement) == (60, 1, 30, 1.0)
    assert report.latency_p99_ms_challenger == 2.0 and report.auc_difference is not None
    assert report.passed and "v2 (challenger) vs v1" in report.to_markdown()
    too_few = shadow_report(window(rows[:10]), "1", "2", labels, latency, CFG)
    assert not too_few.passed and "only 10 live rows" in too_few.problems[0]


def test_rank_measures_tell_what_the_half_point_hides() -> None:
    rng = np.random.default_rng(2)
    champion = rng.beta(1, 9, 1000)  # nearly every score below 0.5, as with a rare positive class
    reversed_order = 0.3 - champion * 0.5  # still below 0.5 everywhere, but ranks the leads backwards
    rows = [
        {"entity": f"e{i}", "score": float(a), "shadow_version": "2", "shadow_score": float(b)}
        for i, (a, b) in enumerate(zip(champion, reversed_order, strict=True))
    ]
    report = shadow_report(window(rows), "1", "2", pd.Series(dtype=int), (np.ones(3), np.ones(3)), CFG, 0.1)
    assert report.agreement == 1.0  # "agree" on the side of 0.5 …
    assert report.rank_agreement < -0.99 and report.top_k_overlap == 0.0  # … yet call the opposite leads first
    markdown = report.to_markdown("http://mlflow/plot.png")
    assert "rank agreement (Spearman) | -1.000" in markdown and "top 10% overlap" in markdown
    assert "[Score distributions of both versions](http://mlflow/plot.png)" in markdown
    assert rank_agreement(champion, champion * 2) > 0.999 and top_k_overlap(champion, champion + 1, 0.05) == 1.0


def test_canary_health_fails_on_errors_latency_shift_and_starvation() -> None:
    healthy = [
        {"route": "canary", "served_version": v, "score": s, "latency_ms": 2.0} for v in "12" for s in np.linspace(0, 1, 40)
    ]
    assert canary_health(window(healthy), "1", "2", 50, CFG).healthy
    failing = healthy + [{"route": "canary", "served_version": "1", "score": 0.5, "latency_ms": 2.0, "error": "v2: boom"}] * 5
    assert "challenger failed on 5 of 45 rows" in canary_health(window(failing), "1", "2", 50, CFG).problems[0]
    assert "failed on 9 of 49" in canary_health(window(healthy), "1", "2", 50, CFG, reported_errors=9).problems[0]
    slow = [dict(r, latency_ms=50.0) if r["served_version"] == "2" else r for r in healthy]
    assert "p99 latency 50.0 ms" in canary_health(window(slow), "1", "2", 50, CFG).problems[0]
    shifted = [dict(r, score=0.99) if r["served_version"] == "2" else r for r in healthy]
    assert "PSI" in canary_health(window(shifted), "1", "2", 50, CFG).problems[0]
    starved = [r for r in healthy if r["served_version"] == "1"]
    assert "only 0 rows were routed" in canary_health(window(starved), "1", "2", 50, CFG).problems[0]


WATCH = WatchSettings(min_rows=50, max_error_rate=0.05, max_p99_latency_ms=10, max_score_psi=0.25, max_auc_drop=0.02)


def watched(n: int, score_shift: float = 0.0, latency: float = 2.0) -> list[dict[str, object]]:
    """Rows served by the new champion v3 with the previous champion v2 scoring them in shadow."""
    rng = np.random.default_rng(3)
    previous = rng.beta(2, 5, n)
    return [
        {"entity": f"e{i}", "route": "champion", "served_version": "3", "score": float(np.clip(p + score_shift, 0, 1)),
         "shadow_version": "2", "shadow_score": float(p), "latency_ms": latency}
        for i, p in enumerate(previous)
    ]  # fmt: skip


def test_watch_check_passes_a_healthy_champion_and_names_each_failure() -> None:
    healthy = window(watched(200))
    check = watch_check(healthy, healthy, pd.Series(dtype=int), "3", "2", WATCH)
    assert check.healthy and (check.rows, check.shadowed, check.errors, check.labelled) == (200, 200, 0, 0)
    assert check.auc_difference is None and "no labels yet" in check.summary()
    assert (
        "p99 latency 40.0 ms exceeds 10 ms"
        in watch_check(window(watched(200, latency=40)), healthy, pd.Series(dtype=int), "3", "2", WATCH).problems[0]
    )
    shifted = window(watched(200, score_shift=0.4))
    assert "scores shifted from v2's: PSI" in watch_check(shifted, healthy, pd.Series(dtype=int), "3", "2", WATCH).problems[0]
    few = window(watched(20, score_shift=0.4))  # too few rows for PSI to mean anything: not judged yet
    assert watch_check(few, few, pd.Series(dtype=int), "3", "2", WATCH).healthy
    reported = watch_check(healthy, healthy, pd.Series(dtype=int), "3", "2", WATCH, reported_errors=30)
    assert "v3 failed on 30 of 230 rows" in reported.problems[0]  # the service's counter, when the log lost rows


def test_watch_check_rolls_back_on_a_significant_auc_loss_once_labels_arrive() -> None:
    rng = np.random.default_rng(4)
    rows = watched(1000)
    y = rng.integers(0, 2, len(rows))
    for row, label in zip(rows, y, strict=True):  # the previous champion ranks well, the new one at random
        row["shadow_score"], row["score"] = float(0.3 * label + 0.7 * rng.random()), float(rng.random())
    labels = pd.Series(y, index=[r["entity"] for r in rows])
    frame = window(rows)
    check = watch_check(frame.head(10), frame, labels, "3", "2", WATCH)  # AUC on every labelled row since the start
    assert check.labelled == 1000 and check.auc_difference is not None and check.auc_difference[0] < -0.1
    assert "ROC-AUC is" in check.problems[-1] and "below v2's on 1000 labelled rows" in check.problems[-1]
    same = window([dict(r, score=r["shadow_score"]) for r in rows])
    assert watch_check(same.head(10), same, labels, "3", "2", WATCH).healthy
