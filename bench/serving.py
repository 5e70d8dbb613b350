"""Scoring throughput and latency, side by side: Slipway's BentoML service, ``mlflow models serve``, a floor.

Builds a scratch deployment (two XGBoost versions, Feast online store on SQLite and
on the machine's Redis), starts the servers on loopback, and drives each with ``wrk``
(Debian package ``wrk``) at the same concurrency: single-row and 100-row batches,
the service with and without shadow scoring, and entity lookups through Feast on
both stores. At one connection it also measures what an entity lookup adds to a
request's p50. Prints one table and the ratios.

Usage: ``uv run python -m bench.serving [--seconds 10] [--connections 8] [--redis 127.0.0.1:6379,db=7]``.
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
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
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
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", value)
    if found is None:
        raise ValueError(f"wrk printed a latency this bench cannot read: {value!r}")
    return float(found.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}[found.group(2)]


def load(url: str, body: dict[str, Any], seconds: int, connections: int, workdir: Path) -> dict[str, float]:
    """One wrk run; returns requests/s and p50/p99 latency in ms."""
    script = workdir / "post.lua"
    payload = json.dumps(body).replace("\\", "\\\\").replace("'", "\\'")
    script.write_text(f"wrk.method = 'POST'\nwrk.headers['Content-Type'] = 'application/json'\nwrk.body = '{payload}'\n")
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    if "50%" not in out:
        raise RuntimeError(f"{url}: wrk measured nothing:\n{out}")
    if "Non-2xx" in out:
        raise RuntimeError(f"{url} answered errors under load:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _seconds(re.search(r"50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _seconds(re.search(r"99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50_ms": p50 * 1000, "p99_ms": p99 * 1000}


@dataclass(frozen=True)
class Scratch:
    """A throw-away deployment: params, SLIPWAY_HOME, registry with two versions, a materialized online store."""

    work: Path
    env: dict[str, str]
    name: str
    rows: list[dict[str, Any]]  # 100 rows of raw features
    entity: str  # an entity id in the online store

    def route(self, routing: Routing) -> None:
        client = MlflowClient()
        for key, value in routing.to_tags().items():
            client.set_registered_model_tag(self.name, key, value)
        time.sleep(3)  # a few polling intervals


def scratch_deployment(prefix: str = "slipway-bench-") -> Scratch:
    work = Path(tempfile.mkdtemp(prefix=prefix))
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
    rows = [{str(k): v for k, v in r.items()} for r in test[settings.data.features].head(100).to_dict("records")]
    return Scratch(work, env, settings.registry.model_name, rows, str(test[settings.data.entity].iloc[0]))


def redis_profile(scratch: Scratch, connection: str) -> dict[str, str]:
    """The same features materialized into Redis (database emptied first); the variables that select it."""
    import redis

    from features import feast_defs
    from slipway.feature_store import open_store
    from slipway.paths import Home
    from slipway.settings import load_settings

    host, _, options = connection.partition(",")
    kwargs = dict(o.split("=", 1) for o in options.split(",") if o)
    redis.Redis(host=host.split(":")[0], port=int(host.split(":")[1]), db=int(kwargs.get("db", 0))).flushdb()
    config = scratch.work / "feature_store_redis.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "project": "slipway",
                "provider": "local",
                "registry": {"path": str(scratch.work / "home" / "feast" / "registry-redis.db")},
                "online_store": {"type": "redis", "connection_string": connection},
                "offline_store": {"type": "file"},
                "entity_key_serialization_version": 3,
            }
        )
    )
    profile = {"FEAST_FS_YAML_FILE_PATH": str(config)}
    os.environ.update(profile)
    try:
        settings = load_settings(scratch.env["SLIPWAY_PARAMS"])
        store = open_store()
        store.apply(feast_defs.build_definitions(settings.data, settings.features, Home.current()).all())
        store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC))
    finally:
        del os.environ["FEAST_FS_YAML_FILE_PATH"]
    return profile


@contextmanager
def slipway_server(scratch: Scratch, name: str, extra_env: dict[str, str] | None = None) -> Iterator[tuple[str, int]]:
    """``bentoml serve`` of the service until the block ends (SIGTERM); yields its URL and process id."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(BIN / "bentoml"), "serve", "bentos.service:Scoring", "--port", str(port)]
    env = {**scratch.env, **(extra_env or {})}
    with running_server(command, answers(f"{url}/readyz"), scratch.work / f"{name}.log", env=env, cwd=REPO) as process:
        yield url, process.pid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--redis", default="127.0.0.1:6379,db=7", help="Redis for the online-store variant (emptied)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench.serving needs wrk: apt-get install wrk")
    scratch = scratch_deployment()
    work, rows, entity = scratch.work, scratch.rows, scratch.entity
    redis_env = redis_profile(scratch, args.redis)
    ports = {k: free_port() for k in ("mlflow", "floor")}
    mlflow_url, floor = f"http://127.0.0.1:{ports['mlflow']}", f"http://127.0.0.1:{ports['floor']}"
    mlflow_cmd = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{scratch.name}/1", "--env-manager", "local"]
    mlflow_cmd += ["-p", str(ports["mlflow"]), "-h", "127.0.0.1"]
    floor_cmd = [str(BIN / "uvicorn"), "bench.floor_app:app", "--port", str(ports["floor"]), "--lifespan", "off"]
    floor_cmd += ["--log-level", "warning"]
    floor_env = {**scratch.env, "FLOOR_MODEL_URI": f"models:/{scratch.name}/1"}
    results: dict[str, dict[str, float]] = {}

    def run(label: str, url: str, body: dict[str, Any], connections: int = args.connections) -> None:
        results[label] = load(url, body, args.seconds, connections, work)

    with ExitStack() as stack:
        bento, _ = stack.enter_context(slipway_server(scratch, "bento"))
        on_redis, _ = stack.enter_context(slipway_server(scratch, "bento-redis", redis_env))
        stack.enter_context(running_server(mlflow_cmd, answers(f"{mlflow_url}/ping"), work / "mlflow.log", env=scratch.env))
        stack.enter_context(running_server(floor_cmd, _floor_answers(floor), work / "floor.log", env=floor_env, cwd=REPO))
        for size, batch in (("1 row", rows[:1]), ("100 rows", rows)):
            run(f"slipway {size}", f"{bento}/predict", {"rows": batch})
            run(f"mlflow {size}", f"{mlflow_url}/invocations", {"dataframe_records": batch})
            run(f"floor {size}", floor, {"rows": batch})
        for attempt in ("a", "b"):  # alternate so drift in machine load hits both sides
            scratch.route(Routing(Mode.SHADOW))
            run(f"slipway 1 row, shadow {attempt}", f"{bento}/predict", {"rows": rows[:1]})
            scratch.route(Routing())
            run(f"slipway 1 row, champion {attempt}", f"{bento}/predict", {"rows": rows[:1]})
        for store, url in (("SQLite", bento), ("Redis", on_redis)):
            run(f"slipway entity, {store}", f"{url}/predict_entities", {"entity_ids": [entity]})
            run(f"slipway 1 row, {store} server", f"{url}/predict", {"rows": rows[:1]})
            run(f"1 conn: entity, {store}", f"{url}/predict_entities", {"entity_ids": [entity]}, 1)
            run(f"1 conn: 1 row, {store} server", f"{url}/predict", {"rows": rows[:1]}, 1)
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
    print(f"\n{'scenario':<32} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}   ({connections} connections unless '1 conn')")
    for scenario, r in results.items():
        print(f"{scenario:<32} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}")
    single = results["slipway 1 row"]
    shadow_p99 = sum(results[f"slipway 1 row, shadow {a}"]["p99_ms"] for a in "ab") / 2
    champion_p99 = sum(results[f"slipway 1 row, champion {a}"]["p99_ms"] for a in "ab") / 2
    ratios = {
        "slipway / mlflow models serve, 1 row": single["rps"] / results["mlflow 1 row"]["rps"],
        "slipway / mlflow models serve, 100 rows": results["slipway 100 rows"]["rps"] / results["mlflow 100 rows"]["rps"],
        "slipway / floor, 1 row (goal >= 0.5)": single["rps"] / results["floor 1 row"]["rps"],
    }
    for store in ("SQLite", "Redis"):
        entity, rows = results[f"slipway entity, {store}"], results[f"slipway 1 row, {store} server"]
        ratios[f"entities / predict, {store} (goal >= 0.8)"] = entity["rps"] / rows["rps"]
    print("\nratios")
    for label, value in ratios.items():
        print(f"  {label:<44} {value:6.2f}x throughput")
    print(f"  {'shadow p99 / champion-only p99 (means)':<44} {shadow_p99 / champion_p99:6.2f}x")
    for store in ("SQLite", "Redis"):
        added = results[f"1 conn: entity, {store}"]["p50_ms"] - results[f"1 conn: 1 row, {store} server"]["p50_ms"]
        print(f"  {f'lookup adds at p50, {store} (goal <= 1 ms)':<44} {added:6.2f} ms")


if __name__ == "__main__":
    main()
