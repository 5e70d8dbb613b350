"""Scoring throughput and latency, side by side: Slipway's BentoML service, ``mlflow models serve``, a floor.

Builds a scratch deployment (two XGBoost versions, Feast online store on SQLite and
on the machine's Redis), starts the servers on loopback, and drives each with ``wrk``
(Debian package ``wrk``) at the same concurrency: single-row and 100-row batches,
the service with and without shadow scoring, and entity lookups through Feast on
both stores. At one connection it also measures what an entity lookup adds to a
request's p50. Prints one table and the ratios.

Usage: ``uv run python -m bench.serving [--seconds 6] [--rounds 5] [--connections 8] [--redis 127.0.0.1:6379,db=7]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
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
import psutil
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


def _lua(body: dict[str, Any]) -> str:
    return "'" + json.dumps(body).replace("\\", "\\\\").replace("'", "\\'") + "'"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a server process and its children (BentoML's workers)."""
    process = psutil.Process(pid)
    return sum(sum(p.cpu_times()[:2]) for p in [process, *process.children(recursive=True)])


def load(url: str, body: Any, seconds: int, connections: int, workdir: Path, pid: int | None = None) -> dict[str, float]:
    """One wrk run (a list of bodies: each request takes the next); requests/s, p50/p99 latency in ms.

    With the server's ``pid``, also the server's CPU time per request (``cpu_us``):
    what one request costs the server, whatever else the machine is doing meanwhile.
    """
    script = workdir / "post.lua"
    header = "wrk.method = 'POST'\nwrk.headers['Content-Type'] = 'application/json'\n"
    if isinstance(body, list):
        bodies = ", ".join(_lua(b) for b in body)
        script.write_text(
            f"{header}bodies = {{{bodies}}}\ni = 0\n"
            "request = function()\n  i = i % #bodies + 1\n  return wrk.format(nil, nil, nil, bodies[i])\nend\n"
        )
    else:
        script.write_text(f"{header}wrk.body = {_lua(body)}\n")
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    before = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    spent = cpu_seconds(pid) - before if pid else float("nan")
    if "50%" not in out:
        raise RuntimeError(f"{url}: wrk measured nothing:\n{out}")
    if "Non-2xx" in out:
        raise RuntimeError(f"{url} answered errors under load:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _seconds(re.search(r"^\s*50%\s+(\S+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    p99 = _seconds(re.search(r"^\s*99%\s+(\S+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return {"rps": rps, "p50_ms": p50 * 1000, "p99_ms": p99 * 1000, "cpu_us": spent / done * 1e6}


@dataclass(frozen=True)
class Scratch:
    """A throw-away deployment: params, SLIPWAY_HOME, registry with two versions, a materialized online store."""

    work: Path
    env: dict[str, str]
    name: str
    rows: list[dict[str, Any]]  # 100 rows of raw features
    entity: str  # an entity id in the online store
    entities: list[str]  # held-out entity ids, all in the online store

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
    entities = [str(e) for e in test[settings.data.entity].drop_duplicates().head(500)]
    return Scratch(work, env, settings.registry.model_name, rows, entities[0], entities)


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
    parser.add_argument("--seconds", type=int, default=6, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of the compared scenarios, each in turn")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--redis", default="127.0.0.1:6379,db=7", help="Redis for the online-store variant (emptied)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench.serving needs wrk: apt-get install wrk")
    scratch = scratch_deployment()
    work, rows = scratch.work, scratch.rows
    redis_env = redis_profile(scratch, args.redis)
    ports = {k: free_port() for k in ("mlflow", "floor", "direct")}
    mlflow_url, floor = f"http://127.0.0.1:{ports['mlflow']}", f"http://127.0.0.1:{ports['floor']}"
    direct = f"http://127.0.0.1:{ports['direct']}"
    mlflow_cmd = [str(BIN / "mlflow"), "models", "serve", "-m", f"models:/{scratch.name}/1", "--env-manager", "local"]
    mlflow_cmd += ["-p", str(ports["mlflow"]), "-h", "127.0.0.1"]
    floor_cmd = [str(BIN / "uvicorn"), "bench.floor_app:app", "--port", str(ports["floor"]), "--lifespan", "off"]
    floor_cmd += ["--log-level", "warning"]
    floor_env = {**scratch.env, "FLOOR_MODEL_URI": f"models:/{scratch.name}/1"}
    direct_cmd = [*floor_cmd[:3], str(ports["direct"]), *floor_cmd[4:]]
    results: dict[str, dict[str, float]] = {}
    rounds: list[dict[str, float]] = []  # the compared scenarios' req/s, round by round

    def run(label: str, url: str, body: Any, connections: int = args.connections, pid: int | None = None) -> None:
        results[label] = load(url, body, args.seconds, connections, work, pid)

    with ExitStack() as stack:
        bento, bento_pid = stack.enter_context(slipway_server(scratch, "bento"))
        on_redis, redis_pid = stack.enter_context(slipway_server(scratch, "bento-redis", redis_env))
        stack.enter_context(running_server(mlflow_cmd, answers(f"{mlflow_url}/ping"), work / "mlflow.log", env=scratch.env))
        floor_pid = stack.enter_context(
            running_server(floor_cmd, _floor_answers(floor), work / "floor.log", env=floor_env, cwd=REPO)
        ).pid
        direct_env = {**floor_env, "FLOOR_PREDICT": "direct"}
        direct_pid = stack.enter_context(
            running_server(direct_cmd, _floor_answers(direct), work / "direct.log", env=direct_env, cwd=REPO)
        ).pid
        lookups = [{"entity_ids": [e]} for e in scratch.entities]  # a different lead each request
        compared = {  # the goals' pairs, run in rounds so the machine's drifting speed hits both sides alike
            "slipway 1 row": (f"{bento}/predict", {"rows": rows[:1]}, bento_pid),
            "floor 1 row": (floor, {"rows": rows[:1]}, floor_pid),
            "floor, direct C call, 1 row": (direct, {"rows": rows[:1]}, direct_pid),
            "slipway entity, SQLite": (f"{bento}/predict_entities", lookups, bento_pid),
            "slipway entity, Redis": (f"{on_redis}/predict_entities", lookups, redis_pid),
            "slipway 1 row, Redis server": (f"{on_redis}/predict", {"rows": rows[:1]}, redis_pid),
        }
        for turn in range(args.rounds):
            order = list(compared)[turn % len(compared) :] + list(compared)[: turn % len(compared)]
            for label in order:
                url, body, pid = compared[label]
                run(label, url, body, pid=pid)
            rounds.append({label: results[label]["rps"] for label in compared})
            rounds[-1].update({f"cpu {label}": results[label]["cpu_us"] for label in compared})
        for label in compared:  # the table shows each scenario's median round
            results[label]["rps"] = statistics.median(r[label] for r in rounds)
            results[label]["cpu_us"] = statistics.median(r[f"cpu {label}"] for r in rounds)
        for size, batch in (("1 row", rows[:1]), ("100 rows", rows)):
            run(f"mlflow {size}", f"{mlflow_url}/invocations", {"dataframe_records": batch})
        run("slipway 100 rows", f"{bento}/predict", {"rows": rows})
        run("floor 100 rows", floor, {"rows": rows})
        for attempt in ("a", "b"):  # alternate so drift in machine load hits both sides
            scratch.route(Routing(Mode.SHADOW))
            run(f"slipway 1 row, shadow {attempt}", f"{bento}/predict", {"rows": rows[:1]})
            scratch.route(Routing())
            run(f"slipway 1 row, champion {attempt}", f"{bento}/predict", {"rows": rows[:1]})
        for store, url in (("SQLite", bento), ("Redis", on_redis)):
            run(f"1 conn: entity, {store}", f"{url}/predict_entities", lookups, 1)
            run(f"1 conn: 1 row, {store} server", f"{url}/predict", {"rows": rows[:1]}, 1)
    report(results, rounds, args.connections)


def _floor_answers(url: str) -> Callable[[], bool]:
    """The floor has no probe route: a scored POST means it is up."""

    def probe() -> bool:
        try:
            return httpx.post(url, json={"rows": []}, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return probe


def report(results: dict[str, dict[str, float]], rounds: list[dict[str, float]], connections: int) -> None:
    print(f"\n{'scenario':<32} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/req':>11}   ({connections} connections)")
    for scenario, r in results.items():
        cpu = f"{r['cpu_us']:>11.0f}" if r["cpu_us"] == r["cpu_us"] else f"{'':>11}"
        print(f"{scenario:<32} {r['rps']:>9.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {cpu}")
    print(f"(first six: req/s and CPU the median of {len(rounds)} rounds, p50/p99 the last round; '1 conn': 1 connection)")
    shadow_p99 = sum(results[f"slipway 1 row, shadow {a}"]["p99_ms"] for a in "ab") / 2
    champion_p99 = sum(results[f"slipway 1 row, champion {a}"]["p99_ms"] for a in "ab") / 2
    pairs = {  # ratios taken within each round (same machine state), then the median and range over rounds
        "slipway / floor, 1 row (goal >= 0.5)": ("slipway 1 row", "floor 1 row"),
        "slipway / floor with the direct C call, 1 row": ("slipway 1 row", "floor, direct C call, 1 row"),
        "entities / predict, SQLite (goal >= 0.8)": ("slipway entity, SQLite", "slipway 1 row"),
        "entities / predict, Redis (goal >= 0.8)": ("slipway entity, Redis", "slipway 1 row, Redis server"),
    }
    print("\nratios: throughput under wrk, and capacity (inverse CPU per request); median of rounds [lowest, highest]")
    for label, (top, bottom) in pairs.items():
        each = sorted(r[top] / r[bottom] for r in rounds)
        capacity = sorted(r[f"cpu {bottom}"] / r[f"cpu {top}"] for r in rounds)
        print(
            f"  {label:<48} {statistics.median(each):6.2f}x  [{each[0]:.2f}, {each[-1]:.2f}]"
            f"   capacity {statistics.median(capacity):5.2f}x  [{capacity[0]:.2f}, {capacity[-1]:.2f}]"
        )
    for size in ("1 row", "100 rows"):
        mlflow = results[f"mlflow {size}"]["rps"]
        print(f"  {f'slipway / mlflow models serve, {size}':<48} {results[f'slipway {size}']['rps'] / mlflow:6.2f}x")
    print(f"  {'shadow p99 / champion-only p99 (means)':<48} {shadow_p99 / champion_p99:6.2f}x")
    for store in ("SQLite", "Redis"):
        added = results[f"1 conn: entity, {store}"]["p50_ms"] - results[f"1 conn: 1 row, {store} server"]["p50_ms"]
        print(f"  {f'lookup adds at p50, {store} (goal <= 1 ms)':<48} {added:6.2f} ms")


if __name__ == "__main__":
    main()
