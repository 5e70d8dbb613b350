"""Opening the Feast store and reading from it."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pandas as pd
from feast import FeatureStore
from feast.infra.online_stores.online_store import OnlineStore
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import feast_value_type_to_python_type

from slipway.settings import Settings

FEATURE_REPO = Path(__file__).resolve().parent.parent / "feature_repo"
EVENT_TIMESTAMP = "event_timestamp"


class FeatureStoreConfigError(RuntimeError):
    """The Feast configuration file refers to something missing; the message names it."""


def config_file(repo: Path = FEATURE_REPO) -> Path:
    """``FEAST_FS_YAML_FILE_PATH`` when set (Feast's own variable, e.g. the Redis profile in infra/), else the repo's file."""
    override = os.environ.get("FEAST_FS_YAML_FILE_PATH")
    return Path(override).resolve() if override else repo / "feature_store.yaml"


def open_store(repo: Path = FEATURE_REPO) -> FeatureStore:
    """The store configured by :func:`config_file`, its ``${VARIABLES}`` expanded from the environment.

    Feast leaves an unset variable as literal text, which later fails far from its
    cause; here it fails at once, naming the file and the variable.
    """
    path = config_file(repo)
    if not path.is_file():
        raise FeatureStoreConfigError(f"{path}: Feast configuration file not found (FEAST_FS_YAML_FILE_PATH?)")
    text = re.sub(r"#.*", "", path.read_text())
    missing = sorted({name for name in re.findall(r"\$\{(\w+)\}", text) if name not in os.environ})
    if missing:
        raise FeatureStoreConfigError(f"{path}: environment variable(s) not set: {', '.join(missing)}")
    return FeatureStore(repo_path=str(repo), fs_yaml_file=path)


def training_frame(store: FeatureStore, labels: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Point-in-time join of the feature service onto label events.

    Each label gets the latest feature values at or before its event time, so no
    feature from the future leaks into training.
    """
    data = settings.data
    entity_df = labels.rename(columns={data.timestamp: EVENT_TIMESTAMP})
    service = store.get_feature_service(settings.features.service)
    frame = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    return frame.sort_values([EVENT_TIMESTAMP, data.entity], kind="stable").reset_index(drop=True)


class OnlineReader:
    """Entity rows from the online store through Feast's provider read, the feature service resolved once.

    ``FeatureStore.get_online_features`` resolves the feature service against the
    registry and builds a protobuf response on every call, which costs more than
    the store read itself. This reader resolves the service's feature views when it
    is opened and then calls the provider's ``online_read`` (the same read
    ``get_online_features`` makes) per request. Nothing is cached: every value comes
    from the online store as materialized at that moment. Feature view definitions
    change only with ``feast apply``, which needs a service restart to be seen.
    """

    def __init__(self, store: FeatureStore, service: str, features: list[str]) -> None:
        self.config, self.features = store.config, features
        self.provider = store._get_provider()  # Feast's provider: what get_online_features reads through
        self.views = [
            (store.get_feature_view(p.name), [f.name for f in p.features])
            for p in store.get_feature_service(service).feature_view_projections
        ]
        keys = {tuple(view.join_keys) for view, _ in self.views}
        if len(keys) != 1 or len(next(iter(keys))) != 1:
            raise FeatureStoreConfigError(f"feature service {service!r}: its views must share one join key, found {sorted(keys)}")
        self.join_key = next(iter(keys))[0]

    @property
    def native_async(self) -> bool:
        """Whether the online store reads asynchronously itself (Redis does; SQLite does not)."""
        store = type(self.provider.online_store)
        return store.online_read_async is not OnlineStore.online_read_async

    @property
    def local(self) -> bool:
        """Whether the online store is a local file (SQLite): a read cannot hang on a network."""
        return type(self.provider.online_store).__name__ == "SqliteOnlineStore"

    def _keys(self, entity_ids: list[str]) -> list[EntityKey]:
        return [EntityKey(join_keys=[self.join_key], entity_values=[Value(string_val=e)]) for e in entity_ids]

    def read(self, entity_ids: list[str]) -> list[dict[str, object] | None]:
        """Each id's declared features (None for a feature never materialized), or None for an unknown id."""
        keys = self._keys(entity_ids)
        # a fresh list each call: Feast's Redis store appends its timestamp field to the one it is given
        return self._rows([self.provider.online_read(self.config, view, keys, list(names)) for view, names in self.views])

    async def read_async(self, entity_ids: list[str]) -> list[dict[str, object] | None]:
        """:meth:`read` through the store's own asynchronous client (only when :attr:`native_async`)."""
        keys = self._keys(entity_ids)
        return self._rows(
            [await self.provider.online_read_async(self.config, view, keys, list(names)) for view, names in self.views]
        )

    def _rows(self, reads: list[list[tuple[Any, dict[str, Any] | None]]]) -> list[dict[str, object] | None]:
        rows: list[dict[str, object]] = [{} for _ in reads[0]] if reads else []
        for read in reads:
            for row, (_, values) in zip(rows, read, strict=True):
                for name, value in (values or {}).items():
                    row[name] = feast_value_type_to_python_type(value)
        return [{c: row.get(c) for c in self.features} if any(v is not None for v in row.values()) else None for row in rows]
