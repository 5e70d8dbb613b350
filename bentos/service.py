"""The Slipway scoring service (BentoML 1.4).

Loaded by ``bentoml serve bentos.service:Scoring``. The configuration comes from
``SLIPWAY_PARAMS`` (default ``params.yaml``) and the registry from
``MLFLOW_TRACKING_URI``; the request models are built from the configured
features, so the OpenAPI document shows the real fields.
"""

import functools
import gc
import json
import logging
import os
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import anyio
import bentoml
from bentoml.exceptions import InvalidArgument, NotFound, ServiceUnavailable

from bentos.contract import Prediction, PredictResponse, build_contract
from bentos.guard import RequestGuard
from bentos.router import Bundled, LoadedModel, ModelRouter, Snapshot
from bentos.scoring import NonFiniteScore, log_records, score_rows
from bentos.shadow import ShadowBatcher
from models.decision import DECISION_TAG
from models.fast_scorer import FastScorer
from models.routing import shadows
from slipway.feature_store import OnlineReader, open_store
from slipway.paths import prepare_environment
from slipway.prediction_log import PredictionLog
from slipway.settings import load_settings
from slipway.signing import public_key

LOGGER = logging.getLogger(__name__)
HOME = prepare_environment()
# The registry poller retries on its own every poll: MLflow's own retries (7, with backoff, minutes
# in all) would only delay noticing that a registry that was down is back.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
SETTINGS = load_settings(os.environ.get("SLIPWAY_PARAMS", "params.yaml"))
CONTRACT = build_contract(SETTINGS.data, SETTINGS.serving.max_rows)
Row = CONTRACT.row
TOKEN = os.environ.get(SETTINGS.serving.token_env) or None
# set: only champion switches and routing signed with the promotion key are served (models.decision)
VERIFY_KEY = public_key(SETTINGS.promotion.decision_key, "promotion.decision_key") if SETTINGS.promotion.decision_key else None
Answered = tuple[list[float], list[str], list[str]]  # scores, versions, request ids

REQUESTS = bentoml.metrics.Counter(
    name="slipway_predictions_total", documentation="rows scored", labelnames=["model_version", "route"]
)
LATENCY = bentoml.metrics.Histogram(
    name="slipway_prediction_latency_seconds",
    documentation="scoring time per request",
    labelnames=["model_version", "route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
LOG_DROPPED = bentoml.metrics.Gauge(name="slipway_prediction_log_dropped", documentation="log records dropped")
LOG_DAMAGED = bentoml.metrics.Gauge(
    name="slipway_prediction_log_damaged_files",
    documentation="prediction-log files found damaged while compacting, moved to date=.../_damaged/",
)
SHADOW_SKIPPED = bentoml.metrics.Gauge(
    name="slipway_shadow_skipped", documentation="rows logged without a shadow score: the shadow queue was full"
)
MODEL_ERRORS = bentoml.metrics.Counter(
    name="slipway_model_errors_total",
    documentation="rows a challenger failed to score (served by the champion instead)",
    labelnames=["model_version"],
)
# What this process serves right now, so the promote flow can confirm a routing change took effect.
SERVING = {
    # "mostrecent": a restarted worker's values replace those its dead predecessor left in the multiprocess directory
    name: bentoml.metrics.Gauge(name=f"slipway_serving_{name}", documentation=doc, multiprocess_mode="mostrecent")
    for name, doc in (
        ("champion_version", "version behind the champion alias (0: none)"),
        ("challenger_version", "challenger version loaded for shadow or canary (0: none)"),
        ("canary_percent", "share of keys routed to the challenger"),
        ("shadow", "1 while the challenger is scored in shadow"),
        ("routing_lease_expired", "1 while the registry's routing record is ignored: the promote flow stopped renewing it"),
        ("registry_unverified", "1 while the registry holds a champion or routing not signed by the promotion key"),
        ("decision_seq", "sequence number of the signed decision served (0: decisions are not signed)"),
        ("registry_error", "1 while the last registry read or model load failed: the last loaded state (or nothing) serves"),
    )
}


@functools.cache
def _labelled(version: str, route: str) -> tuple[Any, Any]:
    """The request counter and latency histogram of one (version, route): resolved once, not per request."""
    return REQUESTS.labels(model_version=version, route=route), LATENCY.labels(model_version=version, route=route)


def _count_model_errors(version: str, rows: int) -> None:
    MODEL_ERRORS.labels(model_version=version).inc(rows)


def _publish_routing(snap: Snapshot) -> None:
    SERVING["champion_version"].set(int(snap.champion.version) if snap.champion else 0)
    SERVING["challenger_version"].set(int(snap.challenger.version) if snap.challenger else 0)
    SERVING["canary_percent"].set(snap.routing.canary_percent)
    SERVING["shadow"].set(1 if shadows(snap.routing) else 0)
    SERVING["routing_lease_expired"].set(1 if snap.lease_expired else 0)
    SERVING["registry_unverified"].set(1 if snap.unverified else 0)
    SERVING["decision_seq"].set(snap.decision_seq)
    SERVING["registry_error"].set(1 if _SERVING and _SERVING[0].router.last_error else 0)


def _bundled() -> list[Bundled]:
    """The versions ``slipway run package`` put in this Bento (served from source: the local model store), oldest first."""
    name = SETTINGS.registry.model_name
    models = sorted(
        (m for m in bentoml.models.list() if m.info.labels.get("model_name") == name and "registry_version" in m.info.labels),
        key=lambda m: m.info.creation_time,
    )
    return [
        Bundled(
            m.info.labels["registry_version"],
            m.info.labels.get("alias", ""),
            str(m.info.metadata[DECISION_TAG]) if DECISION_TAG in m.info.metadata else None,
            functools.partial(_load_bundled, str(m.tag), m.info.labels["registry_version"]),
        )
        for m in models
    ]


def _load_bundled(tag: str, version: str) -> LoadedModel:
    inner = bentoml.mlflow.load_model(tag).unwrap_python_model()
    return LoadedModel(version, FastScorer(inner.pipeline, inner.data))


@bentoml.service(
    name="slipway_scoring",
    traffic={"timeout": 30},
    logging={"access": {"enabled": False}},  # the prediction log and /metrics already record every request
    # a span per scoring request costs ~10% of the request; traced only when asked (serving.trace_scoring)
    tracing={} if SETTINGS.serving.trace_scoring else {"excluded_urls": ["/predict", "/predict_entities"]},
)
class Scoring:
    """Scores rows or entity ids with the champion, following the registry's routing."""

    def __init__(self) -> None:
        self.router = ModelRouter(
            SETTINGS.registry.model_name, SETTINGS.serving.poll_seconds, _publish_routing, verify_key=VERIFY_KEY, bundle=_bundled
        )
        data, serving = SETTINGS.data, SETTINGS.serving
        self.log = PredictionLog(
            HOME.predictions, data.numeric, data.categorical, serving.log_flush_seconds, serving.log_queue_size
        )
        self.shadow = ShadowBatcher(self._append, max_rows=SETTINGS.serving.shadow_queue_rows)
        self._reader: OnlineReader | None = None  # opened in the background at start-up, or by the first lookup
        self._opening = threading.Lock()
        threading.Thread(target=self._open_store_early, name="feature-store-open", daemon=True).start()
        # Move the large start-up heap (MLflow, Feast, pandas) out of the collector's
        # reach: full collections over it otherwise stall a request every few seconds.
        gc.freeze()
        _SERVING[:] = [self]

    def __is_ready__(self) -> bool:
        return self.router.snapshot.champion is not None

    @bentoml.on_shutdown
    def flush_on_shutdown(self) -> None:
        """Nothing acknowledged is lost on SIGTERM: shadow rows pending are scored and logged, then the log is written."""
        self.shadow.close()
        self.log.close()

    @bentoml.api(route="/predict")
    async def predict(self, rows: list[Row]) -> PredictResponse:  # type: ignore[valid-type]
        """Score rows of raw features."""
        return _response(self._score([row.model_dump(by_alias=True) for row in rows], None))  # type: ignore[attr-defined]

    @bentoml.api(route="/predict_entities")
    async def predict_entities(self, entity_ids: list[str]) -> PredictResponse:
        """Score entities with their features from the Feast online store."""
        return _response(await self._score_entities(entity_ids))

    async def answer(self, path: str, request: Any) -> bytes:
        """The scoring routes as the request guard serves them: the request it validated, the response as JSON bytes.

        The ``@bentoml.api`` methods above document the same contract (``/docs.json``)
        and behave the same; serving them from the guard validates each request once,
        not a second time in BentoML's input model, and skips its routing and
        response model.
        """
        if path == "/predict":
            answered = self._score([row.model_dump(by_alias=True) for row in request.rows], None)
        else:
            answered = await self._score_entities(request.entity_ids)
        scores, versions, ids = answered
        predictions = [{"score": s, "model_version": v, "request_id": i} for s, v, i in zip(scores, versions, ids, strict=True)]
        return json.dumps({"predictions": predictions}).encode()

    async def _score_entities(self, entity_ids: list[str]) -> Answered:
        if self._reader is None:  # opening reads the registry once; only lookups are time-limited
            await anyio.to_thread.run_sync(self._open_store)
        assert self._reader is not None
        # (a failed open at start-up is retried here, by one request at a time: the others wait for it)
        limit = SETTINGS.serving.lookup_timeout_seconds
        try:
            if self._reader.local:  # SQLite: a local read of ~0.05 ms, on the loop (no network to hang on)
                found = self._reader.read(entity_ids)
            else:
                with anyio.fail_after(limit):  # a hung store (Redis retrying) must not hold the request
                    if self._reader.native_async:  # Redis: its asyncio client, no thread hand-off
                        found = await self._reader.read_async(entity_ids)
                    else:  # any other store's blocking client: in a thread, so a hung store holds only its request
                        found = await anyio.to_thread.run_sync(self._reader.read, entity_ids, abandon_on_cancel=True)
        except TimeoutError:
            raise ServiceUnavailable(f"feature store unavailable: no answer within {limit}s") from None
        except Exception as exc:
            raise ServiceUnavailable(f"feature store unavailable: {type(exc).__name__}") from exc
        unknown = [e for e, row in zip(entity_ids, found, strict=True) if row is None]
        if unknown:
            raise NotFound(f"unknown entity ids: {', '.join(unknown[:20])}")
        return self._score([row for row in found if row is not None], entity_ids)

    def _open_store(self) -> None:
        """Resolve the feature service once; concurrent callers wait for the one opening it."""
        with self._opening:
            if self._reader is not None:
                return
            try:
                self._reader = OnlineReader(open_store(), SETTINGS.features.service, SETTINGS.data.features)
            except Exception as exc:
                raise ServiceUnavailable(f"feature store unavailable: {type(exc).__name__}: {exc}") from exc

    def _open_store_early(self) -> None:
        """At start-up, off the request path: the first lookups then find the store open."""
        try:
            self._open_store()
        except ServiceUnavailable as exc:  # not fatal: /predict needs no store; lookups retry and answer 503
            LOGGER.warning("feature store not opened at start-up: %s", exc)

    def _score(self, rows: list[dict[str, Any]], entities: list[str] | None) -> Answered:
        started = time.perf_counter()
        snap = self.router.snapshot
        if snap.champion is None:
            raise ServiceUnavailable(f"no '{SETTINGS.registry.model_name}@champion' in the registry yet")
        request_id = uuid.uuid4().hex
        ids = [f"{request_id}-{i}" for i in range(len(rows))]
        try:
            scored = score_rows(snap, rows, entities or ids, ids, _count_model_errors)
        except NonFiniteScore as exc:
            raise InvalidArgument(str(exc)) from None
        elapsed = time.perf_counter() - started
        for version, count in Counter(scored.versions).items():
            counted, timed = _labelled(version, scored.route)
            counted.inc(count)
            timed.observe(elapsed)
        records = log_records(scored, rows, entities, elapsed, datetime.now(UTC))
        if shadows(snap.routing) and snap.challenger is not None:
            self.shadow.submit(snap.challenger, rows, records)
        else:
            self._append(records)
        return scored.scores.tolist(), scored.versions, ids

    def _append(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self.log.append(record)
        LOG_DROPPED.set(self.log.dropped)
        LOG_DAMAGED.set(self.log.damaged)
        SHADOW_SKIPPED.set(self.shadow.skipped)


def _response(answered: Answered) -> PredictResponse:
    triples = zip(*answered, strict=True)
    return PredictResponse(predictions=[Prediction(score=s, model_version=v, request_id=i) for s, v, i in triples])


_SERVING: list[Scoring] = []  # this worker's instance, created by BentoML at start-up


def _status() -> tuple[bool, dict[str, Any]]:
    """/readyz: ready once a champion is loaded; says what is served and what in the registry is not."""
    if not _SERVING:
        return False, {"reason": "starting"}
    router = _SERVING[0].router
    snap = router.snapshot
    detail: dict[str, Any] = {
        "champion": snap.champion.version if snap.champion else None,
        "challenger": snap.challenger.version if snap.challenger else None,
        "routing": snap.routing.mode.value,
        "canary_percent": snap.routing.canary_percent,
        "signed": VERIFY_KEY is not None,
        "decision_seq": snap.decision_seq or None,
        "unverified": list(snap.unverified),
        "registry_error": router.last_error,
        "from_bundle": snap.from_bundle,  # the registry was unreachable at start: the Bento's champion serves
    }
    return snap.champion is not None, detail


async def _answer(path: str, request: Any) -> bytes:
    if not _SERVING:
        raise ServiceUnavailable("the service is starting")
    return await _SERVING[0].answer(path, request)


Scoring.add_asgi_middleware(  # type: ignore[attr-defined]
    RequestGuard,
    models={"/predict": CONTRACT.predict_request, "/predict_entities": CONTRACT.entities_request},
    max_body_bytes=SETTINGS.serving.max_body_bytes,
    token=TOKEN,
    answer=_answer,
    status=_status,
)
