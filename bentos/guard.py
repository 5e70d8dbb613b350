"""An ASGI middleware that turns every client mistake into a 4xx before the API runs.

It checks the bearer token, the content type (JSON only: BentoML's pickle content
type is never let through to be deserialised), the body size while it streams,
strict JSON (NaN and Infinity are refused by name) and the request schema. Before
any parsing, nesting depth and the length of digit runs are bounded, so a body
nested thousands deep or an integer of thousands of digits is refused in
milliseconds instead of holding a worker. A valid request is then answered by the
scoring function on the request as validated (or replayed untouched to the app).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from pydantic import BaseModel, ValidationError

LOGGER = logging.getLogger(__name__)
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ClientError(Exception):
    def __init__(self, status: int, error: str, detail: list[dict[str, str]] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.detail = status, error, detail or []


def _reject_constant(name: str) -> float:
    return float("nan")  # kept as NaN so schema validation names the field


def _field(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


MAX_DEPTH = 8  # a request is {"rows": [{...}]}: depth 3
MAX_DIGITS = 400  # longer than any float needs, and than any id or category the contract allows
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_DIGITS = re.compile(rb"\d{%d,}" % (MAX_DIGITS + 1))
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _depth(body: bytes) -> int:
    depth = deepest = 0
    for byte in body.translate(None, _NOT_BRACKETS):  # the brackets alone, found in C
        depth += 1 if byte in (0x5B, 0x7B) else -1
        deepest = max(deepest, depth)
    return deepest


def check_shape(body: bytes) -> None:
    """Refuse deep nesting and huge numbers by a scan of the bytes, before the JSON parser sees them.

    Brackets are counted over the raw bytes first; only when that exceeds the limit are
    the strings (which may hold brackets) blanked and the count repeated, exactly.
    """
    if _DIGITS.search(body):
        raise ClientError(400, f"a number (or digit run) longer than {MAX_DIGITS} digits")
    if _depth(body) > MAX_DEPTH and _depth(_STRINGS.sub(b'""', body)) > MAX_DEPTH:
        raise ClientError(400, f"JSON nested deeper than {MAX_DEPTH} levels")


def validate_body(body: bytes, model: type[BaseModel]) -> BaseModel:
    """Bounded shape, strict JSON, then the schema; errors name the field at fault."""
    check_shape(body)
    try:
        payload = json.loads(body, parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClientError(400, f"malformed JSON: {exc}") from None
    except (ValueError, RecursionError) as exc:  # what the scan cannot see: refused, never a 500
        raise ClientError(400, f"unreadable JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ClientError(400, "the body must be a JSON object")
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        detail = [{"field": _field(tuple(e["loc"])), "message": e["msg"]} for e in exc.errors()]
        raise ClientError(400, "invalid request: " + "; ".join(f"{d['field']}: {d['message']}" for d in detail), detail) from None


Answer = Callable[[str, Any], Awaitable[bytes]]  # (path, validated request) → JSON response body
Status = Callable[[], tuple[bool, dict[str, Any]]]  # → (ready, what /readyz reports)


class RequestGuard:
    """Screens POSTs to the guarded paths; everything else passes straight through.

    With ``answer``, a valid request is answered here, by ``answer(path, request)``
    on the request as validated, so it is parsed and validated once; without it, it
    is replayed to the app. An exception from ``answer`` carrying an HTTP status
    (``error_code``, as BentoML's exceptions do) is answered with that status and
    its message; any other is a 500 that says nothing of its cause (it is logged).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        models: dict[str, type[BaseModel]],
        max_body_bytes: int,
        token: str | None,
        answer: Answer | None = None,
        status: Status | None = None,
    ) -> None:
        self.app, self.models, self.max_body_bytes, self.token = app, models, max_body_bytes, token
        self.answer, self.status = answer, status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.status is not None and scope["type"] == "http" and scope.get("path") == "/readyz":
            await self._ready(send, *self.status())
            return
        model = self.models.get(scope.get("path", "")) if scope["type"] == "http" else None
        if model is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            self._check_headers(headers)
            body = await self._read_body(receive)
            request = validate_body(body, model)
            if self.answer is not None:
                out = await self.answer(scope["path"], request)
        except ClientError as exc:
            await self._answer(send, exc)
            return
        except Exception as exc:  # from answer: its status if it has one, else a 500 naming nothing internal
            status = int(getattr(exc, "error_code", 500))
            if status == 503:  # the cause (a store or registry down) goes to the client and to the log
                LOGGER.warning("%s: 503: %s", scope["path"], exc)
            elif status >= 500:
                LOGGER.exception("%s failed", scope["path"])
            message = str(exc) if status < 500 or status == 503 else "an unexpected error: see the service's log"
            await self._answer(send, ClientError(status, message))
            return
        if self.answer is None:
            await self.app(scope, _replay(body, receive), send)
            return
        response = [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": response})
        await send({"type": "http.response.body", "body": out})

    def _check_headers(self, headers: dict[str, str]) -> None:
        if self.token is not None:
            given = headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.token}".encode()):
                raise ClientError(401, "a valid bearer token is required (Authorization: Bearer <token>)")
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            raise ClientError(415, f"content-type must be application/json, got {media or 'none'!r}")
        if headers.get("content-encoding", "identity").lower() != "identity":
            raise ClientError(415, "compressed bodies are not accepted")
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise ClientError(400, "content-length must be a whole number")
            if int(length) > self.max_body_bytes:
                raise ClientError(413, f"body over the limit of {self.max_body_bytes} bytes")

    async def _read_body(self, receive: Receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientError(400, "client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise ClientError(413, f"body over the limit of {self.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    @staticmethod
    async def _ready(send: Send, ready: bool, detail: dict[str, Any]) -> None:
        """200 or 503 as BentoML's /readyz, with what the service serves and why."""
        body = json.dumps({"ready": ready, **detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200 if ready else 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    async def _answer(send: Send, exc: ClientError) -> None:
        body = json.dumps({"error": exc.error, "detail": exc.detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if exc.status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": exc.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
