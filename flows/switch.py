"""Switch flow: the break-glass path, a champion set directly by an operator who holds the promotion key.

For the first champion of a new model, or an emergency that cannot wait for shadow
and canary. It is signed and audited like every other decision, takes its turn with
promotions of the same model, and refuses a version whose model cannot be loaded.
"""

from __future__ import annotations

from prefect import flow

from flows.common import home, load_params
from flows.events import announce
from models import decision, registry
from models import watch as watching
from slipway.catalog import CHAMPION_EVENT
from slipway.orchestration import exclusive
from slipway.service_metrics import every_replica, wait_for_replicas


@flow(name="switch", log_prints=True)
def switch(params: str = "params.yaml", version: str = "", reason: str = "", requested_by: str = "unknown") -> str:
    """Make ``version`` the champion now, without shadow or canary; ``reason`` goes to the audit log."""
    settings = load_params(params)
    name = settings.registry.model_name
    if not version.isdigit():
        raise ValueError(f"version={version!r}: give the registered version of {name!r} to make champion (version=N)")
    if not reason.strip():
        raise ValueError("reason=TEXT: say why the champion is switched without promotion; it is audited")
    key = decision.signer(settings.promotion.decision_key)
    if key is None:
        print("warning: promotion.decision_key is not set: this switch is not signed, and neither is anything served")
    try:
        registry.load_scorer(name, version)  # a champion that cannot be loaded would take every replica down
    except Exception as exc:
        raise RuntimeError(f"{name!r} v{version} cannot be loaded, so it is not made champion: {exc}") from exc
    audit = registry.audit_log(home().audit_log, name)
    with exclusive(f"slipway-promote-{name}", settings.promotion.routing_lease_seconds, what=f"promotions of {name!r}"):
        previous = registry.switch_champion(name, version, requested_by, audit, f"break-glass switch: {reason}")
        if (open_watch := watching.read_watch(name)) is not None and open_watch.version != version:
            watching.close_watch(name, open_watch, audit, "watch_ended", {"reason": f"switched to v{version}: {reason}"})
    summary = f"Champion of {name} is now v{version} (was v{previous}): break-glass switch by {requested_by}: {reason}"
    announce(CHAMPION_EVENT, settings, version, summary, previous=previous, actor=requested_by)
    try:
        every = every_replica(settings.promotion)
        wait_for_replicas(every, lambda s: s.champion == version, f"champion v{version}", 60)
        print(f"champion={version}: every replica serves it ({', '.join(every)})")
    except RuntimeError as exc:  # unreachable, or not confirmed in time
        print(f"champion={version}: switched in the registry; the service has not confirmed it: {exc}")
    return version
