"""Seeded generator of realistic CRM lead data for demos and tests.

Conversion depends on channel, firmographics and engagement through a logistic
model with interactions and saturation, calibrated to about 12% positives, so a
tuned model has real signal to find. Knobs inject covariate drift (the lead mix
and engagement shift over time), concept drift (what predicts conversion changes)
and data faults; the faulted row positions are returned so tests can check that
validation catches every one.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from slipway.settings import GenerateSettings

CHANNELS = ["organic_search", "paid_search", "referral", "webinar", "trade_show", "cold_outbound", "partner", "social"]
CHANNEL_LIFT = np.array([0.2, 0.0, 0.9, 0.5, 0.4, -0.9, 0.6, -0.4])
CHANNEL_MIX = np.array([0.22, 0.18, 0.08, 0.1, 0.06, 0.2, 0.06, 0.1])
INDUSTRIES = ["software", "finance", "healthcare", "retail", "manufacturing", "education", "government", "logistics"]
INDUSTRY_LIFT = np.array([0.5, 0.3, 0.1, -0.2, 0.0, -0.4, -0.6, 0.1])
SIZES = ["1-10", "11-50", "51-200", "201-1000", "1000+"]
SIZE_LIFT = np.array([-0.6, -0.1, 0.3, 0.4, 0.1])
REGIONS = ["north_america", "emea", "apac", "latam"]
REGION_LIFT = np.array([0.2, 0.1, -0.1, -0.3])

LEAD_NUMERIC = [
    "page_views",
    "email_opens",
    "email_clicks",
    "calls",
    "meetings",
    "form_fills",
    "days_since_first_contact",
    "response_time_hours",
]
LEAD_CATEGORICAL = ["lead_source", "industry", "company_size", "region"]
POSITIVE_RATE = 0.12


@dataclass
class GeneratedData:
    """A generated batch and the row positions of each injected fault."""

    frame: pd.DataFrame
    faults: dict[str, list[int]] = field(default_factory=dict)

    @property
    def faulty_rows(self) -> set[int]:
        return {row for rows in self.faults.values() for row in rows}


def _timestamps(rng: np.random.Generator, cfg: GenerateSettings, n: int) -> pd.Series:
    start = pd.Timestamp(datetime.combine(cfg.start, datetime.min.time(), tzinfo=UTC))
    end = start + pd.DateOffset(months=cfg.months)
    span = (end - start).total_seconds()
    offsets = np.sort(rng.uniform(0, span, n))
    return pd.Series(start + pd.to_timedelta(offsets, unit="s")).dt.floor("s")


def _choice(rng: np.random.Generator, n: int, mix: np.ndarray, shift: np.ndarray | None = None) -> np.ndarray:
    """Categorical draws whose mix moves toward ``shift`` row by row (covariate drift)."""
    if shift is None:
        return rng.choice(len(mix), size=n, p=mix)
    u = rng.uniform(size=n)
    codes = np.empty(n, dtype=int)
    for i in range(n):
        p = (1 - shift[i]) * mix + shift[i] * mix[::-1]
        codes[i] = int(np.searchsorted(np.cumsum(p), u[i] * p.sum()))
    return np.minimum(codes, len(mix) - 1)


def _calibrate_intercept(logits: np.ndarray, target: float) -> float:
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if (1 / (1 + np.exp(-(logits + mid)))).mean() > target:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


def generate_leads(cfg: GenerateSettings) -> GeneratedData:
    """Generate ``cfg.rows`` leads over ``cfg.months`` months from ``cfg.start``."""
    rng = np.random.default_rng(cfg.seed)
    n = cfg.rows
    created = _timestamps(rng, cfg, n)
    progress = np.linspace(0, 1, n)  # rows are time-ordered: drift grows with time
    drift = cfg.covariate_drift * progress

    channel = _choice(rng, n, CHANNEL_MIX, drift if cfg.covariate_drift else None)
    industry = rng.choice(len(INDUSTRIES), size=n)
    size = rng.choice(len(SIZES), size=n, p=[0.3, 0.3, 0.2, 0.12, 0.08])
    region = rng.choice(len(REGIONS), size=n, p=[0.45, 0.3, 0.17, 0.08])

    intent = rng.normal(0, 1, n) + 0.4 * CHANNEL_LIFT[channel]  # latent interest drives engagement
    engagement_scale = 1 - 0.6 * drift
    page_views = rng.poisson(np.exp(1.6 + 0.5 * intent) * engagement_scale)
    email_opens = rng.poisson(np.exp(1.0 + 0.4 * intent) * engagement_scale)
    email_clicks = rng.binomial(email_opens, 1 / (1 + np.exp(-(intent - 1))))
    calls = rng.poisson(np.exp(0.2 + 0.3 * intent + 0.2 * (size >= 2)))
    meetings = rng.poisson(np.exp(-1.2 + 0.6 * intent))
    form_fills = rng.poisson(np.exp(-0.8 + 0.5 * intent))
    days_since = np.round(rng.exponential(30, n) * (1 + drift), 1)
    response_hours = np.round(rng.lognormal(1.5 - 0.2 * intent, 0.9), 2)

    concept = cfg.concept_drift * progress
    logits = (
        CHANNEL_LIFT[channel] * (1 - concept)
        + INDUSTRY_LIFT[industry]
        + SIZE_LIFT[size]
        + REGION_LIFT[region]
        + 0.9 * np.log1p(meetings) * (1 - 2 * concept)
        + 0.35 * np.log1p(page_views)
        + 0.5 * np.log1p(email_clicks)
        + 0.3 * np.log1p(form_fills)
        + 0.25 * np.log1p(calls) * (size >= 2)
        - 0.35 * np.log1p(response_hours)
        - 0.012 * np.minimum(days_since, 120)
        + 1.2 * concept * (channel == CHANNELS.index("cold_outbound"))
    )
    intercept = _calibrate_intercept(logits, POSITIVE_RATE)
    converted = rng.uniform(size=n) < 1 / (1 + np.exp(-(logits + intercept)))

    frame = pd.DataFrame(
        {
            "lead_id": [f"L{cfg.seed:03d}{i:07d}" for i in range(n)],
            "created_at": created.dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lead_source": np.array(CHANNELS)[channel],
            "industry": np.array(INDUSTRIES)[industry],
            "company_size": np.array(SIZES)[size],
            "region": np.array(REGIONS)[region],
            "page_views": page_views,
            "email_opens": email_opens,
            "email_clicks": email_clicks,
            "calls": calls,
            "meetings": meetings,
            "form_fills": form_fills,
            "days_since_first_contact": days_since,
            "response_time_hours": response_hours,
            "converted": np.where(converted, "yes", "no"),
        }
    )
    return inject_faults(frame, cfg, rng)


def inject_faults(frame: pd.DataFrame, cfg: GenerateSettings, rng: np.random.Generator) -> GeneratedData:
    """Corrupt disjoint sets of rows, one fault kind each, and say which rows."""
    faults = cfg.faults
    out = frame.astype(object).copy()
    n = len(out)
    order = rng.permutation(n)
    taken = 0
    injected: dict[str, list[int]] = {}

    def take(share: float) -> np.ndarray:
        nonlocal taken
        k = round(share * n)
        rows = order[taken : taken + k]
        taken += k
        return np.sort(rows)

    numeric = [c for c in LEAD_NUMERIC if c in out.columns]
    if faults.nulls:
        rows = take(faults.nulls)
        cols = rng.choice([*numeric, "industry", "converted"], size=len(rows))
        for row, col in zip(rows, cols, strict=True):
            out.at[row, col] = None
        injected["nulls"] = rows.tolist()
    if faults.out_of_range:
        rows = take(faults.out_of_range)
        for row in rows:
            col = rng.choice(["page_views", "response_time_hours", "email_opens"])
            out.at[row, col] = -abs(float(frame.at[row, col]) or 1.0) - 5  # type: ignore[arg-type]
        injected["out_of_range"] = rows.tolist()
    if faults.wrong_types:
        rows = take(faults.wrong_types)
        for row in rows:
            col = rng.choice(["page_views", "calls", "created_at", "converted"])
            out.at[row, col] = rng.choice(["n/a", "twelve", "unknown", "#REF!"])
        injected["wrong_types"] = rows.tolist()
    if faults.duplicates:
        rows = take(faults.duplicates)
        copies = out.iloc[rows].copy()
        injected["duplicates"] = list(range(n, n + len(copies)))
        out = pd.concat([out, copies], ignore_index=True)
    if faults.broken_schema:
        out = out.drop(columns=["meetings"]).rename(columns={"region": "geo"})
    return GeneratedData(out, injected)


def write_generated(data: GeneratedData, path: str) -> None:
    """Write a generated batch as CSV or Parquet, by the file's extension, to a local path or an ``s3://`` URI."""
    buffer = io.BytesIO()
    if path.endswith(".parquet"):
        data.frame.astype(str).where(data.frame.notna(), None).to_parquet(buffer, index=False)
    else:
        data.frame.to_csv(buffer, index=False)
    if path.startswith("s3://"):
        import boto3  # the standard AWS_* variables, AWS_ENDPOINT_URL for S3-compatible stores

        url = urlparse(path)
        boto3.client("s3").put_object(Bucket=url.netloc, Key=url.path.lstrip("/"), Body=buffer.getvalue())
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(buffer.getvalue())
