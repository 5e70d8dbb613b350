"""The monitor's drift computation on a large window, side by side with Evidently's default report.

Writes a prediction log of N rows × 20 features (14 numeric, 6 categorical; a third
of the numeric columns shifted) as the service writes it: typed flush parts of
``--part-rows`` rows, compacted by the log's own compactor. The log is generated
part by part, so 10 M rows never sit in this process's memory. Then times, in one run:

- slipway: the monitor's path (read the window file by file, PSI on every row,
  Evidently's presets on a ``sample_rows`` sample, the verdict);
- evidently-default: Evidently's DataDriftPreset on the whole window in memory, as
  its docs show (skipped with ``--skip-evidently``, e.g. at 10 M rows).

It prints seconds, the ratio and this process's peak RSS after each step.

Usage: ``uv run python -m bench.monitor [--rows 1000000] [--sample-rows N] [--skip-evidently]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

from models import monitoring
from models.monitoring import SCORE
from slipway.prediction_log import (
    LogScan,
    PredictionLog,
    feature_column,
    feature_frame,
    features_by_name,
    log_schema,
    read_prediction_log,
    write_part,
)
from slipway.settings import DataSettings, MonitorSettings

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


def write_log(rows: int, directory: Path, part_rows: int) -> int:
    """The log as the service writes it: typed flush parts, compacted as they arrive; returns its files."""
    schema, now = log_schema(NUMERIC, CATEGORICAL), datetime.now(UTC)
    log = PredictionLog(directory, NUMERIC, CATEGORICAL, flush_seconds=3600)
    for start in range(0, rows, part_rows):
        part = frame(min(part_rows, rows - start), True, start)
        n = len(part)
        columns = {
            "request_id": pa.array([f"{start + i}-0" for i in range(n)]),
            "time": pa.array(np.full(n, np.datetime64(now.replace(tzinfo=None), "us")), pa.timestamp("us", "UTC")),
            "entity": pa.nulls(n, pa.string()),
            "route": pa.array(["champion"] * n),
            "served_version": pa.array(["1"] * n),
            "score": pa.array(part[SCORE].to_numpy()),
            **{feature_column(c): pa.array(part[c].to_numpy()) for c in [*NUMERIC, *CATEGORICAL]},
        }
        table = pa.table({f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in schema}, schema=schema)
        write_part(directory, table, now)
        log.compact()
    log.close()
    return len(list(directory.glob("date=*/*.parquet")))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sample-rows", type=int, default=MonitorSettings().sample_rows)
    parser.add_argument("--part-rows", type=int, default=10_000, help="rows per flush part")
    parser.add_argument("--skip-evidently", action="store_true", help="time only Slipway's path (for very large windows)")
    args = parser.parse_args()
    reference = frame(100_000, False, 0)
    cfg = MonitorSettings(sample_rows=args.sample_rows)
    with tempfile.TemporaryDirectory() as scratch:
        log_dir = Path(scratch) / "predictions"
        started = time.perf_counter()
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as writer:  # its memory is not ours
            files = writer.submit(write_log, args.rows, log_dir, args.part_rows).result()
        took = time.perf_counter() - started
        print(f"log: {args.rows} rows × {len(DATA.features)} features written in {took:.0f}s, {files} files")
        print(f"peak RSS before reading the log: {peak_rss_mib():.0f} MiB")

        started = time.perf_counter()
        window = monitoring.Window(reference, DATA, pd.Series(dtype=int), args.sample_rows)
        for table in LogScan(log_dir, None, [*map(feature_column, DATA.features), "entity", SCORE]).tables():
            window.add(features_by_name(table))
        read_s = time.perf_counter() - started
        verdict = monitoring.assess(reference, window, None, DATA, cfg, Path(scratch) / "report")
        slipway_s = time.perf_counter() - started
        slipway_rss = peak_rss_mib()
        drifted = ", ".join(sorted(c for c, v in verdict.feature_psi.items() if v > cfg.max_feature_psi))
        print(f"peak RSS after the monitor's path: {slipway_rss:.0f} MiB")

        default_s, default_share = float("nan"), float("nan")
        if not args.skip_evidently:
            log = read_prediction_log(log_dir)
            current = feature_frame(log, DATA.features).assign(**{SCORE: log[SCORE].to_numpy()})
            del log
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
            print(f"peak RSS after Evidently on the whole window in memory: {peak_rss_mib():.0f} MiB")
    slipway_path = f"slipway monitor (read + PSI on every row {read_s:.1f}s, Evidently on {args.sample_rows} rows)"
    print(f"window {args.rows} logged rows × {len(DATA.features)} features, reference 100000 rows")
    print("| path | seconds | drifted share | features with PSI > 0.25 |\n|---|---|---|---|")
    print(f"| {slipway_path} | {slipway_s:.1f} | {verdict.drifted_share:.2f} | {drifted} |")
    if not args.skip_evidently:
        print(f"| Evidently DataDriftPreset on the whole window | {default_s:.1f} | {default_share:.2f} | |")
        print(f"ratio evidently-default / slipway = {default_s / slipway_s:.2f}x; score PSI {verdict.score_psi:.3f}")
    print(f"slipway peak RSS {slipway_rss:.0f} MiB for {args.rows} rows; rows counted {window.rows}")


if __name__ == "__main__":
    main()
