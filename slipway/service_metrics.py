"""Reading the scoring service's ``/metrics``: what it serves now, and how often a challenger failed."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families


class ServiceUnreachable(RuntimeError):
    """The scoring service did not answer; the message names its URL."""


@dataclass(frozen=True)
class ServingState:
    champion: str | None
    challenger: str | None
    canary_percent: int
    shadow: bool
    model_errors: dict[str, float]  # version → rows it failed to score
    unverified: bool = False  # the registry holds a champion or routing the service refuses: not signed


def _version(value: float) -> str | None:
    return str(int(value)) if value > 0 else None


def parse(text: str) -> ServingState:
    gauges: dict[str, float] = {}
    errors: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("slipway_serving_"):
                gauges[sample.name.removeprefix("slipway_serving_")] = sample.value
            elif sample.name == "slipway_model_errors_total":
                version = sample.labels["model_version"]
                errors[version] = errors.get(version, 0.0) + sample.value
    return ServingState(
        champion=_version(gauges.get("champion_version", 0)),
        challenger=_version(gauges.get("challenger_version", 0)),
        canary_percent=int(gauges.get("canary_percent", 0)),
        shadow=gauges.get("shadow", 0) > 0,
        model_errors=errors,
        unverified=gauges.get("registry_unverified", 0) > 0,
    )


def read_state(url: str) -> ServingState:
    try:
        response = httpx.get(f"{url.rstrip('/')}/metrics", timeout=5)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise ServiceUnreachable(f"scoring service at {url} did not answer /metrics: {exc}") from exc
    return parse(response.text)


def wait_for_state(url: str, accept: Callable[[ServingState], bool], what: str, timeout: float) -> ServingState:
    """Poll the service's metrics until ``accept`` holds; the error names the URL, ``what`` and the last state."""
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(url)
        if accept(state):
            return state
        if time.monotonic() > deadline:
            raise RuntimeError(f"scoring service at {url} did not pick up {what} within {timeout:.0f}s (it reports {state})")
        time.sleep(0.5)
