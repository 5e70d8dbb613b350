"""Guard flow: watch a new champion beside the one it replaced, and roll back at once if it fails a check.

The promote flow opens the watch when it switches the champion (``models/watch.py``);
an automation starts this flow on each promotion, and its hourly schedule starts
one again if a guard died, which then takes over the open watch where the last
check left off. Every ``promotion.watch.interval_seconds`` the new champion is
judged on the live rows since the last check (``models.comparison.watch_check``);
a failed check restores the previous champion, a watch that runs its course ends
the shadow. Both are audited, announced and alerted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from prefect import flow

from flows.common import home, load_params
from flows.events import announce_rollback
from flows.labelled import latest_labels
from models import comparison, decision
from models import watch as watching
from models.registry import CHAMPION, alias_version, audit_log, rollback_champion
from models.watch import GUARD_ACTOR, Watch
from slipway.audit import AuditLog
from slipway.orchestration import current_flow_run_id, flow_run_alive
from slipway.prediction_log import read_prediction_log
from slipway.service_metrics import ServiceUnreachable, every_replica, model_errors, wait_for_replicas
from slipway.settings import Settings

RENEW_SECONDS = 10.0  # the guard renews its hold at least this often while it waits
CHECK_COLUMNS = ["time", "entity", "served_version", "score", "shadow_version", "shadow_score", "latency_ms", "error"]


@dataclass(frozen=True)
class GuardResult:
    model_name: str
    version: str | None
    outcome: str  # passed, rolled_back, ended, guarded_elsewhere or idle
    reason: str

    @property
    def refused(self) -> bool:  # exit 4, like a rolled-back promotion
        return self.outcome == "rolled_back"

    def line(self) -> str:
        what = f"{self.model_name} v{self.version}" if self.version else self.model_name
        return f"guard {self.outcome}: {what}: {self.reason}"


def check(settings: Settings, w: Watch, until: datetime) -> tuple[comparison.WatchCheck, float]:
    """Judge the rows logged since the last check; returns the check and the service's error counter now."""
    predictions = home().predictions
    since_start = read_prediction_log(predictions, w.started, CHECK_COLUMNS)
    window = since_start[(since_start["time"] >= w.checked_until) & (since_start["time"] < until)]
    try:
        errors_now = model_errors(every_replica(settings.promotion), w.version)
    except ServiceUnreachable as exc:
        print(f"error counter not read ({exc}); judging the log's errors only")
        errors_now = w.errors_seen
    reported = max(0, int(errors_now - w.errors_seen))  # a restarted service starts its counter at 0
    verdict = comparison.watch_check(
        window, since_start, latest_labels(settings), w.version, w.previous, settings.promotion.watch, reported
    )
    return verdict, errors_now


def roll_back(settings: Settings, w: Watch, audit: AuditLog, verdict: comparison.WatchCheck) -> GuardResult:
    """Restore the previous champion (the decision audited before the switch) and tell people."""
    name, reason = settings.registry.model_name, "; ".join(verdict.problems)
    audit.append("watch_failed", GUARD_ACTOR, name, w.version, {"previous": w.previous, **verdict.as_dict()})
    restored = rollback_champion(name, GUARD_ACTOR, audit, f"post-deployment check failed: {reason}")
    watching.close_watch(name, w, audit, "watch_rolled_back", {"restored": restored, "reason": reason})
    try:
        wait_for_replicas(every_replica(settings.promotion), lambda s: s.champion == restored, f"champion v{restored}", 60)
    except (RuntimeError, ServiceUnreachable) as exc:
        print(f"the rollback is in the registry, but the service has not confirmed it yet: {exc}")
    announce_rollback(settings, w.version, restored, GUARD_ACTOR, f"post-deployment check failed: {reason}")
    return GuardResult(name, w.version, "rolled_back", f"restored v{restored}: {reason}")


def take_hold(settings: Settings, w: Watch, audit: AuditLog, run_id: str) -> str | None:
    """Hold the watch for this run; the reason not to when a live guard already holds it."""
    name, lease = settings.registry.model_name, settings.promotion.watch.lease_seconds
    held = watching.guard_hold(name)
    if held is not None and held.run_id != run_id:
        if not held.expired(lease) and flow_run_alive(held.run_id):
            return f"guard run {held.run_id} holds the watch (renewed {held.renewed:%H:%M:%S} UTC)"
        audit.append("watch_resumed", GUARD_ACTOR, name, w.version, {"dead_guard": held.run_id, "checks_so_far": w.checks})
        print(f"taking over the watch of v{w.version} from guard run {held.run_id}, which stopped renewing it")
    watching.hold(name, run_id)
    return None


@flow(name="guard", log_prints=True)
def guard(params: str = "params.yaml") -> GuardResult:
    """Watch the newest champion beside the one it replaced; roll back at once when a check fails."""
    settings = load_params(params)
    decision.signer(settings.promotion.decision_key)  # a rollback it may make must be signed to be served
    name, cfg = settings.registry.model_name, settings.promotion.watch
    audit = audit_log(home().audit_log, name)
    w = watching.read_watch(name)
    if w is None:
        return GuardResult(name, None, "idle", "no post-deployment watch is open")
    run_id = current_flow_run_id()
    if (busy := take_hold(settings, w, audit, run_id)) is not None:
        return GuardResult(name, w.version, "guarded_elsewhere", busy)
    print(f"watching v{w.version} beside v{w.previous} until {w.until:%Y-%m-%d %H:%M:%S} UTC, every {cfg.interval_seconds:g}s")
    try:
        while True:
            current = watching.read_watch(name)
            champion = alias_version(name, CHAMPION)
            if current is None or current.version != w.version:
                return GuardResult(name, w.version, "ended", "the watch was closed outside this guard")
            w = current
            if champion != w.version:
                reason = f"the champion is now v{champion}, set outside the guard"
                watching.close_watch(name, w, audit, "watch_ended", {"reason": reason})
                return GuardResult(name, w.version, "ended", reason)
            now = datetime.now(UTC)
            due = min(w.checked_until.timestamp() + cfg.interval_seconds, w.until.timestamp())
            if now.timestamp() < due:
                time.sleep(min(RENEW_SECONDS, due - now.timestamp()))
                watching.hold(name, run_id)
                continue
            time.sleep(2 * settings.serving.log_flush_seconds)  # the window's last rows reach the log
            verdict, errors_now = check(settings, w, now)
            w = watching.record_check(name, w, now, errors_now)
            audit.append("watch_check", GUARD_ACTOR, name, w.version, {"check": w.checks, **verdict.as_dict()})
            print(f"check {w.checks} of v{w.version}: {verdict.summary()}" + ("" if verdict.healthy else " — FAILED"))
            if not verdict.healthy:
                return roll_back(settings, w, audit, verdict)
            if now >= w.until:
                watching.close_watch(name, w, audit, "watch_passed", {"rows_last_check": verdict.rows})
                return GuardResult(name, w.version, "passed", f"{w.checks} checks passed; v{w.previous} left the shadow")
    finally:
        watching.release(name, run_id)
