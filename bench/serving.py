"""Scoring throughput and latency, side by side: Slipway's BentoML service, ``mlflow models serve``, a floor.

Builds a scratch deployment (two XGBoost versions, Feast online store), starts
the three servers on loopback, and drives each with ``wrk`` (Debian package
``wrk``) at the same concurrency: single-row and 100-row batches, the service
with and without shadow scoring, and entity lookups through Feast. Prints one
table and the ratios. Usage: ``uv run python -m bench.serving [--seconds 10] [--connections 8]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml
from mlflow import MlflowClient

from models.routing import Mode, Routing
from slipway.processes import answers, free_port, running_server

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _seconds(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def load(url: str, body: dict[str, Any], seconds: int, connections: int, workdir: Path) -> dict[str, float]:
    """One wrk run; returns requests/s and p50/p99 latency in ms."""
    script = workdir / "post.lua"
    payload = json.dumps(body).replace("\\", "\\\\").replace("'", "\\'")
    script.write_text(f"wrk.method = 'POST'\nwrk.headers['Content-Type'] = 'application/json'\nwrk.body = '{payload}'\n")
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"{url} answered errors under load:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _seconds(re.search(r"50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _seconds(re.search(r"99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50_ms": p50 * 1000, "p99_ms": p99 * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench.serving needs wrk: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="slipway-bench-"))
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["source"] = str(work / "leads.csv")
    raw["generate"].update(rows=5000)
    raw["serving"].update(poll_seconds=1, log_queue_size=1_000_000)
    params = work / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    env = {
        **os.environ,
        "SLIPWAY_HOME": str(work / "home"),
        "SLIPWAY_PARAMS": str(params),
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'home' / 'mlflow' / 'mlflow.db'}",
    }
    os.environ.update(env)
    from models.sample import build_sample_deployment
    from slipway.paths import prepare_environment
    from slipway.settings import load_settings

    prepare_environment()
    settings = load_settings(params)
    test = build_sample_deployment(settings)
    name = settings.registry.model_name
    rows = [{str(k): v for k, v in r.items()} for r in test[settings.data.features].head(100).to_dict("records")]
    entity = str(test[settings.data.entity].iloc[0])
    ports = {k: free_port() for k in ("bento", "mlflow", "floor")}
    bento = f"http://127.0.0.1:{ports['bento']}"
    mlflow_url = f"http://127.0.0.1:{ports['mlflow']}"
    floor = f"http://127.0.0.1:{ports['floor']}"
    results: dict[str, dict[str, float]] = {}
    client = MlflowClient()

    def route(routing: Routing) -> None:
        for key, value in routing.to_tags().items():
            client.set_registered_model_tag(name, key, value)
        time.sleep(3)

    bento_cmd = [str(BIN / "bentoml"), "serve", "bentos.service:Scoring", "--port", str(ports["bento"])]
    mlflow_cmd = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{name}/1", "--env-manager", "local"]
    mlflow_cmd += ["-p", str(ports["mlflow"]), "-h", "127.0.0.1"]
    floor_cmd = [
        str(BIN / "uvicorn"),
        "bench.floor_app:app",
        "--port",
        str(ports["floor"]),
        "--lifespan",
        "off",
        "--log-level",
        "warning",
    ]
    floor_env = {**env, "FLOOR_MODEL_URI": f"models:/{name}/1"}
    with (
        running_server(bento_cmd, answers(f"{bento}/readyz"), work / "bento.log", env=env, cwd=REPO),
        running_server(mlflow_cmd, answers(f"{mlflow_url}/ping"), work / "mlflow.log", env=env, cwd=REPO),
        running_server(floor_cmd, _floor_answers(floor), work / "floor.log", env=floor_env, cwd=REPO),
    ):
        for size, batch in (("1 row", rows[:1]), ("100 rows", rows)):
            results[f"slipway {size}"] = load(f"{bento}/predict", {"rows": batch}, args.seconds, args.connections, work)
            results[f"mlflow {size}"] = load(
                f"{mlflow_url}/invocations", {"dataframe_records": batch}, args.seconds, args.connections, work
            )
            results[f"floor {size}"] = load(floor, {"rows": batch}, args.seconds, args.connections, work)
        for attempt in ("a", "b"):  # alternate so drift in machine load hits both sides
            route(Routing(Mode.SHADOW))
            results[f"slipway 1 row, shadow {attempt}"] = load(
                f"{bento}/predict", {"rows": rows[:1]}, args.seconds, args.connections, work
            )
            route(Routing())
            results[f"slipway 1 row, champion {attempt}"] = load(
                f"{bento}/predict", {"rows": rows[:1]}, args.seconds, args.connections, work
            )
        results["slipway entity lookup"] = load(
            f"{bento}/predict_entities", {"entity_ids": [entity]}, args.seconds, args.connections, work
        )
    report(results, args.connections)


def _floor_answers(url: str) -> Callable[[], bool]:
    """The floor has no probe route: a scored POST means it is up."""

    def probe() -> bool:
        try:
            return httpx.post(url, json={"rows": []}, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return probe


def report(results: dict[str, dict[str, float]], connections: int) -> None:
    print(f"\n{'scenario':<26} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}   ({connections} connections, 1 server worker each)")
    for scenario, r in results.items():
        print(f"{scenario:<26} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}")
    single = results["slipway 1 row"]
    shadow_p99 = sum(results[f"slipway 1 row, shadow {a}"]["p99_ms"] for a in "ab") / 2
    champion_p99 = sum(results[f"slipway 1 row, champion {a}"]["p99_ms"] for a in "ab") / 2
    ratios = {
        "slipway / mlflow models serve, 1 row": single["rps"] / results["mlflow 1 row"]["rps"],
        "slipway / mlflow models serve, 100 rows": results["slipway 100 rows"]["rps"] / results["mlflow 100 rows"]["rps"],
        "slipway / floor, 1 row": single["rps"] / results["floor 1 row"]["rps"],
    }
    print("\nratios")
    for label, value in ratios.items():
        print(f"  {label:<40} {value:6.2f}x throughput")
    print(f"  {'shadow p99 / champion-only p99 (means)':<40} {shadow_p99 / champion_p99:6.2f}x")


if __name__ == "__main__":
    main()
