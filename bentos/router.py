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
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from models import decision
from models.decision import DECISION_TAG, Decision
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
    decision_seq: int = 0  # the signed decision served (0: decisions are not signed)
    unverified: tuple[str, ...] = ()  # what in the registry is not served because it is not signed
    from_bundle: bool = False  # the registry was unreachable at start: the champion bundled in the Bento serves


@dataclass(frozen=True)
class Bundled:
    """A model version packaged in the Bento (``slipway run package``), for starting while the registry is down."""

    version: str
    alias: str
    decision: str | None  # the signed decision the registry held when it was packaged
    load: Callable[[], LoadedModel]


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
        verify_key: Ed25519PublicKey | None = None,
        bundle: Callable[[], Sequence[Bundled]] = lambda: (),
    ) -> None:
        self.model_name = model_name
        self.poll_seconds = poll_seconds
        self.on_refresh = on_refresh
        self._read = read or (lambda: read_registry(model_name))
        self._load = load or (lambda version: load_version(model_name, version))
        self.snapshot = Snapshot()
        self.last_error: str | None = None
        self.lease_expired = False  # the registry's routing record is one whose lease ran out
        self.verify_key = verify_key  # set: only signed decisions are served (see models.decision)
        self.decision: Decision | None = None  # the last decision verified
        self._suspect: tuple[str, ...] = ()  # disagreements seen on the last read, reported once they persist
        self._bundle: Callable[[], Sequence[Bundled]] | None = bundle  # tried once, if the first read fails
        self._cache: dict[str, LoadedModel] = {}
        self._loading: str | None = None
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
            self._loading = version  # named in last_error if the load fails (an artifact missing, say)
            self._cache[version] = self._load(version)
            self._loading = None
        return self._cache[version]

    def refresh(self) -> Snapshot:
        """Read aliases and routing; keep the last good snapshot if the registry is unreachable."""
        try:
            aliases, tags = self._read()
            unverified: tuple[str, ...] = ()
            if self.verify_key is None:
                champion_version, routing = aliases.get(CHAMPION), Routing.from_tags(tags)
            else:
                champion_version, routing, unverified = self._verified(aliases, tags, self.verify_key)
            if routing.expired():  # the promote flow that leased it stopped renewing: champion only, on every replica
                if not self.lease_expired:
                    LOGGER.warning("routing lease ran out at %s; serving the champion only", routing.lease_until)
                self.lease_expired = True
                routing = Routing()
            else:
                self.lease_expired = False
            champion = self._model(champion_version)
            challenger_version = routing.version or (aliases.get(CHALLENGER) if self.verify_key is None else None)
            challenger = None
            if routing.mode is not Mode.CHAMPION and challenger_version not in (None, champion_version):
                try:
                    challenger = self._model(challenger_version)
                except (MlflowException, OSError):
                    raise
                except Exception:  # an unloadable challenger gets no traffic; the champion keeps serving
                    LOGGER.exception("challenger v%s cannot be loaded; serving the champion only", challenger_version)
            if challenger is None:
                routing = Routing()
            seq = self.decision.seq if self.decision else 0
            self.snapshot = Snapshot(champion, challenger, routing, self.lease_expired, seq, unverified)
            self._cache = {k: v for k, v in self._cache.items() if v in (champion, challenger)}
            self.last_error = None
        except Exception as exc:  # noqa: BLE001 - whatever the registry or its database raises, the poller must live on
            loading, self._loading = self._loading, None
            self.last_error = f"{f'loading v{loading}: ' if loading else ''}{type(exc).__name__}: {exc}"
            LOGGER.warning("registry refresh failed, keeping the current models: %s", self.last_error)
            if self.snapshot.champion is None and self._bundle is not None:
                self._start_from_bundle(self._bundle)
        self.on_refresh(self.snapshot)
        return self.snapshot

    def _start_from_bundle(self, bundle: Callable[[], Sequence[Bundled]]) -> None:
        """Serve the champion packaged in the Bento until the registry answers (tried once per process).

        With signed decisions, only a bundled champion whose bundled decision verifies and
        names it is served; the newest such decision wins, and it becomes the decision a
        later registry record must not be older than. Traffic goes to the champion alone.
        """
        self._bundle = None
        try:
            found = [b for b in bundle() if b.alias == CHAMPION]
            if self.verify_key is not None:
                signed = []
                for candidate in found:
                    try:
                        read = decision.read(candidate.decision, self.verify_key, self.model_name)
                    except decision.Unverified as exc:
                        LOGGER.error("bundled v%s not served: %s", candidate.version, exc)
                        continue
                    if read.champion == candidate.version:
                        signed.append((read.seq, candidate, read))
                if not signed:
                    return
                _, chosen, self.decision = max(signed, key=lambda item: item[0])
            elif found:
                chosen = found[-1]
            else:
                return
            champion = self._cache[chosen.version] = chosen.load()
        except Exception:  # a broken bundle leaves the replica waiting for the registry, as before
            LOGGER.exception("the bundled champion cannot be loaded; waiting for the registry")
            return
        seq = self.decision.seq if self.decision else 0
        self.snapshot = Snapshot(champion, None, Routing(), False, seq, (), from_bundle=True)
        LOGGER.warning("registry unreachable at start: serving v%s bundled in the Bento", champion.version)

    def _verified(
        self, aliases: dict[str, str], tags: dict[str, str], key: Ed25519PublicKey
    ) -> tuple[str | None, Routing, tuple[str, ...]]:
        """The last verified decision's champion and routing, and what in the registry disagrees with it.

        A forged, missing or replayed (lower-numbered) record leaves the last verified
        decision in force. Disagreements are reported only when two reads in a row see
        them: the promote flow writes the signed record first and its mirrors a moment later.
        """
        found: list[str] = []
        try:
            read = decision.read(tags.get(DECISION_TAG), key, self.model_name)
            if self.decision is not None and read.seq < self.decision.seq:
                raise decision.Unverified(f"{DECISION_TAG} #{read.seq} is older than #{self.decision.seq}: a replay")
            if read != self.decision:
                LOGGER.info("following signed decision %s", read.describe())
            self.decision = read
        except decision.Unverified as exc:
            found.append(str(exc))
        if self.decision is not None:
            found += decision.mismatches(self.decision, aliases.get(CHAMPION), Routing.from_tags(tags))
        suspect, self._suspect = self._suspect, tuple(found)
        reported = tuple(found) if found and tuple(found) == suspect else ()
        if reported and not self.snapshot.unverified:
            LOGGER.error("the registry holds what was not signed, not served: %s", "; ".join(reported))
        if self.decision is None:
            return None, Routing(), reported or tuple(found)
        return self.decision.champion, self.decision.routing, reported

    def _poll(self) -> None:
        self.refresh()
        while not self._stop.wait(self.poll_seconds):
            self.refresh()

    def close(self) -> None:
        self._stop.set()
