"""Shadow scoring in micro-batches, off the request path.

Requests only enqueue their rows; a background thread wakes every interval and
scores everything pending with the challenger in one call. One predict per
interval instead of one thread hand-off per request keeps the GIL away from the
request path, so shadowing barely moves the served latency.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

from bentos.router import LoadedModel

LOGGER = logging.getLogger(__name__)
Record = dict[str, Any]


class ShadowBatcher:
    """Pending shadow work, bounded in rows (not requests): a slow challenger cannot exhaust memory."""

    def __init__(self, sink: Callable[[list[Record]], None], interval: float = 0.05, max_rows: int = 20_000) -> None:
        self.sink, self.interval, self.max_rows = sink, interval, max_rows
        self.skipped = 0
        self._pending_rows = 0
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[LoadedModel, list[dict[str, Any]], list[Record]]] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shadow-scorer", daemon=True)
        self._thread.start()

    def submit(self, challenger: LoadedModel, rows: list[dict[str, Any]], records: list[Record]) -> None:
        """Never blocks: when ``max_rows`` are pending the records are logged at once, without a shadow score."""
        with self._lock:
            full = self._pending_rows + len(rows) > self.max_rows
            if not full:
                self._pending_rows += len(rows)
        if full:
            self.skipped += len(records)
            self.sink(records)
            return
        self._queue.put_nowait((challenger, rows, records))

    def drain(self) -> int:
        pending: dict[str, tuple[LoadedModel, list[dict[str, Any]], list[Record]]] = {}
        while True:
            try:
                model, rows, records = self._queue.get_nowait()
            except queue.Empty:
                break
            _, all_rows, all_records = pending.setdefault(model.version, (model, [], []))
            all_rows.extend(rows)
            all_records.extend(records)
            with self._lock:
                self._pending_rows -= len(rows)
        done = 0
        for model, rows, records in pending.values():
            try:
                for record, score in zip(records, model.scorer.predict(rows), strict=True):
                    record["shadow_version"], record["shadow_score"] = model.version, float(score)
            except Exception as exc:
                LOGGER.exception("shadow scoring with version %s failed", model.version)
                message = f"v{model.version}: {type(exc).__name__}: {exc}"[:500]
                for record in records:
                    record["shadow_version"], record["error"] = model.version, message
            self.sink(records)
            done += len(records)
        return done

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.drain()
        self.drain()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
