"""Small reads of Prefect's run context and API that the flows share."""

from __future__ import annotations

from prefect.client.orchestration import get_client
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectNotFound


def current_flow_run_id() -> str:
    """The id of the flow run this code runs in (a placeholder outside one)."""
    context = FlowRunContext.get()
    return str(context.flow_run.id) if context and context.flow_run else "outside-a-flow-run"


def flow_run_alive(run_id: str) -> bool:
    """Whether the flow run exists and has not reached a final state."""
    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(run_id).state  # type: ignore[arg-type]
    except (ObjectNotFound, ValueError):
        return False
    return bool(state and not state.is_final())
