"""The floor: a bare ASGI app that parses JSON and calls XGBoost's in-place predict.

No validation, routing, logging or metrics; it bounds what any Python service can
reach on this machine. ``FLOOR_PREDICT=direct`` calls XGBoost's C prediction entry
point directly (as Slipway's scorer does) instead of ``Booster.inplace_predict``, to
show how much of the floor is the Python wrapper's dispatch. Run:
``FLOOR_MODEL_URI=models:/name/1 uvicorn bench.floor_app:app``.
"""

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import mlflow
import numpy as np

from models.fast_scorer import FastScorer

_MODEL = mlflow.pyfunc.load_model(os.environ["FLOOR_MODEL_URI"]).unwrap_python_model()
_SCORER = FastScorer(_MODEL.pipeline, _MODEL.data)
_BOOSTER = _SCORER._booster
_DIRECT = os.environ.get("FLOOR_PREDICT", "inplace") == "direct"


def _predict(rows: list[dict[str, Any]]) -> list[float]:
    if _DIRECT:
        scores: list[float] = _SCORER.predict(rows).tolist()
    else:
        scores = np.asarray(_BOOSTER.inplace_predict(_SCORER.matrix(rows)), dtype=float).tolist()
    return scores


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
) -> None:
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    scores = _predict(json.loads(body)["rows"])
    out = json.dumps({"predictions": scores}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": out})
