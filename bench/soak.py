"""Soak: the service at half its measured single-row maximum for a long time, with shadow scoring on.

Builds the scratch deployment of ``bench.serving``, starts Slipway's service, turns
shadow on, measures the maximum single-row throughput with ``wrk`` (8 connections,
10 s), then sends single-row requests open-loop at half that rate (each request is
timed from when it was due, so a stall shows as latency, not as fewer requests;
raw HTTP/1.1 on 16 kept-alive connections, so the client is not the bottleneck)
for ``--minutes``. Every minute it prints requests, errors, p50/p99 and the
service's RSS (all its processes). At the end it stops the service with SIGTERM
and checks that the prediction log holds one record per 200 answered.

Usage: ``uv run python -m bench.soak [--minutes 30] [--rate R]`` (R: requests/s; default half the maximum).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.serving import load, scratch_deployment, slipway_server
from models.routing import Mode, Routing
from slipway.paths import Home
from slipway.prediction_log import read_prediction_log


@dataclass
class Minute:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    ok: int = 0


def tree_rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and all its descendants (BentoML's workers), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, grew = {pid}, True
    while grew:
        children = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= children
        grew = bool(children)
    total_kib = 0
    for member in tree:
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        total_kib += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total_kib / 1024


def _request(url: str, body: dict[str, object]) -> tuple[str, int, bytes]:
    host_port, path = url.removeprefix("http://").split("/", 1)
    host, port = host_port.split(":")
    payload = json.dumps(body).encode()
    head = (
        f"POST /{path} HTTP/1.1\r\nHost: {host_port}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return host, int(port), head.encode() + payload


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """One request on a kept-alive connection; returns the status."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    await reader.readexactly(length)
    return status


async def drive(
    url: str, body: dict[str, object], rate: float, minutes: int, server_pid: int, connections: int = 16
) -> list[tuple[Minute, float]]:
    """Open-loop load at ``rate`` over kept-alive connections (raw HTTP/1.1, so the client is not the bottleneck).

    Each request is due at a fixed time and timed from then: when every connection is
    busy, due requests wait and their wait counts as latency.
    """
    per_minute = [Minute() for _ in range(minutes)]
    rss: list[float] = []
    host, port, request = _request(url, body)
    due: asyncio.Queue[float] = asyncio.Queue(maxsize=100_000)
    started = time.perf_counter()
    end = started + minutes * 60

    def minute(at: float) -> Minute:
        return per_minute[min(int((at - started) // 60), minutes - 1)]

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        while (when := await due.get()) > 0:
            try:
                ok = await _exchange(reader, writer, request) == 200
            except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration):
                ok = False
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
            if ok:
                minute(when).ok += 1
                minute(when).latencies.append((time.perf_counter() - when) * 1000)
            else:
                minute(when).errors += 1
        writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    i = 0
    while (when := started + i / rate) < end:
        delay = when - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            due.put_nowait(when)
        except asyncio.QueueFull:  # 100,000 requests behind: the service is down, not slow
            minute(when).errors += 1
        if len(rss) < int((time.perf_counter() - started) // 60):
            rss.append(tree_rss_mib(server_pid))
            m = per_minute[len(rss) - 1]
            p50, p99 = np.percentile(m.latencies, [50, 99]) if m.latencies else (float("nan"),) * 2
            print(f"minute {len(rss):>3}: {m.ok:>6} ok {m.errors:>4} errors", end="")
            print(f"  p50 {p50:6.2f} ms  p99 {p99:7.2f} ms  RSS {rss[-1]:.0f} MiB", flush=True)
        i += 1
    for _ in workers:
        await due.put(0.0)
    await asyncio.gather(*workers)
    rss.append(tree_rss_mib(server_pid))
    while len(rss) < minutes:
        rss.append(rss[-1])
    return list(zip(per_minute, rss[:minutes], strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--rate", type=float, default=None, help="requests/s (default: half the measured maximum)")
    args = parser.parse_args()
    scratch = scratch_deployment("slipway-soak-")
    body: dict[str, object] = {"rows": scratch.rows[:1]}
    with slipway_server(scratch, "bento") as (url, pid):
        scratch.route(Routing(Mode.SHADOW))
        rate = args.rate
        if rate is None:
            peak = load(f"{url}/predict", body, 10, 8, scratch.work)
            rate = peak["rps"] / 2
            print(f"maximum single-row throughput with shadow: {peak['rps']:.0f} req/s; soaking at {rate:.0f} req/s")
        time.sleep(3)  # the probe's last records are written (two flush intervals)
        before = len(read_prediction_log(Home.current().predictions))
        minutes = asyncio.run(drive(f"{url}/predict", body, rate, args.minutes, pid))
    logged = len(read_prediction_log(Home.current().predictions)) - before  # after SIGTERM: the log is flushed
    answered = sum(m.ok for m, _ in minutes)
    errors = sum(m.errors for m, _ in minutes)
    first = minutes[0][1]
    growth = (minutes[-1][1] - first) / first
    p99 = [float(np.percentile(m.latencies, 99)) if m.latencies else float("nan") for m, _ in minutes]
    head, tail = np.nanmean(p99[: max(1, len(p99) // 6)]), np.nanmean(p99[-max(1, len(p99) // 6) :])
    print(f"\nsoak: {args.minutes} min at {rate:.0f} req/s with shadow on; {answered} answered 200, {errors} errors (goal 0)")
    print(f"service RSS after minute 1 {first:.0f} MiB, at the end {minutes[-1][1]:.0f} MiB: growth {growth:+.1%} (goal < 10%)")
    print(f"p99 first sixth {head:.2f} ms, last sixth {tail:.2f} ms (ratio {tail / head:.2f}x)")
    print(f"prediction log: {logged} records for {answered} answered 200 (the load's and the throughput probe's: >=)")


if __name__ == "__main__":
    main()
