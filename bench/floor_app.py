"""The floor: a bare ASGI app that parses JSON and calls XGBoost's in-place predict.

No validation, routing, logging or metrics; it bounds what any Python service can
reach on this machine. Run: ``FLOOR_MODEL_URI=models:/name/1 uvicorn bench.floor_app:app``.
"""

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import mlflow

from models.fast_scorer import FastScorer

_MODEL = mlflow.pyfunc.load_model(os.environ["FLOOR_MODEL_URI"]).unwrap_python_model()
_SCORER = FastScorer(_MODEL.pipeline, _MODEL.data)


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
    scores = _SCORER.predict(json.loads(body)["rows"]).tolist()
    out = json.dumps({"predictions": scores}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": out})
