"""The monitor's drift computation on a large window, side by side with Evidently's default report.

Builds a prediction log of N rows × 20 features (14 numeric, 6 categorical; a
third of the numeric columns shifted) as the service writes it (Parquet parts,
features as JSON), and a 100k-row reference. Then times, in one run:

- slipway: read the log, decode the features, PSI on every row, Evidently's
  presets on a ``sample_rows`` sample (what the monitor flow does);
- evidently-default: Evidently's DataDriftPreset on the whole window, as its docs show.

Usage: ``uv run python -m bench.monitor [--rows 1000000] [--sample-rows 50000]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

from models import drift
from models.comparison import psi
from models.monitoring import SCORE, decode, run_evidently
from slipway import lake
from slipway.prediction_log import read_prediction_log
from slipway.settings import DataSettings

NUMERIC = [f"n{i}" for i in range(14)]
CATEGORICAL = [f"c{i}" for i in range(6)]
DATA = DataSettings(source="bench", entity="id", timestamp="t", label="y", numeric=NUMERIC, categorical=CATEGORICAL)


def frame(rows: int, shifted: bool, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    out = pd.DataFrame({c: rng.gamma(2.0, 10.0, rows) * (1.5 if shifted and i % 3 == 0 else 1.0) for i, c in enumerate(NUMERIC)})
    for i, c in enumerate(CATEGORICAL):
        p = np.array([0.5, 0.3, 0.15, 0.05]) if not (shifted and i == 0) else np.array([0.25, 0.25, 0.25, 0.25])
        out[c] = rng.choice(np.array(["a", "b", "c", "d"]), rows, p=p)
    out[SCORE] = rng.beta(2, 8, rows)
    return out


def write_log(current: pd.DataFrame, directory: Path, part_rows: int = 100_000) -> None:
    """The log as the service writes it: one JSON features column, Parquet parts under date=."""
    now = datetime.now(UTC)
    features = current[DATA.features].to_dict("records")
    for start in range(0, len(current), part_rows):
        chunk = range(start, min(start + part_rows, len(current)))
        part = pd.DataFrame(
            {
                "request_id": [str(i) for i in chunk],
                "time": now,
                "entity": None,
                "features": [json.dumps(features[i]) for i in chunk],
                "route": "champion",
                "served_version": "1",
                "score": current[SCORE].to_numpy()[chunk.start : chunk.stop],
                "latency_ms": 1.0,
            }
        )
        lake.write_parquet(part, directory / f"date={now:%Y-%m-%d}" / f"part-{start:09d}.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sample-rows", type=int, default=50_000)
    args = parser.parse_args()
    reference, current = frame(100_000, False, 0), frame(args.rows, True, 1)
    with tempfile.TemporaryDirectory() as scratch:
        log_dir = Path(scratch) / "predictions"
        write_log(current, log_dir)
        started = time.perf_counter()
        decoded = decode(read_prediction_log(log_dir), DATA)
        read_s = time.perf_counter() - started
        psis = drift.feature_psi(reference, decoded, DATA)
        score_psi = psi(reference[SCORE].to_numpy(), decoded[SCORE].to_numpy(), drift.FEATURE_BINS)
        psi_s = time.perf_counter() - started - read_s
        share = run_evidently(reference, decoded, DATA, args.sample_rows, Path(scratch) / "report")
        slipway_s = time.perf_counter() - started

        definition = DataDefinition(numerical_columns=[*NUMERIC, SCORE], categorical_columns=CATEGORICAL)
        started = time.perf_counter()
        snapshot = Report([DataDriftPreset()]).run(
            current_data=Dataset.from_pandas(current, data_definition=definition),
            reference_data=Dataset.from_pandas(reference, data_definition=definition),
        )
        snapshot.save_html(str(Path(scratch) / "default.html"))
        default_s = time.perf_counter() - started
    default_share = next(
        m["value"]["share"] for m in snapshot.dict()["metrics"] if m["metric_name"].startswith("DriftedColumnsCount")
    )
    drifted = ", ".join(sorted(c for c, v in psis.items() if v > 0.25))
    slipway_path = f"slipway monitor (read + decode {read_s:.1f}s, PSI {psi_s:.1f}s, Evidently on {args.sample_rows} rows)"
    print(f"window {args.rows} logged rows × {len(DATA.features)} features, reference 100000 rows")
    print("| path | seconds | drifted share | features with PSI > 0.25 |\n|---|---|---|---|")
    print(f"| {slipway_path} | {slipway_s:.1f} | {share:.2f} | {drifted} |")
    print(f"| Evidently DataDriftPreset on the whole window | {default_s:.1f} | {default_share:.2f} | |")
    print(f"ratio evidently-default / slipway = {default_s / slipway_s:.2f}x; score PSI {score_psi:.3f}")


if __name__ == "__main__":
    main()
