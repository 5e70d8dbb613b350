"""Follows the MLflow registry: which versions are champion and challenger, and how traffic is routed.

A background thread re-reads the aliases and the routing record every poll
interval and swaps in a new immutable snapshot, so routing changes take effect
without a restart and a request always sees one consistent view.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from models.registry import CHALLENGER, CHAMPION, load_scorer
from models.routing import Mode, Routing

LOGGER = logging.getLogger(__name__)


class Scorer(Protocol):
    """What serving needs of a model: probabilities for rows of raw features."""

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray: ...


@dataclass(frozen=True)
class LoadedModel:
    version: str
    scorer: Scorer


@dataclass(frozen=True)
class Snapshot:
    champion: LoadedModel | None = None
    challenger: LoadedModel | None = None
    routing: Routing = field(default_factory=Routing)
    lease_expired: bool = False  # the registry's routing record is ignored: its lease ran out


RegistryView = tuple[dict[str, str], dict[str, str]]  # aliases (alias → version), registered-model tags


def load_version(model_name: str, version: str) -> LoadedModel:
    return LoadedModel(version, load_scorer(model_name, version))


def read_registry(model_name: str) -> RegistryView:
    """The registered model's aliases and tags, from the MLflow registry."""
    registered = MlflowClient().get_registered_model(model_name)
    aliases = {alias: str(version) for alias, version in (registered.aliases or {}).items()}
    return aliases, dict(registered.tags or {})


class ModelRouter:
    """Polls the registry and holds the current :class:`Snapshot`; ``read`` and ``load`` are the registry's edges."""

    def __init__(
        self,
        model_name: str,
        poll_seconds: float,
        on_refresh: Callable[[Snapshot], None] = lambda _: None,
        read: Callable[[], RegistryView] | None = None,
        load: Callable[[str], LoadedModel] | None = None,
        poll: bool = True,
    ) -> None:
        self.model_name = model_name
        self.poll_seconds = poll_seconds
        self.on_refresh = on_refresh
        self._read = read or (lambda: read_registry(model_name))
        self._load = load or (lambda version: load_version(model_name, version))
        self.snapshot = Snapshot()
        self.last_error: str | None = None
        self.lease_expired = False  # the registry's routing record is one whose lease ran out
        self._cache: dict[str, LoadedModel] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="registry-poller", daemon=True)
        if poll:  # the first read happens on the poller too: an unreachable registry never holds start-up (/livez)
            self._thread.start()
        else:
            self.refresh()

    def _model(self, version: str | None) -> LoadedModel | None:
        if version is None:
            return None
        if version not in self._cache:
            self._cache[version] = self._load(version)
        return self._cache[version]

    def refresh(self) -> Snapshot:
        """Read aliases and routing; keep the last good snapshot if the registry is unreachable."""
        try:
            aliases, tags = self._read()
            routing = Routing.from_tags(tags)
            if routing.expired():  # the promote flow that leased it stopped renewing: champion only, on every replica
                if not self.lease_expired:
                    LOGGER.warning("routing lease ran out at %s; serving the champion only", routing.lease_until)
                self.lease_expired = True
                routing = Routing()
            else:
                self.lease_expired = False
            champion = self._model(aliases.get(CHAMPION))
            challenger_version = routing.version or aliases.get(CHALLENGER)
            challenger = None
            if routing.mode is not Mode.CHAMPION and challenger_version not in (None, aliases.get(CHAMPION)):
                try:
                    challenger = self._model(challenger_version)
                except (MlflowException, OSError):
                    raise
                except Exception:  # an unloadable challenger gets no traffic; the champion keeps serving
                    LOGGER.exception("challenger v%s cannot be loaded; serving the champion only", challenger_version)
            if challenger is None:
                routing = Routing()
            self.snapshot = Snapshot(champion, challenger, routing, self.lease_expired)
            self._cache = {k: v for k, v in self._cache.items() if v in (champion, challenger)}
            self.last_error = None
        except Exception as exc:  # noqa: BLE001 - whatever the registry or its database raises, the poller must live on
            self.last_error = f"{type(exc).__name__}: {exc}"
            LOGGER.warning("registry refresh failed, keeping the current models: %s", self.last_error)
        self.on_refresh(self.snapshot)
        return self.snapshot

    def _poll(self) -> None:
        self.refresh()
        while not self._stop.wait(self.poll_seconds):
            self.refresh()

    def close(self) -> None:
        self._stop.set()
