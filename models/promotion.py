"""The mechanics of a promotion, so the promote flow reads as its steps.

Who asked for what and where each decision goes (:class:`Promotion`), the model's
promotion lock, what the service must report for a routing to count as applied,
the prediction-log windows a step is judged on, and the latency replay.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from models import plots, policy, registry, training
from models import watch as watching
from models.routing import Mode, Routing
from slipway.audit import AuditLog
from slipway.errors import Refused
from slipway.prediction_log import feature_frame, read_prediction_log
from slipway.service_metrics import ServiceUnreachable, ServingState, every_replica, wait_for_replicas
from slipway.settings import PromotionSettings, Settings

LOCK_TAG = "slipway.promotion.flow_run"
REPLAY_ROWS = 300  # logged rows each version is timed on, one at a time


@dataclass(frozen=True)
class PromotionResult:
    model_name: str
    challenger: str
    champion_before: str | None
    outcome: str  # promoted, rejected or rolled_back
    reason: str
    approver: str | None = None

    @property
    def refused(self) -> bool:
        return self.outcome != "promoted"

    def line(self) -> str:
        return f"promotion {self.outcome}: {self.model_name} v{self.challenger}: {self.reason}"


@dataclass
class Promotion:
    """The promotion in progress: who asked for what, and where its decisions go."""

    settings: Settings
    challenger: str
    champion: str | None
    requested_by: str
    audit: AuditLog
    request: policy.RequestCheck = policy.UNSIGNED

    @property
    def name(self) -> str:
        return self.settings.registry.model_name

    def decide(self, event: str, actor: str, details: dict[str, Any]) -> None:
        """One decision: appended to the audit log and put on the challenger's tags."""
        self.audit.append(event, actor, self.name, self.challenger, details)
        tags = {event: json.dumps(details, default=str, sort_keys=True)}
        registry.record_decision(self.name, self.challenger, event, tags)


def request_digest(signature: str) -> str:
    """How the audit log names a signed request (so that it is used once)."""
    return hashlib.sha256(signature.strip().encode()).hexdigest()[:32]


def checked_request(
    name: str, cfg: PromotionSettings, version: str | None, requested_by: str, signature: str, audit: AuditLog, challenger: str
) -> policy.RequestCheck:
    """Who asked, verified: a signature that does not verify, is stale or was used before is refused and audited."""
    check = policy.check_request(name, version, requested_by, signature, cfg, datetime.now(UTC))
    if check.verified:
        digest = request_digest(signature)
        used = [e for e in audit.entries() if e["event"] == "promotion_requested" and e["details"].get("request") == digest]
        if used:
            check = policy.RequestCheck(
                False, "", f"this signed request started promotion run {used[0]['details'].get('flow_run')} already"
            )
    if check.problem is not None:
        audit.append("request_refused", requested_by.strip() or "(blank)", name, challenger, {"reason": check.problem})
        raise Refused(f"promotion request refused: {check.problem}")
    return check


def acquire_lock(name: str, run_id: str, audit: AuditLog) -> None:
    """Take the model's lock tag; reset routing left behind by a run that died.

    Called only while holding the model's promotion slot (``slipway.orchestration.exclusive``),
    which the server grants to one run at a time: another run's lock tag is one that
    died (killed, crashed, its machine gone) without releasing it.
    """
    client = MlflowClient()
    holder = (client.get_registered_model(name).tags or {}).get(LOCK_TAG)
    if holder and holder != run_id:
        left = registry.current_routing(name)
        registry.set_routing(name, Routing())
        audit.append("promotion_recovered", "slipway", name, None, {"dead_run": holder, "routing_was": left.mode})
    client.set_registered_model_tag(name, LOCK_TAG, run_id)


def release_lock(name: str) -> None:
    """Leave champion-only routing behind (any exit short of success, or a watch's shadow) and drop the lock."""
    routing, watch = registry.current_routing(name), watching.read_watch(name)
    if routing.mode is not Mode.CHAMPION and (watch is None or routing != watch.routing()):
        registry.set_routing(name, Routing())
    MlflowClient().delete_registered_model_tag(name, LOCK_TAG)


ROUTING_LOCK = threading.Lock()  # the flow's routing writes and its lease renewals never interleave


def set_leased_routing(p: Promotion, routing: Routing) -> None:
    """Write a routing record for this promotion, leased for ``promotion.routing_lease_seconds``."""
    with ROUTING_LOCK:
        leased = routing.leased(p.settings.promotion.routing_lease_seconds) if routing.mode is not Mode.CHAMPION else routing
        registry.set_routing(p.name, leased)


class LeaseRenewer:
    """Renews the lease of this promotion's routing record while the flow's process lives (through approval pauses).

    Killed with the process, it stops; the lease then runs out and every replica
    serves the champion only, with nobody cancelling anything by hand.
    """

    def __init__(self, p: Promotion) -> None:
        self.p, self._stop = p, threading.Event()
        self._thread = threading.Thread(target=self._run, name="routing-lease", daemon=True)

    def __enter__(self) -> LeaseRenewer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        seconds = self.p.settings.promotion.routing_lease_seconds
        while not self._stop.wait(seconds / 4):
            try:
                with ROUTING_LOCK:
                    routing = registry.current_routing(self.p.name)
                    if routing.lease_until is not None and routing.version == self.p.challenger:
                        registry.renew_routing_lease(self.p.name, routing.leased(seconds))
            except Exception as exc:  # noqa: BLE001 - a registry hiccup must not end the promotion; the next round retries
                print(f"routing lease not renewed this time: {type(exc).__name__}: {exc}")


def applied(routing: Routing, second: str) -> Callable[[ServingState], bool]:
    """What the service must report for ``routing`` of ``second`` (the challenger, or a watched previous champion)."""
    if routing.mode is Mode.CHAMPION:
        return lambda s: s.challenger is None
    return lambda s: (
        s.challenger == second and s.shadow == (routing.mode is Mode.SHADOW) and s.canary_percent == routing.canary_percent
    )


def refuse_during_watch(name: str, champion: str | None, audit: AuditLog) -> None:
    """A promotion waits for the post-deployment watch of the current champion; a stale watch is closed."""
    watch = watching.read_watch(name)
    if watch is None:
        return
    if watch.version == champion:
        raise Refused(
            f"{name!r} v{watch.version} is under its post-deployment watch until {watch.until:%Y-%m-%d %H:%M} UTC "
            f"(v{watch.previous} in shadow); promote once the guard ends it, or roll back"
        )
    watching.close_watch(name, watch, audit, "watch_ended", {"reason": f"the champion is v{champion}, not the watched one"})


def open_watch(p: Promotion) -> None:
    """After a switch: the previous champion scored in shadow beside the new one until the guard ends it."""
    cfg = p.settings.promotion
    if p.champion is None or cfg.watch.seconds <= 0:
        return
    watch = watching.open_watch(p.name, p.challenger, p.champion, cfg.watch.seconds, p.audit)
    try:
        wait_for_replicas(every_replica(cfg), applied(watch.routing(), p.champion), f"shadow of v{p.champion}", 60)
    except (RuntimeError, ServiceUnreachable) as exc:  # the switch stands; the guard judges what the log shows
        print(f"the service has not confirmed the watch's shadow yet: {exc}")
    print(
        f"post-deployment watch: v{p.champion} scored in shadow beside v{p.challenger} until "
        f"{watch.until:%Y-%m-%d %H:%M:%S} UTC; the guard flow checks it every {cfg.watch.interval_seconds:g}s"
    )


def wait_with_progress(seconds: float, what: str, count: Callable[[], int], every: float = 10.0) -> None:
    """Wait ``seconds``, printing how many rows have arrived every ``every`` seconds."""
    started = time.monotonic()
    while (left := seconds - (time.monotonic() - started)) > 0:
        time.sleep(min(every, left))
        print(f"{what}: {min(seconds, time.monotonic() - started):.0f}/{seconds:.0f}s, {count()} rows so far")


def rows_with(predictions: Path, version: str, column: str, since: datetime) -> Callable[[], int]:
    """A progress counter: logged rows since ``since`` whose ``column`` names ``version``."""
    return lambda: int((read_prediction_log(predictions, since, [column])[column].astype(str) == version).sum())


def log_window(predictions: Path, since: datetime, flush_seconds: float) -> pd.DataFrame:
    """The prediction log since ``since``, once the service's writer has flushed the window's tail."""
    time.sleep(2 * flush_seconds)
    return read_prediction_log(predictions, since)


def replay_latency(
    name: str, versions: tuple[str, str], window: pd.DataFrame, features: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row scoring time (ms) of both versions on the same logged rows."""
    logged = feature_frame(window.head(REPLAY_ROWS), features)
    rows: list[dict[str, Any]] = [
        {str(k): v for k, v in row.items()} for row in logged.astype(object).where(logged.notna(), None).to_dict("records")
    ]
    out = []
    for version in versions:
        scorer = registry.load_scorer(name, version)
        times = []
        for row in rows:
            started = time.perf_counter()
            scorer.predict([row])
            times.append((time.perf_counter() - started) * 1000)
        out.append(np.asarray(times))
    return out[0], out[1]


def record_scores_plot(p: Promotion, window: pd.DataFrame, started: datetime, ui_url: str | None) -> str | None:
    """Both versions' scores on the shadowed rows as a histogram on the challenger's MLflow run; a link to it."""
    client = MlflowClient()
    run_id = client.get_model_version(p.name, p.challenger).run_id
    if not run_id:
        return None
    both = window[(window["shadow_version"].astype(str) == p.challenger) & window["shadow_score"].notna()]
    scores = {f"v{p.champion} (champion)": both["score"].to_numpy(float)}
    scores[f"v{p.challenger} (challenger)"] = both["shadow_score"].to_numpy(float)
    path = f"promotion/shadow_scores_{started:%Y%m%dT%H%M%S}.png"
    client.log_figure(run_id, plots.score_distributions(scores), path)
    run = client.get_run(run_id)
    if ui_url:
        return f"{ui_url.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}/artifacts/{path}"
    return f"{run.info.artifact_uri}/{path}"


def record_report(name: str, version: str, markdown: str, report: dict[str, Any], started: datetime) -> None:
    """The shadow report as MLflow artifacts on the version's run."""
    client = MlflowClient()
    run_id = client.get_model_version(name, version).run_id
    if run_id:
        client.log_text(run_id, markdown, f"promotion/shadow_report_{started:%Y%m%dT%H%M%S}.md")
        client.log_dict(run_id, report, f"promotion/shadow_report_{started:%Y%m%dT%H%M%S}.json")


def judge_policy(p: Promotion, window: training.Part) -> policy.PolicyVerdict:
    """Both versions score the window by fits that have not seen it; the policy compares them overall and per slice.

    The window is the challenger's test window. Each version is represented by its
    evaluation fit (fitted before its own test window, which the registered fit then
    learnt from); a version without one is scored by its registered model.
    """
    x, y = window.X[p.settings.data.features], np.asarray(window.y, dtype=int)

    def score(version: str) -> np.ndarray:
        model = mlflow.pyfunc.load_model(registry.held_out_model_uri(p.name, version))
        return np.asarray(model.predict(x), dtype=float)

    return policy.evaluate(y, score(p.challenger), score(p.champion) if p.champion else None, x, p.settings.promotion)


def approval_form_text(p: Promotion, run_id: str, report_markdown: str, notice: str, done: str = "") -> str:
    """The markdown the Prefect UI shows above the approval form, with how to sign an answer."""
    approvers = ", ".join(p.settings.promotion.approvers) or "(none configured)"
    sign = f"slipway approve {run_id} --approver NAME --comment TEXT [--reject] --sign-only"
    if p.request.verified:
        who = f"Requested by **{p.requested_by}** (signed with {p.request.by}); one approver other than the requester decides."
    else:
        who = (
            f"Requested as **{p.requested_by}**, not verified (the request is not signed), so two different "
            f"approvers must approve{f': {done} approved so far' if done else ''}."
        )
    return (
        f"{notice}# Promote {p.name} v{p.challenger} to champion?\n\n"
        f"{who} Approvers: {approvers}; the requester cannot approve.\n\n"
        f"Answers are signed with the approver's key (`SLIPWAY_APPROVER_KEY`): paste the output of `{sign}` "
        "into the signature field, with the same name, decision and comment; or drop `--sign-only` to answer "
        f"from the terminal.\n\n{report_markdown}"
    )
