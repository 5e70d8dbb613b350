"""Promote flow: policy → shadow → approval in the Prefect UI → canary → champion.

Every decision is appended to the audit log and written to the challenger's tags
(``models/promotion.py`` holds the mechanics). Any failed check routes traffic
back to the champion at once. Promotions of one model take turns through a
Prefect global concurrency limit (one leased slot, granted atomically by the
server). Shadow and canary routing carry a lease the flow renews while it lives:
a killed flow's routing lapses to champion only on every replica by itself, and
the next run, finding the dead run's lock tag, resets routing and audits the recovery.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from flows.common import home, load_params
from flows.events import announce, report_unverified
from flows.labelled import evaluation_window, latest_labels
from flows.stack import recorded_url
from models import comparison, decision, policy, registry
from models import promotion as steps
from models.promotion import Promotion, PromotionResult
from models.routing import Mode, Routing
from slipway.audit import AuditLog
from slipway.catalog import APPROVAL_EVENT, CHAMPION_EVENT, PROMOTION_EVENT_PREFIX
from slipway.orchestration import Busy, current_flow_run_id, exclusive
from slipway.service_metrics import every_replica, model_errors, wait_for_replicas
from slipway.settings import Settings


class Approval(RunInput):
    """The form an approver fills in to resume a paused promotion."""

    approver: str = Field(description="your name; it must be in promotion.approvers and differ from the requester")
    approved: bool = Field(description="tick to promote the challenger; leave unticked to reject it")
    comment: str = Field("", description="why; recorded in the audit log and on the model version")
    signature: str = Field(
        "", description="your signature of this answer: slipway approve RUN_ID --approver NAME --comment TEXT --sign-only"
    )

    def answer(self) -> policy.Answer:
        return policy.Answer(self.approver, self.approved, self.comment, self.signature)


def end(p: Promotion, outcome: str, reason: str, approver: str | None = None) -> PromotionResult:
    registry.record_decision(p.name, p.challenger, outcome, {"reason": reason})
    details = {"reason": reason, "champion_before": p.champion, "requested_by": p.requested_by}
    summary = f"Promotion of {p.name} v{p.challenger} {outcome.replace('_', ' ')}: {reason}"
    announce(f"{PROMOTION_EVENT_PREFIX}{outcome}", p.settings, p.challenger, summary, **details)
    if outcome == "promoted":
        was = f"v{p.champion}" if p.champion else "no champion"
        summary = f"Champion of {p.name} is now v{p.challenger} (was {was}): {reason}"
        announce(CHAMPION_EVENT, p.settings, p.challenger, summary, previous=p.champion, actor=approver)
    result = PromotionResult(p.name, p.challenger, p.champion, outcome, reason, approver)
    print(result.line())
    return result


@task(cache_policy=NO_CACHE)
def check_policy(p: Promotion) -> policy.PolicyVerdict:
    """Score both versions on the evaluation window (the newest, held-out slice of gold, read through Feast)."""
    return steps.judge_policy(p, evaluation_window(p.settings))


def route(p: Promotion, routing: Routing) -> None:
    """Change routing in the registry (leased) and wait until every replica follows it (the first switch loads the challenger)."""
    steps.set_leased_routing(p, routing)
    timeout = max(90.0, 10 * p.settings.serving.poll_seconds)
    what = f"{routing.mode} routing at {routing.canary_percent}%"
    wait_for_replicas(every_replica(p.settings.promotion), steps.applied(routing, p.challenger), what, timeout)


@task(cache_policy=NO_CACHE)
def shadow(p: Promotion) -> tuple[comparison.ShadowReport, str]:
    """Score the challenger on live traffic without serving it, then compare it with the champion (report, markdown)."""
    assert p.champion is not None
    cfg, predictions = p.settings.promotion, home().predictions
    route(p, Routing(Mode.SHADOW, version=p.challenger))
    started = datetime.now(UTC)  # the window opens once the service shadows
    p.decide("shadow_started", "slipway", {"seconds": cfg.shadow_seconds})
    steps.wait_with_progress(
        cfg.shadow_seconds, f"shadow v{p.challenger}", steps.rows_with(predictions, p.challenger, "shadow_version", started)
    )
    window = steps.log_window(predictions, started, p.settings.serving.log_flush_seconds)
    latency = steps.replay_latency(p.name, (p.champion, p.challenger), window, p.settings.data.features)
    labels, top_k = latest_labels(p.settings), p.settings.train.top_k_fraction
    report = comparison.shadow_report(window, p.champion, p.challenger, labels, latency, cfg, top_k)
    plot = steps.record_scores_plot(p, window, started, recorded_url(home(), "mlflow"))
    markdown = report.to_markdown(plot)
    create_markdown_artifact(key="shadow-report", markdown=markdown, description=f"v{p.challenger} vs v{p.champion}")
    steps.record_report(p.name, p.challenger, markdown, report.as_dict(), started)
    p.decide("shadow_report", "slipway", report.as_dict())
    return report, markdown


def await_approval(p: Promotion, report_markdown: str, deadline: float, already: list[str]) -> Approval | None:
    """Pause until a valid answer arrives (from an approver not in ``already``); None when nobody answers in time."""
    cfg = p.settings.promotion
    notice, run_id = "", current_flow_run_id()
    done = ", ".join(already)
    while (remaining := int(deadline - time.monotonic())) > 0:
        description = steps.approval_form_text(p, run_id, report_markdown, notice, done)
        form = Approval.with_initial_data(description=description, approver="", approved=False, comment="", signature="")
        p.decide("approval_requested", p.requested_by, {"timeout_seconds": remaining, "approved_by": already})
        approvers = ", ".join(cfg.approvers) or "(none configured)"
        needs = "" if p.request.verified else f"; unsigned request: two approvers needed{f', {done} approved' if done else ''}"
        summary = (
            f"{p.name} v{p.challenger} waits for approval (requested by {p.requested_by}{needs}; approvers: {approvers}). "
            "Approve or reject it, signed, in the form on its run page or with "
            f"`slipway approve {run_id} --approver NAME --comment TEXT [--reject]`"
        )
        announce(APPROVAL_EVENT, p.settings, p.challenger, summary, requested_by=p.requested_by, approvers=cfg.approvers)
        try:
            answer = pause_flow_run(wait_for_input=form, timeout=remaining, poll_interval=2)
        except FlowPauseTimeout:
            break
        problem = policy.approval_problem(answer.answer(), run_id, p.requested_by, cfg, already)
        if problem is None:
            return answer
        print(f"approval refused, nothing changed: {problem}")
        p.decide("approval_refused", answer.approver.strip() or "(blank)", {"reason": problem, "approved": answer.approved})
        notice = f"> **The last answer was refused:** {problem}\n\n"
    return None


def approvals(p: Promotion, report_markdown: str) -> tuple[list[str], Approval | None]:
    """Collect the answers four eyes need: one approver besides a verified requester, else two.

    Returns who approved and the deciding answer: the last approval, a rejection (which ends
    it), or None when the approvals did not all arrive within ``approval_timeout_seconds``.
    """
    deadline, approved = time.monotonic() + p.settings.promotion.approval_timeout_seconds, list[str]()
    while True:
        answer = await_approval(p, report_markdown, deadline, approved)
        if answer is None:
            return approved, None
        needed = p.request.approvals_needed
        event = "approved" if answer.approved else "approval_rejected"
        p.decide(event, answer.approver, {"comment": answer.comment, "approval": len(approved) + 1, "needed": needed})
        if not answer.approved:
            return approved, answer
        approved.append(answer.approver.strip())
        if len(approved) >= needed:
            return approved, answer


@task(cache_policy=NO_CACHE)
def canary(p: Promotion) -> comparison.Health | None:
    """Step traffic up; return the first unhealthy step (after rolling back), or None when all were healthy."""
    cfg, predictions = p.settings.promotion, home().predictions
    assert p.champion is not None
    for percent in cfg.canary_steps:
        errors_before = model_errors(every_replica(cfg), p.challenger)
        route(p, Routing(Mode.CANARY, percent, p.challenger))
        started = datetime.now(UTC)  # the step's window opens once the service routes this share
        p.decide("canary_step", "slipway", {"percent": percent, "bake_seconds": cfg.bake_seconds})
        counter = steps.rows_with(predictions, p.challenger, "served_version", started)
        steps.wait_with_progress(cfg.bake_seconds, f"canary v{p.challenger} at {percent}%", counter)
        window = steps.log_window(predictions, started, p.settings.serving.log_flush_seconds)
        reported = model_errors(every_replica(cfg), p.challenger) - errors_before
        health = comparison.canary_health(window, p.champion, p.challenger, percent, cfg, int(reported))
        p.decide("canary_health", "slipway", health.as_dict())
        if not health.healthy:
            route(p, Routing())
            p.decide("canary_rolled_back", "slipway", {"reason": "; ".join(health.problems)})
            return health
    return None


@flow(name="promote", log_prints=True)
def promote(
    params: str = "params.yaml", requested_by: str = "unknown", version: str | None = None, request_signature: str = ""
) -> PromotionResult:
    """Take the challenger (or ``version``) through policy, shadow, approval and canary to champion.

    ``request_signature`` proves who requests (``slipway run promote`` signs it with ``SLIPWAY_APPROVER_KEY``);
    without it the request is unverified and two approvers must approve.
    """
    settings = load_params(params)
    name = settings.registry.model_name
    audit = registry.audit_log(home().audit_log, name)
    challenger = version or registry.alias_version(name, registry.CHALLENGER)
    if challenger is None:
        raise RuntimeError(f"{name!r} has no 'challenger' alias and no version was given: train one first")
    decision.signer(settings.promotion.decision_key)  # a switch the service would not follow is never started
    try:
        champion = registry.served_champion(name, settings.promotion.decision_key)
    except registry.RegistryTampered as exc:
        report_unverified(settings, audit, [str(exc)], "promote")
        raise
    if challenger == champion:
        raise RuntimeError(f"{name!r} v{challenger} is already the champion")
    steps.refuse_during_watch(name, champion, audit)
    busy = f"promotions of {name!r}"
    try:
        with exclusive(f"slipway-promote-{name}", settings.promotion.routing_lease_seconds, what=busy):
            request = steps.checked_request(name, settings.promotion, version, requested_by, request_signature, audit, challenger)
            return take_through(settings, challenger, champion, requested_by, audit, request, request_signature)
    except Busy as exc:  # another promotion of this model is running: this one never started
        audit.append("promotion_refused", requested_by, name, challenger, {"reason": str(exc), "flow_run": current_flow_run_id()})
        raise


def take_through(
    settings: Settings,
    challenger: str,
    champion: str | None,
    requested_by: str,
    audit: AuditLog,
    request: policy.RequestCheck,
    request_signature: str,
) -> PromotionResult:
    """Policy, shadow, approval, canary and the switch, holding the model's lock tag (the only promotion running)."""
    name = settings.registry.model_name
    steps.acquire_lock(name, current_flow_run_id(), audit)
    p = Promotion(settings, challenger, champion, requested_by, audit, request)
    try:
        with steps.LeaseRenewer(p):  # shadow and canary routing lapse on their own if this process dies
            signed = {"request": steps.request_digest(request_signature)} if request.verified else {}
            details = {"champion": champion, "flow_run": current_flow_run_id(), "verified_by": request.by, **signed}
            p.decide("promotion_requested", requested_by, details)
            verdict = check_policy(p)
            p.decide("policy", "slipway", {"passed": verdict.passed, "reasons": verdict.reasons, **verdict.metrics})
            if not verdict.passed:
                return end(p, "rejected", f"policy: {verdict.summary()}")
            report = "No champion yet: this version becomes the first one: there is no live traffic to shadow or canary.\n"
            if champion is not None:
                shadowed, report = shadow(p)
                if not shadowed.passed:
                    return end(p, "rejected", "shadow: " + "; ".join(shadowed.problems))
            approved, answer = approvals(p, report)
            if answer is None:
                within = f"within {settings.promotion.approval_timeout_seconds}s"
                got = f" ({len(approved)} of {request.approvals_needed}: {', '.join(approved)})" if approved else ""
                return end(p, "rejected", f"no valid approval {within}{got}")
            if not answer.approved:
                return end(p, "rejected", f"rejected by {answer.approver}: {answer.comment}", answer.approver)
            deciders = " and ".join(approved)
            if champion is not None and (failed := canary(p)) is not None:
                return end(p, "rolled_back", f"canary at {failed.percent}%: " + "; ".join(failed.problems), deciders)
            requester = requested_by if request.verified else f"{requested_by} (unverified)"
            reason = f"approved by {deciders} ({answer.comment or 'no comment'}), requested by {requester}"
            registry.switch_champion(name, challenger, deciders, audit, reason)
            if champion is not None:
                every = every_replica(settings.promotion)
                wait_for_replicas(every, lambda s: s.champion == challenger, f"champion v{challenger}", 60)
            steps.open_watch(p)
            return end(p, "promoted", reason, deciders)
    finally:
        steps.release_lock(name)
