"""Finding every replica of the scoring service, and waiting until each one reports a state."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from slipway.service_metrics import ServiceUnreachable, replica_problems, replicas, wait_for_replicas


def test_replicas_are_the_configured_urls_or_the_service_and_a_name_with_several_addresses_counts_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert replicas("http://127.0.0.1:3000") == ["http://127.0.0.1:3000"]
    assert replicas("http://svc", ["http://10.0.0.1:3000", "http://10.0.0.2:3000", "http://10.0.0.1:3000"]) == [
        "http://10.0.0.1:3000",
        "http://10.0.0.2:3000",
    ]

    def resolve(host: str, port: int, *_: object) -> list[tuple[object, ...]]:  # DNS of a headless Service
        table = {"slipway-scoring-replicas": ["10.1.0.7", "10.1.0.5", "10.1.0.7"], "one": ["10.2.0.1"]}
        if host not in table:
            raise socket.gaierror(f"unknown host {host}")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in table[host]]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    assert replicas("http://slipway-scoring-replicas:3000/") == ["http://10.1.0.5:3000/", "http://10.1.0.7:3000/"]
    assert replicas("http://one:3000") == ["http://one:3000"]  # one address: the name stays (TLS, Host header)
    assert replicas("http://nowhere:3000") == ["http://nowhere:3000"]  # reported by the wait, by name


class Metrics(BaseHTTPRequestHandler):
    champion = 1

    def do_GET(self) -> None:
        if self.path == "/readyz":  # what a replica that failed to load v2 says
            kind, body = "application/json", b'{"champion": "1", "registry_error": "loading v2: MlflowException: gone"}'
        else:
            kind, body = "text/plain", f"slipway_serving_champion_version {self.champion}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


@contextmanager
def serving(champion: int) -> Iterator[str]:
    """A stand-in replica: only its /metrics, reporting ``champion``."""
    handler = type("Replica", (Metrics,), {"champion": champion})
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()


@pytest.fixture
def two_replicas() -> Iterator[tuple[str, str]]:
    with serving(2) as first, serving(1) as second:  # the second still serves v1
        yield first, second


def test_the_wait_names_the_replica_that_did_not_follow(two_replicas: tuple[str, str]) -> None:
    first, second = two_replicas
    wait_for_replicas([first], lambda s: s.champion == "2", "champion v2", 2)
    with pytest.raises(RuntimeError, match=re.escape(f"scoring service at {second} did not pick up champion v2")):
        wait_for_replicas([first, second], lambda s: s.champion == "2", "champion v2", 1)
    with pytest.raises(ServiceUnreachable, match=re.escape("127.0.0.1:9 did not answer")):
        wait_for_replicas([first, "http://127.0.0.1:9"], lambda s: s.champion == "2", "champion v2", 1)


def test_replica_problems_name_each_replica_off_the_champion_with_its_reason(two_replicas: tuple[str, str]) -> None:
    first, second = two_replicas
    assert replica_problems("2", [first]) == []
    told = replica_problems("2", [first, second, "http://127.0.0.1:9"])
    assert told[0] == f"{second} serves v1, not the champion v2 (loading v2: MlflowException: gone)", told
    assert told[1].startswith("http://127.0.0.1:9 did not answer: scoring service at http://127.0.0.1:9"), told
    assert len(told) == 2
