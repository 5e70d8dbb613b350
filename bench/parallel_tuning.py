"""One Optuna study on PostgreSQL: one worker process against several, side by side.

The two arms' wall times include everything the train flow pays, the worker
processes' start-up too. Both arms use every core: one worker fits each trial on all cores (XGBoost threads),
N workers are N processes with cores/N threads each, sharing the study through
PostgreSQL as the train flow does with ``train.workers``. Same data, same trial
budget, fresh study per arm. Needs a reachable PostgreSQL; a scratch database is
created and dropped. Usage:
``uv run python -m bench.parallel_tuning [--trials N] [--repeats N] [--workers N] [--rows N] [--postgres URL]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid

import optuna
import psycopg

from bench.tuning_gain import generated_frame
from models import training, tuning
from slipway.settings import load_settings


def admin(url: str, sql: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.encode())


def run_arm(storage: str, workers: int, trials: int, split: training.Split, params: str) -> dict[str, float]:
    settings = load_settings(params)
    cfg = settings.train.model_copy(update={"n_trials": trials, "workers": workers, "timeout_seconds": None})
    study = tuning.create_study(cfg, f"bench-{workers}w-{uuid.uuid4().hex[:6]}", storage)
    started = time.perf_counter()
    best = tuning.tune(study, split, settings.data, cfg, storage)
    seconds = time.perf_counter() - started
    finished = tuning.finished_trials(study)
    pruned = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)))
    return {"seconds": seconds, "trials": finished, "pruned": pruned, "best": float(best.value or 0.0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument(
        "--postgres", default=os.environ.get("SLIPWAY_TEST_POSTGRES", "postgresql://root@127.0.0.1:5432/postgres")
    )
    args = parser.parse_args()

    settings = load_settings(args.params)
    assert settings.generate is not None
    settings = settings.model_copy(update={"generate": settings.generate.model_copy(update={"rows": args.rows})})
    split = training.time_split(generated_frame(settings, seed=0), settings.data, settings.train, "event_timestamp")
    database = f"slipway_bench_{uuid.uuid4().hex[:8]}"
    admin(args.postgres, f'CREATE DATABASE "{database}"')
    storage = args.postgres.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{database}"
    one: list[dict[str, float]] = []
    many: list[dict[str, float]] = []
    try:
        print(
            f"{os.cpu_count()} cores, {len(split.development)} training rows, {args.trials} trials per arm, study on PostgreSQL"
        )
        for repeat in range(args.repeats):  # alternate which arm goes first, so drift in machine load hits both
            order = [(1, one), (args.workers, many)]
            for workers, results in order if repeat % 2 == 0 else reversed(order):
                results.append(run_arm(storage, workers, args.trials, split, args.params))
    finally:
        admin(args.postgres, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    header = f"{'trials':>6} {'pruned':>6} {'seconds':>8} {'trials/min':>10} {'best AUC':>9} {'speed-up':>8}"
    print(f"{'repeat':>6} {'arm':<28} {header}")
    speedups = []
    for repeat, (a, b) in enumerate(zip(one, many, strict=True)):
        speedups.append((b["trials"] / b["seconds"]) / (a["trials"] / a["seconds"]))
        arms = (
            (f"1 worker x {os.cpu_count()} threads", a, ""),
            (f"{args.workers} workers sharing the study", b, f"{speedups[-1]:.2f}x"),
        )
        for name, arm, ratio in arms:
            rate = arm["trials"] / arm["seconds"] * 60
            row = f"{arm['trials']:>6.0f} {arm['pruned']:>6.0f} {arm['seconds']:>8.1f} {rate:>10.1f} {arm['best']:>9.4f}"
            print(f"{repeat:>6} {name:<28} {row} {ratio:>8}")
    print(f"median speed-up in trials per second, {args.workers} workers vs 1: {statistics.median(speedups):.2f}x")


if __name__ == "__main__":
    main()
