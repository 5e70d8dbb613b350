"""The flow functions by name, imported only when one is asked for."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from slipway.catalog import FLOWS


class UnknownFlowError(ValueError):
    """A flow name that is not one of ``FLOWS``; the message lists the available ones."""


def load_flow(name: str) -> Callable[..., Any]:
    """The Prefect flow ``flows.<name>.<name>``."""
    if name not in FLOWS:
        raise UnknownFlowError(f"unknown flow {name!r}; available: {', '.join(FLOWS)}")
    return getattr(importlib.import_module(f"flows.{name}"), name)  # type: ignore[no-any-return]
