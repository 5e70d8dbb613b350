"""Finding every replica of the scoring service, and waiting until each one reports a state."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from slipway.service_metrics import ServiceUnreachable, replicas, wait_for_replicas


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
        body = f"slipway_serving_champion_version {self.champion}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
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
