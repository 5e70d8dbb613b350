"""The request guard through a real ASGI app (no server): every client mistake is a 4xx."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bentos.contract import build_contract
from bentos.guard import RequestGuard
from slipway.settings import DataSettings

pytestmark = pytest.mark.anyio

DATA = DataSettings(
    source="x.csv",
    entity="id",
    timestamp="t",
    label="y",
    numeric=["sensor.temp", "n"],
    categorical=["site name"],
    ranges={"n": (0, 1000)},
)
CONTRACT = build_contract(DATA, max_rows=3)
GOOD = {"rows": [{"sensor.temp": 1.5, "n": 2, "site name": "a"}]}


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"echo": await request.json()})


def client(token: str | None = None, limit: int = 2000) -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/predict", echo, methods=["POST"]), Route("/other", echo, methods=["POST"])])
    guarded = RequestGuard(app, models={"/predict": CONTRACT.predict_request}, max_body_bytes=limit, token=token)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url="http://test")


def row(**change: Any) -> dict[str, Any]:
    return {"rows": [{**GOOD["rows"][0], **change}]}


BAD: list[tuple[str, bytes | str, str, int, str]] = [
    ("nan", '{"rows": [{"sensor.temp": NaN, "n": 2, "site name": "a"}]}', "application/json", 400, "rows[0].sensor.temp"),
    ("inf", '{"rows": [{"sensor.temp": 1, "n": Infinity, "site name": "a"}]}', "application/json", 400, "rows[0].n"),
    ("-inf", '{"rows": [{"sensor.temp": -Infinity, "n": 1, "site name": "a"}]}', "application/json", 400, "sensor.temp"),
    ("overflow", '{"rows": [{"sensor.temp": 1e999, "n": 1, "site name": "a"}]}', "application/json", 400, "sensor.temp"),
    ("unknown field", json.dumps(row(colour="red")), "application/json", 400, "rows[0].colour"),
    ("unknown top-level", json.dumps({**GOOD, "extra": 1}), "application/json", 400, "extra"),
    ("missing feature", json.dumps({"rows": [{"sensor.temp": 1.0, "site name": "a"}]}), "application/json", 400, "rows[0].n"),
    ("string number", json.dumps(row(n="2")), "application/json", 400, "rows[0].n"),
    ("bool number", json.dumps(row(n=True)), "application/json", 400, "rows[0].n"),
    ("number category", json.dumps(row(**{"site name": 3})), "application/json", 400, "site name"),
    ("null feature", json.dumps(row(n=None)), "application/json", 400, "rows[0].n"),
    ("empty rows", json.dumps({"rows": []}), "application/json", 400, "rows"),
    ("too many rows", json.dumps({"rows": GOOD["rows"] * 4}), "application/json", 400, "rows"),
    ("rows not a list", json.dumps({"rows": {"n": 1}}), "application/json", 400, "rows"),
    ("body not an object", "[1, 2]", "application/json", 400, "JSON object"),
    ("malformed", '{"rows": [', "application/json", 400, "malformed JSON"),
    ("not utf-8", b"\xff\xfe{}", "application/json", 400, "malformed JSON"),
    ("pickle", b"\x80\x04K\x01.", "application/vnd.bentoml+pickle", 415, "application/json"),
    ("nested 900 deep", '{"rows": [{"n": ' + "[" * 900 + "]" * 900 + "}]}", "application/json", 400, "deeper than 8"),
    (
        "1,500-digit integer",
        '{"rows": [{"sensor.temp": 1, "n": ' + "9" * 1500 + ', "site name": "a"}]}',
        "application/json",
        400,
        "400 digits",
    ),
    ("beyond float32", json.dumps(row(**{"sensor.temp": 1.7e308})), "application/json", 400, "rows[0].sensor.temp"),
    ("outside data.ranges", json.dumps(row(n=1001)), "application/json", 400, "rows[0].n"),
    ("below data.ranges", json.dumps(row(n=-1)), "application/json", 400, "rows[0].n"),
    ("form", "a=1", "application/x-www-form-urlencoded", 415, "application/json"),
    ("no content type", json.dumps(GOOD), "", 415, "none"),
    (
        "oversized",
        json.dumps({"rows": [{"sensor.temp": 1.0, "n": 1, "site name": "x" * 3000}]}),
        "application/json",
        413,
        "limit",
    ),
]


@pytest.mark.parametrize(("name", "body", "media", "status", "names"), BAD, ids=[b[0] for b in BAD])
async def test_client_mistakes_are_4xx_naming_the_problem(
    name: str, body: bytes | str, media: str, status: int, names: str
) -> None:
    async with client() as c:
        headers = {"content-type": media} if media else {}
        response = await c.post("/predict", content=body, headers=headers)
    assert response.status_code == status, response.text
    assert names in response.json()["error"]


async def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    async with client() as c:
        response = await c.post("/predict", json=row(**{"site name": "[[[[[[[[[[[[{{{{{{{{{{"}))
    assert response.status_code == 200, response.text


async def test_hostile_bodies_are_refused_at_once() -> None:
    bodies = ['{"rows": [{"n": ' + "[" * 100_000 + "]" * 100_000 + "}]}", '{"rows": [{"n": ' + "7" * 200_000 + "}]}"]
    async with client(limit=1_000_000) as c:
        for body in bodies:
            response = await c.post("/predict", content=body, headers={"content-type": "application/json"})
            assert response.status_code == 400, response.text  # before the scan: RecursionError, a 500


async def test_oversized_body_without_content_length_is_cut_off_while_streaming() -> None:
    async def chunks() -> Any:
        for _ in range(10):
            yield b" " * 500

    async with client(limit=2000) as c:
        response = await c.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413


async def test_valid_request_reaches_the_app_unchanged() -> None:
    async with client() as c:
        response = await c.post("/predict", json=GOOD)
        other = await c.post("/other", json={"not": "a row"})  # unguarded paths pass through unchecked
    assert response.status_code == 200 and response.json() == {"echo": GOOD}
    assert other.status_code == 200 and other.json() == {"echo": {"not": "a row"}}


async def test_bearer_token_is_required_when_configured() -> None:
    async with client(token="s3cret") as c:
        missing = await c.post("/predict", json=GOOD)
        wrong = await c.post("/predict", json=GOOD, headers={"authorization": "Bearer nope"})
        right = await c.post("/predict", json=GOOD, headers={"authorization": "Bearer s3cret"})
    assert missing.status_code == wrong.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 200


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.error_code = status


async def test_with_an_answer_the_validated_request_is_answered_here_and_errors_keep_their_status() -> None:
    seen: list[Any] = []

    async def answer(path: str, request: Any) -> bytes:
        seen.append(request)
        n = request.rows[0].model_dump(by_alias=True)["n"]
        if n == 404:
            raise Refused(404, "unknown entity ids: ghost")
        if n == 503:
            raise Refused(503, "feature store unavailable: no answer within 5s")
        if n == 500:
            raise RuntimeError("secret internals")
        return json.dumps({"n": n}).encode()

    never = Starlette(routes=[])  # nothing may reach the app on a guarded path
    guarded = RequestGuard(never, models={"/predict": CONTRACT.predict_request}, max_body_bytes=2000, token=None, answer=answer)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guarded), base_url="http://test") as c:
        ok = await c.post("/predict", json=row(n=7))
        missing, down, broken = [await c.post("/predict", json=row(n=n)) for n in (404, 503, 500)]
        bad = await c.post("/predict", json=row(n="7"))
    assert ok.status_code == 200 and ok.json() == {"n": 7} and ok.headers["content-type"] == "application/json"
    assert type(seen[0]) is CONTRACT.predict_request  # the model the guard validated, not raw JSON
    assert missing.status_code == 404 and "ghost" in missing.json()["error"]
    assert down.status_code == 503 and "no answer within" in down.json()["error"]
    assert broken.status_code == 500 and "secret" not in broken.text
    assert bad.status_code == 400 and len(seen) == 4  # refused before any answer


def test_contract_documents_the_real_feature_names() -> None:
    schema = CONTRACT.predict_request.model_json_schema()
    row_schema = schema["$defs"]["FeatureRow"]
    assert set(row_schema["properties"]) == {"sensor.temp", "n", "site name"}
    assert set(row_schema["required"]) == {"sensor.temp", "n", "site name"}
    assert row_schema["additionalProperties"] is False
