"""Names both sides of the platform agree on: the flows, their deployments and the events.

Kept in the bottom layer so the CLI, the stack, the automations and the flows that
emit the events can all import them downwards, without importing each other.
"""

from __future__ import annotations

FLOWS = (
    "ingest",
    "materialize",
    "train",
    "promote",
    "package",
    "monitor",
    "retrain",
    "rollback",
    "pipeline",
    "score",
    "guard",
    "switch",
)

DRIFT_EVENT = "slipway.drift.detected"
DEGRADED_EVENT = "slipway.performance.degraded"
BUSINESS_EVENT = "slipway.business.degraded"
PROMOTION_EVENT_PREFIX = "slipway.promotion."  # + promoted, rejected or rolled_back
APPROVAL_EVENT = "slipway.promotion.awaiting_approval"
ROLLED_BACK_EVENT = "slipway.promotion.rolled_back"
CHAMPION_EVENT = "slipway.champion.changed"
PROMOTED_EVENT = "slipway.promotion.promoted"
TAMPERED_EVENT = "slipway.registry.unverified"  # the registry holds a champion or routing that was not signed
SERVING_EVENT = "slipway.serving.degraded"  # a replica does not serve the champion (it cannot load it) or does not answer
RETRAIN_EVENTS = (DRIFT_EVENT, DEGRADED_EVENT, BUSINESS_EVENT)
FLOW_RUN_FAILED_EVENTS = ("prefect.flow-run.Failed", "prefect.flow-run.Crashed")

# What people are told about, by alert kind: (title, the events that raise it).
ALERTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "drift": ("drift detected", (DRIFT_EVENT,)),
    "performance": ("performance degraded", (DEGRADED_EVENT,)),
    "business": ("business metric degraded", (BUSINESS_EVENT,)),
    "approval": ("promotion waiting for approval", (APPROVAL_EVENT,)),
    "rollback": ("rolled back", (ROLLED_BACK_EVENT,)),
    "champion": ("champion changed", (CHAMPION_EVENT,)),
    "registry": ("registry changed outside Slipway", (TAMPERED_EVENT,)),
    "serving": ("replicas do not serve the champion", (SERVING_EVENT,)),
    "flow-run": ("flow run failed", FLOW_RUN_FAILED_EVENTS),
}


def deployment_name(flow: str) -> str:
    """The ``flow/deployment`` name every flow is deployed under."""
    return f"{flow}/{flow}"


def model_resource(model_name: str, version: str | None = None) -> dict[str, str]:
    """The Prefect event resource for a registered model (and one of its versions)."""
    resource = {"prefect.resource.id": f"slipway.model.{model_name}"}
    if version is not None:
        resource["slipway.model_version"] = version
    return resource


MODEL_RESOURCE_PATTERN = "slipway.model.*"
