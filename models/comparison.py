"""Comparing a challenger with the champion on live traffic: the shadow report and canary health.

Pure: both work on frames read from the prediction log (see ``slipway.prediction_log``)
and return plain results that the promote flow publishes, tags and audits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from slipway.settings import PromotionSettings, WatchSettings

PSI_BINS = 5  # few bins: PSI's noise grows with bins/samples, and canary steps are short


def quantile_edges(expected: np.ndarray, bins: int) -> np.ndarray:
    """The inner edges of ``bins`` quantile bins of ``expected`` (fewer where values repeat)."""
    return np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)


def psi_of(expected_share: np.ndarray, actual_share: np.ndarray) -> float:
    """PSI of two distributions over the same bins (empty bins count as 0.01%)."""
    e, a = np.clip(expected_share, 1e-4, None), np.clip(actual_share, 1e-4, None)
    return float(np.sum((a - e) * np.log(a / e)))


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index of ``actual`` against ``expected`` on quantile bins of ``expected``."""
    expected, actual = np.asarray(expected, dtype=float), np.asarray(actual, dtype=float)
    if len(expected) == 0 or len(actual) == 0:
        return float("nan")
    edges = quantile_edges(expected, bins)
    return psi_of(bin_counts(expected, edges) / len(expected), bin_counts(actual, edges) / len(actual))


def bootstrap_auc_difference(
    y: np.ndarray, challenger: np.ndarray, champion: np.ndarray, rounds: int = 300, seed: int = 0
) -> tuple[float, float, float] | None:
    """Challenger minus champion ROC-AUC with a 95% paired bootstrap interval; None with one class."""
    y = np.asarray(y)
    if not 0 < y.sum() < len(y):
        return None
    point = float(roc_auc_score(y, challenger) - roc_auc_score(y, champion))
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(rounds):
        index = rng.integers(0, len(y), len(y))
        if 0 < y[index].sum() < len(index):
            draws.append(roc_auc_score(y[index], challenger[index]) - roc_auc_score(y[index], champion[index]))
    low, high = np.quantile(draws, [0.025, 0.975])
    return point, float(low), float(high)


def rank_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two scorings of the same rows (ties share their mean rank)."""
    if len(a) < 2:
        return float("nan")
    return float(pd.Series(a).rank().corr(pd.Series(b).rank()))


def top_k_overlap(a: np.ndarray, b: np.ndarray, fraction: float) -> float:
    """Share of the top ``fraction`` of rows by ``a`` that are also in the top by ``b`` (who gets called first)."""
    if len(a) == 0:
        return float("nan")
    k = max(1, round(fraction * len(a)))
    top_a, top_b = np.argsort(-a, kind="stable")[:k], np.argsort(-b, kind="stable")[:k]
    return len(np.intersect1d(top_a, top_b)) / k


def failures(log: pd.DataFrame, version: str, reported: int) -> int:
    """Rows ``version`` failed on: the log's count ("vN: ..." errors) or the service's ``reported`` one, whichever is larger.

    The service's counter (from ``/metrics``) covers records the log had to drop, so
    dropped records cannot hide failures.
    """
    if "error" not in log:
        return reported
    logged = int(log["error"].dropna().astype(str).str.contains(f"v{version}:", regex=False).sum())
    return max(logged, reported)


def p99_of(latency_ms: pd.Series) -> float:
    return float(np.percentile(latency_ms, 99)) if len(latency_ms) else float("nan")


class Verdict:
    """What the health checks share (mixed into their dataclasses): healthy when ``problems`` is empty."""

    problems: list[str]

    @property
    def healthy(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, object]:
        return asdict(cast(Any, self))


@dataclass(frozen=True)
class ShadowReport:
    champion: str
    challenger: str
    samples: int
    errors: int
    agreement: float  # share of rows on the same side of 0.5
    mean_score_champion: float
    mean_score_challenger: float
    score_psi: float
    latency_p99_ms_champion: float
    latency_p99_ms_challenger: float
    labelled: int = 0
    auc_difference: tuple[float, float, float] | None = None  # point, 95% low, 95% high
    problems: list[str] = field(default_factory=list)
    rank_agreement: float = float("nan")  # Spearman
    top_k_fraction: float = 0.1
    top_k_overlap: float = float("nan")

    @property
    def passed(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def to_markdown(self, plot_link: str | None = None) -> str:
        auc = "no labels yet"
        if self.auc_difference is not None:
            point, low, high = self.auc_difference
            auc = f"{point:+.4f} (95% bootstrap interval {low:+.4f} to {high:+.4f}, {self.labelled} labelled rows)"
        verdict = "ready for approval" if self.passed else "NOT ready: " + "; ".join(self.problems)
        rows = [
            ("live rows scored by both", f"{self.samples}"),
            ("challenger scoring errors", f"{self.errors}"),
            ("rank agreement (Spearman)", f"{self.rank_agreement:.3f}"),
            (f"top {self.top_k_fraction:.0%} overlap (same rows ranked first)", f"{self.top_k_overlap:.1%}"),
            ("agreement (same side of 0.5)", f"{self.agreement:.1%}"),
            ("mean score champion → challenger", f"{self.mean_score_champion:.4f} → {self.mean_score_challenger:.4f}"),
            ("score PSI (challenger vs champion)", f"{self.score_psi:.4f}"),
            (
                "p99 latency per row, champion → challenger",
                f"{self.latency_p99_ms_champion:.3f} ms → {self.latency_p99_ms_challenger:.3f} ms",
            ),
            ("ROC-AUC difference", auc),
        ]
        table = "\n".join(f"| {k} | {v} |" for k, v in rows)
        plot = f"\n[Score distributions of both versions]({plot_link})\n" if plot_link else ""
        return (
            f"## Shadow comparison: v{self.challenger} (challenger) vs v{self.champion} (champion)\n\n"
            f"| measure | value |\n|---|---|\n{table}\n{plot}\n**{verdict}**\n"
        )


def shadow_report(
    log: pd.DataFrame,
    champion: str,
    challenger: str,
    labels: pd.Series,
    latency_ms: tuple[np.ndarray, np.ndarray],
    cfg: PromotionSettings,
    top_k_fraction: float = 0.1,
) -> ShadowReport:
    """Summarise the shadow window: ``log`` holds its prediction-log rows, ``labels`` maps entity → label."""
    mine = log[log["shadow_version"].astype(str) == challenger]
    errors = int(mine["error"].notna().sum()) if "error" in mine else 0
    both = mine[mine["shadow_score"].notna()]
    old, new = both["score"].to_numpy(float), both["shadow_score"].to_numpy(float)
    problems = []
    if len(both) < cfg.min_shadow_samples:
        problems.append(f"only {len(both)} live rows were scored in shadow, the policy needs {cfg.min_shadow_samples}")
    if len(mine) and errors / len(mine) > cfg.max_error_rate:
        problems.append(f"challenger failed on {errors} of {len(mine)} rows (bound {cfg.max_error_rate:.2%})")
    known = both[both["entity"].isin(labels.index)] if len(labels) else both.iloc[0:0]
    auc = None
    if len(known):
        y = labels.loc[known["entity"]].to_numpy(int)
        auc = bootstrap_auc_difference(y, known["shadow_score"].to_numpy(float), known["score"].to_numpy(float))
    p99 = [float(np.percentile(v, 99)) if len(v) else float("nan") for v in latency_ms]
    return ShadowReport(
        champion=champion,
        challenger=challenger,
        samples=len(both),
        errors=errors,
        agreement=float(np.mean((old >= 0.5) == (new >= 0.5))) if len(both) else float("nan"),
        mean_score_champion=float(old.mean()) if len(both) else float("nan"),
        mean_score_challenger=float(new.mean()) if len(both) else float("nan"),
        score_psi=psi(old, new),
        latency_p99_ms_champion=p99[0],
        latency_p99_ms_challenger=p99[1],
        labelled=len(known),
        auc_difference=auc,
        problems=problems,
        rank_agreement=rank_agreement(old, new),
        top_k_fraction=top_k_fraction,
        top_k_overlap=top_k_overlap(old, new, top_k_fraction),
    )


@dataclass(frozen=True)
class Health(Verdict):
    """One canary step's check."""

    percent: int
    challenger_rows: int
    champion_rows: int
    errors: int
    p99_latency_ms: float
    score_psi: float
    problems: list[str] = field(default_factory=list)


def canary_health(
    log: pd.DataFrame, champion: str, challenger: str, percent: int, cfg: PromotionSettings, reported_errors: int = 0
) -> Health:
    """Judge one canary step from its window of the prediction log.

    ``reported_errors`` is the service's own count of the challenger's failures in
    the step (from ``/metrics``); the larger of it and the log's count is used, so
    records the log had to drop cannot hide failures.
    """
    canary = log[log["route"] == "canary"]
    served = canary[canary["served_version"].astype(str) == challenger]
    baseline = canary[canary["served_version"].astype(str) == champion]
    errors = failures(canary, challenger, reported_errors)
    attempts = len(served) + errors
    p99 = p99_of(served["latency_ms"])
    shift = psi(baseline["score"].to_numpy(float), served["score"].to_numpy(float))
    problems = []
    if attempts and errors / attempts > cfg.max_error_rate:
        problems.append(f"challenger failed on {errors} of {attempts} rows (bound {cfg.max_error_rate:.2%})")
    if attempts < cfg.min_canary_samples:
        problems.append(f"only {attempts} rows were routed to the challenger, the policy needs {cfg.min_canary_samples}")
    if len(served) and p99 > cfg.max_p99_latency_ms:
        problems.append(f"challenger p99 latency {p99:.1f} ms exceeds {cfg.max_p99_latency_ms:.1f} ms")
    if len(served) and len(baseline) and shift > cfg.max_score_psi:
        problems.append(f"challenger scores shifted from the champion's: PSI {shift:.3f} > {cfg.max_score_psi}")
    return Health(percent, len(served), len(baseline), errors, p99, shift, problems)


@dataclass(frozen=True)
class WatchCheck(Verdict):
    """One post-deployment check of the new champion against the previous one."""

    rows: int  # rows the new champion served in the check's window
    shadowed: int  # of those, rows the previous champion also scored
    errors: int
    p99_latency_ms: float
    score_psi: float
    labelled: int = 0
    auc_difference: tuple[float, float, float] | None = None  # new minus previous: point, 95% low, 95% high
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        auc = "no labels yet" if self.auc_difference is None else f"ROC-AUC {self.auc_difference[0]:+.4f}"
        return (
            f"{self.rows} rows, {self.errors} errors, p99 {self.p99_latency_ms:.1f} ms, "
            f"score PSI {self.score_psi:.3f} on {self.shadowed} rows, {auc}"
        )


def watch_check(
    window: pd.DataFrame,
    since_start: pd.DataFrame,
    labels: pd.Series,
    version: str,
    previous: str,
    cfg: WatchSettings,
    reported_errors: int = 0,
) -> WatchCheck:
    """Judge the new champion ``version`` on the check's ``window`` of the prediction log.

    Error rate, p99 latency and the score shift against ``previous`` (scored in
    shadow on the same rows) are judged on the window; the ROC-AUC difference on
    every labelled row since the watch started (``since_start``), once labels exist.
    ``reported_errors`` is the service's own count of the new champion's failures
    in the window; the larger of it and the log's count is used.
    """
    served = window[window["served_version"].astype(str) == version]
    errors = failures(window, version, reported_errors)
    both = served[(served["shadow_version"].astype(str) == previous) & served["shadow_score"].notna()]
    p99 = p99_of(served["latency_ms"])
    shift = psi(both["shadow_score"].to_numpy(float), both["score"].to_numpy(float)) if len(both) else float("nan")
    problems = []
    attempts = len(served) + errors
    if attempts and errors / attempts > cfg.max_error_rate:
        problems.append(f"v{version} failed on {errors} of {attempts} rows (bound {cfg.max_error_rate:.2%})")
    if len(served) and p99 > cfg.max_p99_latency_ms:
        problems.append(f"v{version} p99 latency {p99:.1f} ms exceeds {cfg.max_p99_latency_ms:g} ms")
    if len(both) >= cfg.min_rows and shift > cfg.max_score_psi:
        problems.append(f"v{version} scores shifted from v{previous}'s: PSI {shift:.3f} > {cfg.max_score_psi:g}")
    pairs = since_start[
        (since_start["served_version"].astype(str) == version)
        & (since_start["shadow_version"].astype(str) == previous)
        & since_start["shadow_score"].notna()
    ]
    known = pairs[pairs["entity"].isin(labels.index)] if len(labels) else pairs.iloc[0:0]
    auc = None
    if len(known):
        y = labels.loc[known["entity"]].to_numpy(int)
        auc = bootstrap_auc_difference(y, known["score"].to_numpy(float), known["shadow_score"].to_numpy(float))
    if auc is not None and auc[0] < -cfg.max_auc_drop and auc[2] < 0:
        problems.append(
            f"v{version} ROC-AUC is {-auc[0]:.4f} below v{previous}'s on {len(known)} labelled rows "
            f"(95% interval {auc[1]:+.4f} to {auc[2]:+.4f}; allowed drop {cfg.max_auc_drop:g})"
        )
    return WatchCheck(len(served), len(both), errors, p99, shift, len(known), auc, problems)
