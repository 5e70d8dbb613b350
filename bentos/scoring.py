"""The service's scoring logic as plain functions: route each row, score each group, build the log records.

Kept apart from the BentoML class so it is tested in-process with stub models;
``bentos/service.py`` adds metrics, logging and HTTP around it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from bentos.router import LoadedModel, Snapshot
from models.routing import serves_challenger

Record = dict[str, Any]


class NonFiniteScore(ValueError):
    """A model gave NaN or infinity for some rows: never returned, answered as a client error naming them."""

    def __init__(self, version: str, rows: list[int]) -> None:
        self.rows = rows
        shown = ", ".join(f"rows[{r}]" for r in rows[:20])
        super().__init__(f"v{version} gives no finite score for {shown}: values far outside what it was trained on")


def _finite(model: LoadedModel, rows: Sequence[Mapping[str, Any]], index: list[int]) -> np.ndarray:
    scores = np.asarray(model.scorer.predict(rows), dtype=float)
    finite = np.isfinite(scores)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise NonFiniteScore(model.version, [index[j] for j in bad])
    return scores


@dataclass(frozen=True)
class Scored:
    """One request's answer: a score, the version that served it and any challenger error, per row."""

    ids: list[str]
    scores: np.ndarray
    versions: list[str]
    errors: list[str | None]
    route: str


def score_rows(
    snap: Snapshot,
    rows: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    ids: list[str],
    on_challenger_error: Callable[[str, int], None] = lambda version, rows: None,
) -> Scored:
    """Route each row by its key, score each version's rows in one call; a failing challenger falls back to the champion.

    Raises only when the champion itself fails (or there is none): a challenger can never fail a request.
    A NaN or infinite score is a failure too (``NonFiniteScore``), so none is ever returned.
    """
    champion = snap.champion
    if champion is None:
        raise LookupError("no champion is loaded")
    groups: dict[str, tuple[LoadedModel, list[int]]] = {}
    for i, key in enumerate(keys):
        model = snap.challenger if snap.challenger and serves_challenger(snap.routing, key) else champion
        groups.setdefault(model.version, (model, []))[1].append(i)
    scores = np.empty(len(rows))
    versions: list[str] = [""] * len(rows)
    errors: list[str | None] = [None] * len(rows)
    for model, index in groups.values():
        chosen = [rows[i] for i in index]
        served = model
        try:
            scores[index] = _finite(model, chosen, index)
        except Exception as exc:
            if model is champion:
                raise
            on_challenger_error(model.version, len(index))
            message = f"v{model.version}: {type(exc).__name__}: {exc}"[:500]
            scores[index] = _finite(champion, chosen, index)
            for i in index:
                errors[i] = message
            served = champion
        for i in index:
            versions[i] = served.version
    # the router resets routing to champion whenever there is no challenger, so the mode is the route
    return Scored(ids, scores, versions, errors, snap.routing.mode.value)


def log_records(
    scored: Scored, rows: Sequence[Mapping[str, Any]], entities: Sequence[str] | None, elapsed: float, now: datetime
) -> list[Record]:
    """One prediction-log record per row (the shadow columns are filled in later, off the request path)."""
    return [
        {
            "request_id": scored.ids[i],
            "time": now,
            "entity": entities[i] if entities else None,
            "features": rows[i],  # encoded by the log writer, off the request path
            "route": scored.route,
            "served_version": scored.versions[i],
            "score": float(scored.scores[i]),
            "shadow_version": None,
            "shadow_score": None,
            "latency_ms": elapsed * 1000,
            "error": scored.errors[i],
        }
        for i in range(len(rows))
    ]
