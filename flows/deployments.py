"""Every flow as a Prefect deployment, served by one runner process (``slipway up`` starts it).

Parameters keep their types (the UI shows real forms); ``params`` defaults to the
file ``slipway up`` was given, as an absolute path, so runs from the UI use the
same configuration as the CLI.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment

from flows.cli import FLOWS, _flow
from slipway.paths import prepare_environment
from slipway.settings import load_settings

RUNNER_LIMIT = 4  # flow runs at once; a paused promotion holds a slot while it waits


def deployments(params: str) -> list[RunnerDeployment]:
    absolute = str(Path(params).resolve())
    load_settings(absolute)  # a broken params file fails here, naming the key, not in every run
    monitor = load_settings(absolute).monitor
    extra: dict[str, dict[str, Any]] = {
        "monitor": {"interval": timedelta(minutes=monitor.schedule_minutes)},
        "retrain": {
            "interval": timedelta(days=monitor.retrain_every_days),
            # one retraining at a time; events arriving meanwhile are dropped, not queued
            "concurrency_limit": ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        },
    }
    out = []
    for name in FLOWS:
        flow_fn: Any = _flow(name)
        out.append(
            flow_fn.to_deployment(
                name=name,
                parameters={"params": absolute},
                description=inspect.getdoc(flow_fn.fn),
                tags=["slipway"],
                **extra.get(name, {}),
            )
        )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.deployments", description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    prepare_environment()
    serve(*deployments(args.params), limit=RUNNER_LIMIT)


if __name__ == "__main__":
    main()
