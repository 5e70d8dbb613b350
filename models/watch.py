"""The post-deployment watch: a new champion watched beside the one it replaced.

The open watch lives on the registered model as a tag (JSON), next to the aliases
and the routing record, so any guard run (a resumed one, or a new one after a
crash) picks it up where the last left off. While it is open the routing record
shadows the previous champion, so both are scored on the same live rows.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta

from mlflow import MlflowClient

from models import registry
from models.routing import Mode, Routing
from slipway.audit import AuditLog

WATCH_TAG = "slipway.watch"
GUARD_TAG = "slipway.watch.flow_run"  # the guard run that holds the watch
GUARD_ACTOR = "slipway-guard"


@dataclass(frozen=True)
class Watch:
    version: str  # the new champion
    previous: str  # the champion it replaced, scored in shadow meanwhile
    started: datetime
    until: datetime
    checked_until: datetime  # the end of the last window a check judged
    checks: int = 0
    errors_seen: float = 0.0  # the service's error counter for ``version`` at the last check

    def routing(self) -> Routing:
        return Routing(Mode.SHADOW, version=self.previous)

    def to_tag(self) -> str:
        return json.dumps({k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()})

    @classmethod
    def from_tag(cls, text: str) -> Watch:
        raw = json.loads(text)
        times = {k: datetime.fromisoformat(raw[k]) for k in ("started", "until", "checked_until")}
        return cls(
            str(raw["version"]),
            str(raw["previous"]),
            **times,
            checks=int(raw.get("checks", 0)),
            errors_seen=float(raw.get("errors_seen", 0.0)),
        )


def _tags(name: str) -> dict[str, str]:
    return dict(MlflowClient().get_registered_model(name).tags or {})


def read_watch(name: str) -> Watch | None:
    """The model's open watch, or None; a record that cannot be read is an error naming the tag."""
    text = _tags(name).get(WATCH_TAG)
    if not text:
        return None
    try:
        return Watch.from_tag(text)
    except (ValueError, KeyError, TypeError) as exc:
        problem = f"{name!r}: the registered-model tag {WATCH_TAG!r} is not a watch record ({exc})"
        raise RuntimeError(f"{problem}: {text[:200]}") from exc


def open_watch(name: str, version: str, previous: str, seconds: float, audit: AuditLog) -> Watch:
    """Start watching ``version`` (just made champion) with ``previous`` in shadow; audited before routing changes."""
    now = datetime.now(UTC)
    watch = Watch(version, previous, now, now + timedelta(seconds=seconds), now)
    audit.append("watch_started", GUARD_ACTOR, name, version, {"previous": previous, "until": watch.until.isoformat()})
    MlflowClient().set_registered_model_tag(name, WATCH_TAG, watch.to_tag())
    registry.set_routing(name, watch.routing())
    return watch


def record_check(name: str, watch: Watch, checked_until: datetime, errors_seen: float) -> Watch:
    """The watch after one more check, saved so a later guard continues from here."""
    updated = replace(watch, checked_until=checked_until, checks=watch.checks + 1, errors_seen=errors_seen)
    MlflowClient().set_registered_model_tag(name, WATCH_TAG, updated.to_tag())
    return updated


def close_watch(name: str, watch: Watch, audit: AuditLog, event: str, details: dict[str, object]) -> None:
    """End the watch: audited first, then the previous champion leaves the shadow (if it still is the watch's)."""
    audit.append(event, GUARD_ACTOR, name, watch.version, {"previous": watch.previous, "checks": watch.checks, **details})
    if registry.current_routing(name) == watch.routing():
        registry.set_routing(name, Routing())
    client, present = MlflowClient(), _tags(name)
    for tag in (WATCH_TAG, GUARD_TAG):
        if tag in present:
            client.delete_registered_model_tag(name, tag)


@dataclass(frozen=True)
class Hold:
    """Which guard run holds the watch, and when it last renewed its lease."""

    run_id: str
    renewed: datetime

    def expired(self, lease_seconds: float, now: datetime | None = None) -> bool:
        return (now or datetime.now(UTC)) - self.renewed > timedelta(seconds=lease_seconds)


def guard_hold(name: str) -> Hold | None:
    text = _tags(name).get(GUARD_TAG)
    try:
        raw = json.loads(text) if text else None
        return Hold(str(raw["run"]), datetime.fromisoformat(raw["renewed"])) if raw else None
    except (ValueError, KeyError, TypeError):
        return None  # unreadable: nobody holds it


def hold(name: str, run_id: str) -> None:
    """Take or renew the hold; a guard renews it while it waits, so a killed guard's hold lapses."""
    value = json.dumps({"run": run_id, "renewed": datetime.now(UTC).isoformat()})
    MlflowClient().set_registered_model_tag(name, GUARD_TAG, value)


def release(name: str, run_id: str) -> None:
    """Drop the hold if it is still this run's."""
    held = guard_hold(name)
    if held is not None and held.run_id == run_id:
        MlflowClient().delete_registered_model_tag(name, GUARD_TAG)
