"""Every flow as a Prefect deployment: served by one runner process, or registered on a work pool.

Parameters keep their types (the UI shows real forms). Served (``slipway up``, the
compose file), ``params`` defaults to the given file as an absolute path, so runs
from the UI use the same configuration as the CLI. With ``--work-pool`` the
deployments are registered on that pool instead (e.g. the Kubernetes pool of
``infra/prefect/kubernetes-job-template.json``), with ``--image`` as the flow-run
image, ``params`` as given (a path inside the image), and the retrain automations.
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import deploy, serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.settings import PREFECT_API_URL
from prefect.types.entrypoint import EntrypointType

from flows.automations import ensure_automations
from flows.registry import load_flow
from slipway.catalog import FLOWS
from slipway.paths import prepare_environment
from slipway.settings import load_settings

RUNNER_LIMIT = 4  # flow runs at once; a paused promotion holds a slot while it waits


def deployments(params: str, resolve: bool = True) -> list[RunnerDeployment]:
    """One deployment per flow; ``resolve`` turns ``params`` into this machine's absolute path."""
    settings = load_settings(params)  # a broken params file fails here, naming the key, not in every run
    monitor = settings.monitor
    absolute = str(Path(params).resolve()) if resolve else params
    extra: dict[str, dict[str, Any]] = {
        "monitor": {"interval": timedelta(minutes=monitor.schedule_minutes)},
        "score": {"cron": settings.batch.schedule_cron},
        # picks up an open watch whose guard died; while a guard runs, new runs are cancelled
        "guard": {
            "interval": timedelta(hours=1),
            "concurrency_limit": ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        },
        "retrain": {
            "interval": timedelta(days=monitor.retrain_every_days),
            # one retraining at a time; events arriving meanwhile are dropped, not queued
            "concurrency_limit": ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        },
    }
    out = []
    for name in FLOWS:
        flow_fn: Any = load_flow(name)
        out.append(
            flow_fn.to_deployment(
                name=name,
                parameters={"params": absolute},
                description=inspect.getdoc(flow_fn.fn),
                tags=["slipway"],
                # on a work pool the worker imports the flow from the installed package (module path)
                entrypoint_type=EntrypointType.FILE_PATH if resolve else EntrypointType.MODULE_PATH,
                **extra.get(name, {}),
            )
        )
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.deployments", description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--work-pool", help="register on this work pool instead of serving")
    parser.add_argument("--image", help="flow-run image for a container work pool (with --work-pool)")
    args = parser.parse_args(argv)
    prepare_environment()
    if args.work_pool is None:
        serve(*deployments(args.params), limit=RUNNER_LIMIT)
        return
    ids: list[Any] = deploy(  # type: ignore[assignment]  # sync_compatible: a list when called synchronously
        *deployments(args.params, resolve=False),
        work_pool_name=args.work_pool,
        image=args.image,
        build=False,  # the image is built and pushed by the team's CI (infra/Dockerfile)
        push=False,
        print_next_steps_message=False,
    )
    names = ensure_automations(PREFECT_API_URL.value(), args.params)
    print(f"registered {len(ids)} deployments on work pool {args.work_pool!r}; automations: {', '.join(names)}")


if __name__ == "__main__":
    main()
