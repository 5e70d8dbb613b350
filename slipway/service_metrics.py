"""Reading the scoring service's ``/metrics``: what it serves now, and how often a challenger failed."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from slipway.settings import PromotionSettings


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
    decision_seq: int = 0  # the signed decision this replica serves (0: unsigned)


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
        decision_seq=int(gauges.get("decision_seq", 0)),
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


def replicas(service_url: str, replica_urls: Sequence[str] = ()) -> list[str]:
    """Each replica's own URL: ``replica_urls`` (default: the service's).

    A host name that resolves to several IPv4 addresses (a Kubernetes headless Service,
    compose's service name) counts once per address.
    """
    out: list[str] = []
    for url in replica_urls or [service_url]:
        out += [u for u in _addresses(url) if u not in out]
    return out


def every_replica(cfg: PromotionSettings) -> list[str]:
    """The replicas a promotion confirms routing on (``promotion.replica_urls``, else ``promotion.service_url``)."""
    return replicas(cfg.service_url, cfg.replica_urls)


def _addresses(url: str) -> list[str]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
        return [url]
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(host, parts.port or 80, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror:
        return [url]  # unresolvable: the wait reports it, naming the URL
    ips = sorted({str(info[4][0]) for info in found})
    if len(ips) <= 1:
        return [url]
    port = f":{parts.port}" if parts.port else ""
    return [urlunsplit(parts._replace(netloc=f"{ip}{port}")) for ip in ips]


def wait_for_replicas(urls: Sequence[str], accept: Callable[[ServingState], bool], what: str, timeout: float) -> None:
    """Every replica reports ``accept``-able state within ``timeout`` (the error names the first that did not)."""
    deadline = time.monotonic() + timeout
    for url in urls:
        wait_for_state(url, accept, what, max(0.0, deadline - time.monotonic()))


def replica_problems(champion: str, urls: Sequence[str]) -> list[str]:
    """Replicas that do not serve ``champion`` or do not answer, each with the reason its ``/readyz`` gives."""
    problems = []
    for url in urls:
        try:
            state = read_state(url)
            if state.champion == champion:
                continue
            detail = httpx.get(f"{url.rstrip('/')}/readyz", timeout=5).json()
        except (ServiceUnreachable, httpx.HTTPError, ValueError) as exc:
            problems.append(f"{url} did not answer: {exc}")
            continue
        serves = f"serves v{state.champion}" if state.champion else "serves nothing"
        why = detail.get("registry_error") if isinstance(detail, dict) else None
        problems.append(f"{url} {serves}, not the champion v{champion}" + (f" ({why})" if why else ""))
    return problems


def model_errors(urls: Sequence[str], version: str) -> float:
    """Rows ``version`` failed to score, summed over the replicas."""
    return sum(read_state(url).model_errors.get(version, 0.0) for url in urls)
