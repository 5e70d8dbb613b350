"""Small reads of Prefect's run context and API that the flows share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from slipway.errors import Refused


class Busy(Refused):
    """The one slot of a global concurrency limit is taken; the message names the limit."""


MIN_SLOT_LEASE_SECONDS = 60.0  # the shortest slot lease Prefect's server grants


@contextmanager
def exclusive(name: str, lease_seconds: float, wait_seconds: float = 5.0, what: str = "runs") -> Iterator[None]:
    """Hold the single slot of the Prefect global concurrency limit ``name`` (created with limit 1 if missing).

    The server grants the slot atomically, so two holders can never overlap; the
    slot is leased and renewed while the holder's process lives, so a killed holder
    frees it after ``lease_seconds`` (at least a minute, Prefect's floor). Raises :class:`Busy` if the slot stays taken for
    ``wait_seconds``.
    """
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            with suppress(ObjectAlreadyExists):  # created meanwhile by another run
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    lease = max(MIN_SLOT_LEASE_SECONDS, lease_seconds)
    manager = concurrency(name, occupy=1, timeout_seconds=wait_seconds, lease_duration=lease, strict=True)
    try:
        manager.__enter__()
    except TimeoutError as exc:
        raise Busy(f"another run holds the Prefect global concurrency limit {name!r}: {what} run one at a time") from exc
    try:
        yield
    finally:
        manager.__exit__(None, None, None)


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


def resume_paused(run_id: str, run_input: dict[str, object]) -> str:
    """Answer a flow run paused for input (as the form in the Prefect UI does); returns the run's name.

    Refused when the run does not exist or is not waiting, naming its state.
    """
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(run_id)  # type: ignore[arg-type]
            if not (run.state and run.state.is_paused()):
                raise Refused(f"flow run {run_id} ({run.name}) is not waiting for an answer: it is {run.state_name}")
            response = client.resume_flow_run(run.id, run_input=run_input)
    except (ObjectNotFound, ValueError) as exc:
        raise Refused(f"flow run {run_id}: not found on the Prefect server ({exc})") from None
    if response.status.value != "ACCEPT":
        raise Refused(f"flow run {run_id} did not take the answer: {response.status.value} {response.details}")
    return str(run.name)
