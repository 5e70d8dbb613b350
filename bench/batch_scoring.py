"""Batch scoring throughput: Slipway's score flow on a 2-worker Dask cluster vs pyfunc.predict vs the raw booster.

Builds a scratch deployment (the sample's champion on generated leads, or with
``--params`` a real dataset taken through ``slipway run pipeline`` and made champion),
writes ``--rows`` rows (its gold rows repeated under new ids) as Parquet parts, then in
one run measures:

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
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import yaml

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_source(gold: pd.DataFrame, entity: str, timestamp: str, rows: int, folder: Path, parts: int) -> int:
    base = gold.drop(columns=[timestamp])
    copies = -(-rows // len(base))
    folder.mkdir(parents=True)
    written, size = 0, -(-rows // parts)
    frame = pd.concat([base.assign(**{entity: base[entity] + f"-{c}"}) for c in range(copies)], ignore_index=True).head(rows)
    for i in range(parts):
        part = frame.iloc[i * size : (i + 1) * size]
        part.to_parquet(folder / f"part-{i:03d}.parquet", index=False, row_group_size=125_000)
        written += len(part)
    return written


def prepare(params: Path | None, root: Path, env: dict[str, str]) -> Path:
    """The sample deployment, or the given dataset through the pipeline with its challenger made champion."""
    from mlflow import MlflowClient

    from models.sample import build_sample_deployment
    from slipway.settings import load_settings

    if params is None:
        raw = yaml.safe_load((REPO / "params.yaml").read_text())
        raw["data"]["source"] = str(root / "leads.csv")
        raw["generate"].update({"rows": 3000, "faults": {}})
        sample = root / "params.yaml"
        sample.write_text(yaml.safe_dump(raw))
        build_sample_deployment(load_settings(sample))
        return sample
    done = subprocess.run(
        [str(BIN / "slipway"), "run", "pipeline", "--params", str(params)], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
    print(done.stdout.strip())
    name = load_settings(params).registry.model_name
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    version = client.get_registered_model(name).aliases["challenger"]
    client.set_registered_model_alias(name, "champion", version)  # an operator's switch, for the measurement only
    return params


def io_alone(source: Path, out: Path, entity: str) -> float:
    """Parquet in and out with nothing between: pyarrow reads every part (its threads) and writes entity + score."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    started = time.perf_counter()
    table = pq.read_table(source)
    pq.write_table(pa.table({"entity": table[entity], "score": np.zeros(table.num_rows)}), out)
    return time.perf_counter() - started


def score_run(params: Path, source: Path, env: dict[str, str]) -> tuple[float, float, str, dict[str, Any]]:
    """One ``slipway run score``: the whole command's seconds, the flow's own, its result line and manifest."""
    started = time.perf_counter()
    command = [str(BIN / "slipway"), "run", "score", "--params", str(params), f"source={source}"]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    command_s = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
    print("\n".join(x for x in (done.stdout + done.stderr).splitlines() if "score:" in x or "Finished in state" in x))
    line = next(x for x in done.stdout.splitlines() if x.startswith("rows_in="))
    manifest = json.loads((Path(line.split(" run=", 1)[1]) / "_SUCCESS").read_text())
    flow_s = (pd.Timestamp(manifest["finished_at"]) - pd.Timestamp(manifest["scored_at"])).total_seconds()
    return command_s, flow_s, line, manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--parts", type=int, default=16)
    parser.add_argument("--memory-limit", default="1GiB", help="per dask worker")
    parser.add_argument("--params", type=Path, help="a real dataset's params file (default: the generated sample)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as stack:
        root = Path(scratch)
        home = root / "home"
        env = {**os.environ, "SLIPWAY_HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"}
        os.environ.update({k: env[k] for k in ("SLIPWAY_HOME", "MLFLOW_TRACKING_URI")})
        from slipway.paths import prepare_environment
        from slipway.processes import free_port, port_is_free, running_server
        from slipway.settings import load_settings

        prepare_environment()
        params = prepare(args.params, root, env)
        settings = load_settings(params)
        data, name = settings.data, settings.registry.model_name
        gold = pd.read_parquet(home / "lake" / "gold" / "features.parquet")
        rows = write_source(gold, data.entity, data.timestamp, args.rows, root / "source", args.parts)
        frame = pd.concat([pd.read_parquet(p) for p in sorted((root / "source").glob("*.parquet"))], ignore_index=True)
        in_memory_mib = frame.memory_usage(deep=True).sum() / 2**20

        port = free_port()
        address = f"tcp://127.0.0.1:{port}"
        scheduler = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
        scheduler += ["--preload", "models.batch"]  # as infra/ starts it: the graph's code is imported before a run
        stack.enter_context(running_server(scheduler, lambda: not port_is_free(port), root / "scheduler.log", env=env))
        from distributed import Client

        for i in range(2):
            worker = [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--memory-limit", args.memory_limit]
            worker += ["--no-dashboard", "--name", f"w{i}", "--preload", "models.batch"]
            stack.enter_context(running_server(worker, lambda: True, root / f"worker-{i}.log", env=env))
        client = stack.enter_context(Client(address, timeout="30s"))
        client.wait_for_workers(2, timeout=120)

        runs = [score_run(params, root / "source", {**env, "DASK_SCHEDULER_ADDRESS": address}) for _ in range(2)]
        (command_s, flow_s, line, manifest), (warm_command_s, warm_flow_s, _, _) = runs
        peaks = client.run(_peak_rss_mib)

        mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
        features = frame.drop(columns=[data.entity])
        as_signed = features.astype(dict.fromkeys(data.numeric, "float64"))  # the signature says double
        started = time.perf_counter()
        expected = np.asarray(model.predict(as_signed), dtype=float)
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

        io_s = io_alone(root / "source", root / "io-alone.parquet", data.entity)
        out = pd.read_parquet(Path(line.split(" run=", 1)[1]))
        by_entity = pd.Series(expected, index=frame[data.entity])
        diff = float(np.abs(out["score"].to_numpy() - by_entity.loc[out["entity"]].to_numpy()).max())
        assert manifest["rows_in"] == rows == manifest["rows_scored"] + manifest["rows_rejected"]

    print(f"dataset: {args.params or 'generated leads (sample deployment)'}; model {name}")

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
    print(f"| the same flow again on the running workers, inside the flow | {warm_flow_s:.1f} | {rate(warm_flow_s):,.0f} |")
    print(f"| the same again, whole command | {warm_command_s:.1f} | {rate(warm_command_s):,.0f} |")
    print(f"| mlflow.pyfunc predict, one process | {pyfunc_s:.1f} | {rate(pyfunc_s):,.0f} |")
    print(f"| booster inplace_predict on a ready matrix, 2 threads | {floor_s:.2f} | {rate(floor_s):,.0f} |")
    print(f"| Parquet in and out alone (pyarrow, no validation, no model) | {io_s:.2f} | {rate(io_s):,.0f} |")
    print(f"ratios, first run: flow / floor = {floor_s / flow_s:.2f}x, flow / pyfunc = {pyfunc_s / flow_s:.1f}x")
    print(f"ratios, running workers: flow / floor = {floor_s / warm_flow_s:.2f}x, flow / pyfunc = {pyfunc_s / warm_flow_s:.1f}x")
    print(f"Parquet in and out alone / floor = {floor_s / io_s:.2f}x (the most any Parquet-to-Parquet path could reach)")
    print("peak RSS per worker (MiB): " + ", ".join(f"{v:.0f}" for v in peaks.values()))


if __name__ == "__main__":
    main()
