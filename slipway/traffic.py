"""Steady client traffic against the scoring service from a background thread.

Used by ``slipway demo`` (a calling service, so shadow, canary and the monitor
have live traffic to work on) and by the tests; one entity or one row per request.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import httpx


class Traffic:
    def __init__(self, url: str, per_second: float = 50) -> None:
        self.url, self.pause = url.rstrip("/"), 1 / per_second
        self.statuses: dict[int, int] = {}
        self._bodies: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def entities(self, entity_ids: Sequence[str]) -> Traffic:
        """From now on, look up these entities (``/predict_entities``)."""
        return self._use([("/predict_entities", {"entity_ids": [e]}) for e in entity_ids])

    def rows(self, rows: Sequence[dict[str, Any]]) -> Traffic:
        """From now on, send these raw rows (``/predict``)."""
        return self._use([("/predict", {"rows": [r]}) for r in rows])

    def _use(self, bodies: list[tuple[str, dict[str, Any]]]) -> Traffic:
        with self._lock:
            self._bodies = bodies
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            i = 0
            while not self._stop.wait(self.pause):
                with self._lock:
                    path, body = self._bodies[i % len(self._bodies)]
                try:
                    status = client.post(f"{self.url}{path}", json=body).status_code
                except httpx.HTTPError:
                    status = 0  # no answer at all
                self.statuses[status] = self.statuses.get(status, 0) + 1
                i += 1

    @property
    def answered(self) -> int:
        """Requests answered 200 so far."""
        return self.statuses.get(200, 0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
