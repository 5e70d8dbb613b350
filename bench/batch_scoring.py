"""Batch scoring throughput: Slipway's score flow on a 2-worker Dask cluster vs pyfunc.predict vs the raw booster.

Builds a scratch deployment (the sample's champion, XGBoost), writes ``--rows`` rows
as Parquet parts, then in one run measures:

- the ``score`` flow (``slipway run score source=...``) against a separately started
  ``dask scheduler`` and two ``dask worker`` processes (one thread each, ``--memory-limit``
  each): Parquet in, validated, scored, Parquet out, batch log written;
- ``mlflow.pyfunc`` ``predict`` on a pandas frame of the same rows, in one process;
- the floor: the champion's booster ``inplace_predict`` on a ready float matrix, two threads.

It prints rows/s, the ratios, each worker's peak RSS and the input's size in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import yaml

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_source(gold: pd.DataFrame, rows: int, folder: Path, parts: int) -> int:
    base = gold.drop(columns=["created_at"])
    copies = -(-rows // len(base))
    folder.mkdir(parents=True)
    written, size = 0, -(-rows // parts)
    frame = pd.concat([base.assign(lead_id=base["lead_id"] + f"-{c}") for c in range(copies)], ignore_index=True).head(rows)
    for i in range(parts):
        part = frame.iloc[i * size : (i + 1) * size]
        part.to_parquet(folder / f"part-{i:03d}.parquet", index=False, row_group_size=125_000)
        written += len(part)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--parts", type=int, default=16)
    parser.add_argument("--memory-limit", default="1GiB", help="per dask worker")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as stack:
        root = Path(scratch)
        home = root / "home"
        env = {**os.environ, "SLIPWAY_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"}
        os.environ.update({k: env[k] for k in ("SLIPWAY_HOME", "MLFLOW_TRACKING_URI")})
        from models.sample import build_sample_deployment
        from slipway.paths import prepare_environment
        from slipway.processes import free_port, port_is_free, running_server
        from slipway.settings import load_settings

        prepare_environment()
        raw = yaml.safe_load((REPO / "params.yaml").read_text())
        raw["data"]["source"] = str(root / "leads.csv")
        raw["generate"].update({"rows": 3000, "faults": {}})
        params = root / "params.yaml"
        params.write_text(yaml.safe_dump(raw))
        build_sample_deployment(load_settings(params))
        gold = pd.read_parquet(home / "lake" / "gold" / "features.parquet")
        rows = write_source(gold, args.rows, root / "source", args.parts)
        frame = pd.concat([pd.read_parquet(p) for p in sorted((root / "source").glob("*.parquet"))], ignore_index=True)
        in_memory_mib = frame.memory_usage(deep=True).sum() / 2**20

        port = free_port()
        address = f"tcp://127.0.0.1:{port}"
        scheduler = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
        stack.enter_context(running_server(scheduler, lambda: not port_is_free(port), root / "scheduler.log", env=env))
        from distributed import Client

        for i in range(2):
            worker = [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--memory-limit", args.memory_limit]
            worker += ["--no-dashboard", "--name", f"w{i}"]
            stack.enter_context(running_server(worker, lambda: True, root / f"worker-{i}.log", env=env))
        client = stack.enter_context(Client(address, timeout="30s"))
        client.wait_for_workers(2, timeout=120)

        started = time.perf_counter()
        command = [str(BIN / "slipway"), "run", "score", "--params", str(params), f"source={root / 'source'}"]
        done = subprocess.run(command, env={**env, "DASK_SCHEDULER_ADDRESS": address}, capture_output=True, text=True)
        command_s = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
        line = next(x for x in done.stdout.splitlines() if x.startswith("rows_in="))
        manifest = json.loads((Path(line.split(" run=", 1)[1]) / "_SUCCESS").read_text())
        flow_s = (pd.Timestamp(manifest["finished_at"]) - pd.Timestamp(manifest["scored_at"])).total_seconds()
        peaks = client.run(_peak_rss_mib)

        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        model = mlflow.pyfunc.load_model("models:/lead-scoring/1")
        features = frame.drop(columns=["lead_id"])
        started = time.perf_counter()
        expected = np.asarray(model.predict(features), dtype=float)
        pyfunc_s = time.perf_counter() - started

        inner = model.unwrap_python_model()
        from models.fast_scorer import FastScorer

        scorer = FastScorer(inner.pipeline, inner.data)
        matrix = scorer.frame_matrix(features)
        booster = inner.pipeline.named_steps["model"].get_booster()
        booster.set_param({"nthread": 2})
        started = time.perf_counter()
        floor = booster.inplace_predict(matrix)
        floor_s = time.perf_counter() - started

        out = pd.read_parquet(Path(line.split(" run=", 1)[1]))
        by_entity = pd.Series(expected, index=frame["lead_id"])
        diff = float(np.abs(out["score"].to_numpy() - by_entity.loc[out["entity"]].to_numpy()).max())
        assert manifest["rows_in"] == rows == manifest["rows_scored"] + manifest["rows_rejected"]

    def rate(seconds: float) -> float:
        return rows / seconds

    print(f"{rows} rows in {args.parts} Parquet parts ({in_memory_mib:.0f} MiB in memory as pandas), 2 dask workers")
    print(
        f"with --memory-limit {args.memory_limit} each; max |score - pyfunc| = {diff:.2e}; floor mean {float(np.mean(floor)):.4f}"
    )
    print("| path | seconds | rows/s |\n|---|---|---|")
    print(
        f"| slipway score flow, inside the flow (read, validate, score, write, batch log) | {flow_s:.1f} | {rate(flow_s):,.0f} |"
    )
    print(f"| slipway run score, whole command (with Prefect start-up) | {command_s:.1f} | {rate(command_s):,.0f} |")
    print(f"| mlflow.pyfunc predict, one process | {pyfunc_s:.1f} | {rate(pyfunc_s):,.0f} |")
    print(f"| booster inplace_predict on a ready matrix, 2 threads | {floor_s:.2f} | {rate(floor_s):,.0f} |")
    print(f"ratios: flow / floor = {floor_s / flow_s:.2f}x, flow / pyfunc = {pyfunc_s / flow_s:.1f}x")
    print("peak RSS per worker (MiB): " + ", ".join(f"{v:.0f}" for v in peaks.values()))


if __name__ == "__main__":
    main()
