"""Names both sides of the platform agree on: the flows, their deployments and the events.

Kept in the bottom layer so the CLI, the stack, the automations and the flows that
emit the events can all import them downwards, without importing each other.
"""

from __future__ import annotations

FLOWS = ("ingest", "materialize", "train", "promote", "package", "monitor", "retrain", "rollback", "pipeline", "score")

DRIFT_EVENT = "slipway.drift.detected"
DEGRADED_EVENT = "slipway.performance.degraded"
PROMOTION_EVENT_PREFIX = "slipway.promotion."  # + promoted, rejected or rolled_back
RETRAIN_EVENTS = (DRIFT_EVENT, DEGRADED_EVENT)


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
