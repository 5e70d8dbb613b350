"""Promote flow: policy → shadow → approval in the Prefect UI → canary → champion.

Every decision is appended to the audit log and written to the challenger's tags.
Any failed check routes traffic back to the champion at once. The flow holds a
lock tag on the registered model while it runs; a later run that finds the lock
of a run that is no longer alive resets routing first, so a crash never leaves
the registry half-promoted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.exceptions import FlowPauseTimeout, ObjectNotFound
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from flows.common import home, latest_labels, load_params
from models import comparison, policy, registry, training
from models.routing import Mode, Routing
from slipway.audit import AuditLog
from slipway.feature_store import EVENT_TIMESTAMP, open_store, training_frame
from slipway.prediction_log import read_prediction_log
from slipway.service_metrics import ServingState, read_state
from slipway.settings import Settings

LOCK_TAG = "slipway.promotion.flow_run"


class Approval(RunInput):
    """The form an approver fills in to resume a paused promotion."""

    approver: str = Field(description="your name; it must be in promotion.approvers and differ from the requester")
    approved: bool = Field(description="tick to promote the challenger; leave unticked to reject it")
    comment: str = Field("", description="why; recorded in the audit log and on the model version")


@dataclass(frozen=True)
class PromotionResult:
    model_name: str
    challenger: str
    champion_before: str | None
    outcome: str  # promoted, rejected or rolled_back
    reason: str
    approver: str | None = None


@dataclass
class Promotion:
    """The promotion in progress: who asked for what, and where its decisions go."""

    settings: Settings
    challenger: str
    champion: str | None
    requested_by: str
    audit: AuditLog

    @property
    def name(self) -> str:
        return self.settings.registry.model_name

    def decide(self, event: str, actor: str, details: dict[str, Any]) -> None:
        """One decision: appended to the audit log and put on the challenger's tags."""
        self.audit.append(event, actor, self.name, self.challenger, details)
        tags = {event: json.dumps(details, default=str, sort_keys=True)}
        registry.record_decision(self.name, self.challenger, event, tags)

    def end(self, outcome: str, reason: str, approver: str | None = None) -> PromotionResult:
        registry.record_decision(self.name, self.challenger, outcome, {"reason": reason})
        emit_event(
            event=f"slipway.promotion.{outcome}",
            resource={"prefect.resource.id": f"slipway.model.{self.name}", "slipway.model_version": self.challenger},
            payload={"reason": reason, "champion_before": self.champion, "requested_by": self.requested_by},
        )
        get_run_logger().info("%s v%s %s: %s", self.name, self.challenger, outcome, reason)
        print(f"promotion {outcome}: {self.name} v{self.challenger}: {reason}")
        return PromotionResult(self.name, self.challenger, self.champion, outcome, reason, approver)


def _flow_run_id() -> str:
    context = FlowRunContext.get()
    return str(context.flow_run.id) if context and context.flow_run else "outside-a-flow-run"


def _lock_holder_alive(run_id: str) -> bool:
    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run_id).state  # type: ignore[arg-type]
    except (ObjectNotFound, ValueError):
        return False
    return bool(state and not state.is_final())


def acquire(name: str, promotion_audit: AuditLog) -> None:
    """Take the model's promotion lock; reset routing left behind by a run that died."""
    client = MlflowClient()
    holder = (client.get_registered_model(name).tags or {}).get(LOCK_TAG)
    if holder and holder != _flow_run_id():
        if _lock_holder_alive(holder):
            raise RuntimeError(f"{name!r}: promotion flow run {holder} is still in progress; wait for it or cancel it")
        left = registry.current_routing(name)
        registry.set_routing(name, Routing())
        promotion_audit.append("promotion_recovered", "slipway", name, None, {"dead_run": holder, "routing_was": left.mode})
    client.set_registered_model_tag(name, LOCK_TAG, _flow_run_id())


def release(name: str) -> None:
    MlflowClient().delete_registered_model_tag(name, LOCK_TAG)


@task(cache_policy=NO_CACHE)
def check_policy(p: Promotion) -> policy.PolicyVerdict:
    """Score both versions on the evaluation window (the newest, held-out slice of gold)."""
    settings, data = p.settings, p.settings.data
    labels = pd.read_parquet(home().gold / "labels.parquet")
    frame = training_frame(open_store(), labels, settings)
    window = training.time_split(frame, data, settings.train, EVENT_TIMESTAMP).test
    x, y = window.X[data.features], np.asarray(window.y, dtype=int)

    def score(version: str) -> np.ndarray:
        return np.asarray(mlflow.pyfunc.load_model(f"models:/{p.name}/{version}").predict(x), dtype=float)

    champion = score(p.champion) if p.champion else None
    verdict = policy.evaluate(y, score(p.challenger), champion, x, settings.promotion)
    return verdict


def wait_for_service(url: str, accept: Callable[[ServingState], bool], what: str, timeout: float) -> ServingState:
    """Poll the service's metrics until it reports the routing the registry now holds."""
    deadline = time.monotonic() + timeout
    while True:
        state = read_state(url)
        if accept(state):
            return state
        if time.monotonic() > deadline:
            raise RuntimeError(f"scoring service at {url} did not pick up {what} within {timeout:.0f}s (it reports {state})")
        time.sleep(0.5)


def route(p: Promotion, routing: Routing) -> ServingState:
    """Change routing in the registry and wait until the service follows it."""
    registry.set_routing(p.name, routing)
    cfg = p.settings
    timeout = max(90.0, 10 * cfg.serving.poll_seconds)  # the first switch to a challenger also loads it
    if routing.mode is Mode.CHAMPION:
        return wait_for_service(cfg.promotion.service_url, lambda s: s.challenger is None, "champion-only routing", timeout)
    return wait_for_service(
        cfg.promotion.service_url,
        lambda s: (
            s.challenger == p.challenger
            and s.shadow == (routing.mode is Mode.SHADOW)
            and s.canary_percent == routing.canary_percent
        ),
        f"{routing.mode} routing at {routing.canary_percent}%",
        timeout,
    )


def watch(seconds: float, what: str, count: Callable[[], int]) -> None:
    """Wait, logging progress every 10 seconds."""
    logger, started = get_run_logger(), time.monotonic()
    while (left := seconds - (time.monotonic() - started)) > 0:
        time.sleep(min(10.0, left))
        logger.info("%s: %.0f/%.0fs, %d rows so far", what, min(seconds, time.monotonic() - started), seconds, count())


def rows_with(version: str, column: str, since: datetime) -> Callable[[], int]:
    """A progress counter: logged rows since ``since`` whose ``column`` names ``version``."""
    return lambda: int((read_prediction_log(home().predictions, since)[column].astype(str) == version).sum())


def log_window(p: Promotion, since: datetime) -> pd.DataFrame:
    time.sleep(2 * p.settings.serving.log_flush_seconds)  # let the service's writer flush the window's tail
    return read_prediction_log(home().predictions, since)


def _replay_latency(p: Promotion, rows: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-row scoring time of both versions on the same logged rows, in milliseconds."""
    out = []
    for version in (p.champion, p.challenger):
        assert version is not None
        scorer = registry.load_scorer(p.name, version)
        times = []
        for row in rows:
            started = time.perf_counter()
            scorer.predict([row])
            times.append((time.perf_counter() - started) * 1000)
        out.append(np.asarray(times))
    return out[0], out[1]


@task(cache_policy=NO_CACHE)
def shadow(p: Promotion) -> comparison.ShadowReport:
    """Score the challenger on live traffic without serving it, then compare it with the champion."""
    assert p.champion is not None
    cfg = p.settings.promotion
    route(p, Routing(Mode.SHADOW))
    started = datetime.now(UTC)  # the window opens once the service shadows
    p.decide("shadow_started", "slipway", {"seconds": cfg.shadow_seconds})
    watch(cfg.shadow_seconds, f"shadow v{p.challenger}", rows_with(p.challenger, "shadow_version", started))
    window = log_window(p, started)
    labels = latest_labels(p.settings)
    sample = [json.loads(f) for f in window["features"].head(300)]
    report = comparison.shadow_report(window, p.champion, p.challenger, labels, _replay_latency(p, sample), cfg)
    markdown = report.to_markdown()
    create_markdown_artifact(key="shadow-report", markdown=markdown, description=f"v{p.challenger} vs v{p.champion}")
    run_id = MlflowClient().get_model_version(p.name, p.challenger).run_id
    if run_id:
        MlflowClient().log_text(run_id, markdown, f"promotion/shadow_report_{started:%Y%m%dT%H%M%S}.md")
        MlflowClient().log_dict(run_id, report.as_dict(), f"promotion/shadow_report_{started:%Y%m%dT%H%M%S}.json")
    p.decide(
        "shadow_report", "slipway", {k: v for k, v in report.as_dict().items() if k != "problems"} | {"problems": report.problems}
    )
    return report


def await_approval(p: Promotion, report_markdown: str) -> Approval | None:
    """Pause until a valid approval or rejection arrives; None when nobody answers in time."""
    cfg, logger = p.settings.promotion, get_run_logger()
    deadline = time.monotonic() + cfg.approval_timeout_seconds
    notice = ""
    while (remaining := int(deadline - time.monotonic())) > 0:
        description = (
            f"{notice}# Promote {p.name} v{p.challenger} to champion?\n\n"
            f"Requested by **{p.requested_by}**. Approvers: {', '.join(cfg.approvers) or '(none configured)'}; "
            f"the requester cannot approve.\n\n{report_markdown}"
        )
        form = Approval.with_initial_data(description=description, approver="", approved=False, comment="")
        p.decide("approval_requested", p.requested_by, {"timeout_seconds": remaining})
        try:
            answer = pause_flow_run(wait_for_input=form, timeout=remaining, poll_interval=2)
        except FlowPauseTimeout:
            break
        problem = policy.approval_problem(answer.approver, p.requested_by, cfg.approvers)
        if problem is None:
            return answer
        logger.error("approval refused, nothing changed: %s", problem)
        p.decide("approval_refused", answer.approver.strip() or "(blank)", {"reason": problem, "approved": answer.approved})
        notice = f"> **The last answer was refused:** {problem}\n\n"
    return None


def roll_back(p: Promotion, reason: str) -> None:
    route(p, Routing())
    p.decide("canary_rolled_back", "slipway", {"reason": reason})


@task(cache_policy=NO_CACHE)
def canary(p: Promotion) -> comparison.Health | None:
    """Step traffic up; return the first unhealthy step (after rolling back), or None when all were healthy."""
    cfg = p.settings.promotion
    assert p.champion is not None
    for percent in cfg.canary_steps:
        errors_before = read_state(cfg.service_url).model_errors.get(p.challenger, 0.0)
        route(p, Routing(Mode.CANARY, percent))
        started = datetime.now(UTC)  # the step's window opens once the service routes this share
        p.decide("canary_step", "slipway", {"percent": percent, "bake_seconds": cfg.bake_seconds})
        watch(cfg.bake_seconds, f"canary v{p.challenger} at {percent}%", rows_with(p.challenger, "served_version", started))
        window = log_window(p, started)
        reported = read_state(cfg.service_url).model_errors.get(p.challenger, 0.0) - errors_before
        health = comparison.canary_health(window, p.champion, p.challenger, percent, cfg, int(reported))
        p.decide("canary_health", "slipway", health.as_dict())
        if not health.healthy:
            roll_back(p, "; ".join(health.problems))
            return health
    return None


@flow(name="promote")
def promote(params: str = "params.yaml", requested_by: str = "unknown", version: str | None = None) -> PromotionResult:
    """Take the challenger (or ``version``) through policy, shadow, approval and canary to champion."""
    settings = load_params(params)
    name = settings.registry.model_name
    audit = AuditLog(home().audit_log)
    challenger = version or registry.alias_version(name, registry.CHALLENGER)
    if challenger is None:
        raise RuntimeError(f"{name!r} has no 'challenger' alias and no version was given: train one first")
    champion = registry.alias_version(name, registry.CHAMPION)
    if challenger == champion:
        raise RuntimeError(f"{name!r} v{challenger} is already the champion")
    acquire(name, audit)
    p = Promotion(settings, challenger, champion, requested_by, audit)
    try:
        p.decide("promotion_requested", requested_by, {"champion": champion, "flow_run": _flow_run_id()})
        verdict = check_policy(p)
        p.decide("policy", "slipway", {"passed": verdict.passed, "reasons": verdict.reasons, **verdict.metrics})
        if not verdict.passed:
            return p.end("rejected", f"policy: {verdict.summary()}")
        report = "No champion yet: this version becomes the first one, so there is no live traffic to shadow or canary.\n"
        if champion is not None:
            shadowed = shadow(p)
            if not shadowed.passed:
                return p.end("rejected", "shadow: " + "; ".join(shadowed.problems))
            report = shadowed.to_markdown()
        answer = await_approval(p, report)
        if answer is None:
            return p.end("rejected", f"no valid approval within {settings.promotion.approval_timeout_seconds}s")
        p.decide("approved" if answer.approved else "approval_rejected", answer.approver, {"comment": answer.comment})
        if not answer.approved:
            return p.end("rejected", f"rejected by {answer.approver}: {answer.comment}", answer.approver)
        if champion is not None:
            failed = canary(p)
            if failed is not None:
                return p.end("rolled_back", f"canary at {failed.percent}%: " + "; ".join(failed.problems), answer.approver)
        reason = f"approved by {answer.approver} ({answer.comment or 'no comment'}), requested by {requested_by}"
        registry.switch_champion(name, challenger, answer.approver, audit, reason)
        if champion is not None:
            wait_for_service(settings.promotion.service_url, lambda s: s.champion == challenger, f"champion v{challenger}", 60)
        return p.end("promoted", reason, answer.approver)
    finally:
        if registry.current_routing(name).mode is not Mode.CHAMPION:  # any exit short of success: champion only
            registry.set_routing(name, Routing())
        release(name)
