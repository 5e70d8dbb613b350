"""Opening the Feast store and reading from it."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pandas as pd
from feast import FeatureStore
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.online_store import OnlineStore
from feast.infra.online_stores.redis import RedisOnlineStore, RedisType, _versioned_fv_name
from feast.infra.online_stores.sqlite import SqliteOnlineStore, _quote_id, _table_id
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


_SCALARS = frozenset({"double_val", "float_val", "int32_val", "int64_val", "string_val", "bool_val"})


def python_value(value: Value) -> object:
    """A stored Feast value as Python: scalars read directly, anything else through Feast's own conversion."""
    kind = value.WhichOneof("val")
    if kind in _SCALARS:
        return getattr(value, kind)
    return None if kind is None or kind == "null_val" else feast_value_type_to_python_type(value)


class SqliteViewRead:
    """One feature view's rows straight from Feast's SQLite online table: one indexed SELECT per request.

    The table, its key encoding and its value encoding are Feast's (the same helpers
    its ``SqliteOnlineStore.online_read`` uses), so this reads exactly what Feast
    materialized. It skips what that read adds per call on the request path: the
    query text rebuilt, every value converted through the generic type map, and its
    per-row timestamp handling the service does not use: about 50 µs against 150 µs for a
    one-entity lookup of twelve features here.
    """

    CHUNK = 500  # ids per SELECT: any serving.max_rows stays under SQLite's limit on variables

    def __init__(self, store: SqliteOnlineStore, config: Any, view: Any, names: list[str]) -> None:
        versioning = getattr(config.registry, "enable_online_feature_view_versioning", False)
        self.table = _quote_id(_table_id(config.project, view, versioning))
        self.connection = store._get_conn(config)
        self.version = config.entity_key_serialization_version
        self.names = frozenset(names)

    def __call__(self, keys: list[EntityKey]) -> list[tuple[None, dict[str, Any] | None]]:
        encoded = [serialize_entity_key(key, entity_key_serialization_version=self.version) for key in keys]
        found: dict[bytes, dict[str, Any]] = {}
        for start in range(0, len(encoded), self.CHUNK):  # SQLite bounds the variables of one statement
            chunk = encoded[start : start + self.CHUNK]
            query = f"SELECT entity_key, feature_name, value FROM {self.table} WHERE entity_key IN ({','.join('?' * len(chunk))})"
            for key, name, blob in self.connection.execute(query, chunk).fetchall():
                if name in self.names:
                    found.setdefault(key, {})[name] = Value.FromString(blob)
        return [(None, found.get(key)) for key in encoded]


class RedisViewRead:
    """One feature view's hashes from Feast's Redis online store, through Feast's own key and field encoding.

    Feast's ``online_read_async`` hashes every feature name and opens a pipeline on
    each call; here the field list is hashed once, and a one-entity lookup is a plain
    ``HMGET`` on Feast's asyncio client (several entities still go in one pipeline).
    The values decode through Feast's own ``_convert_redis_values_to_protobuf``.
    """

    def __init__(self, store: RedisOnlineStore, config: Any, view: Any, names: list[str]) -> None:
        self.store, self.config = store, config
        self.view_name = _versioned_fv_name(view, config)
        self.names, self.fields = store._generate_hset_keys_for_features(view, list(names), fv_name_override=self.view_name)

    async def __call__(self, keys: list[EntityKey]) -> list[tuple[Any, dict[str, Any] | None]]:
        client = await self.store._get_client_async(self.config.online_store)
        encoded = self.store._generate_redis_keys_for_entities(self.config, keys)
        if len(encoded) == 1:
            values = [await client.hmget(encoded[0], self.fields)]
        else:
            async with client.pipeline(transaction=False) as pipe:
                for key in encoded:
                    pipe.hmget(key, self.fields)
                values = await pipe.execute()
        result: list[tuple[Any, dict[str, Any] | None]] = self.store._convert_redis_values_to_protobuf(
            values, self.view_name, self.names
        )
        return result


class OnlineReader:
    """Entity rows from the online store through Feast's provider read, the feature service resolved once.

    ``FeatureStore.get_online_features`` resolves the feature service against the
    registry and builds a protobuf response on every call, which costs more than
    the store read itself. This reader resolves the service's feature views when it
    is opened and then calls the provider's ``online_read`` (the same read
    ``get_online_features`` makes) per request, or, on the embedded SQLite store and
    on a plain Redis, reads Feast's table or hashes directly (:class:`SqliteViewRead`,
    :class:`RedisViewRead`). Nothing is cached: every
    value comes from the online store as materialized at that moment. Feature view
    definitions change only with ``feast apply``, which needs a service restart to
    be seen.
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
        online = self.provider.online_store
        self._sqlite = (
            [SqliteViewRead(online, self.config, view, names) for view, names in self.views]
            if isinstance(online, SqliteOnlineStore)
            else None
        )
        self._redis: list[RedisViewRead] | None = None
        if isinstance(online, RedisOnlineStore) and self.config.online_store.redis_type == RedisType.redis:
            self._redis = [RedisViewRead(online, self.config, view, names) for view, names in self.views]

    @property
    def native_async(self) -> bool:
        """Whether the online store reads asynchronously itself (Redis does; SQLite does not)."""
        store = type(self.provider.online_store)
        return store.online_read_async is not OnlineStore.online_read_async

    @property
    def local(self) -> bool:
        """Whether the online store is a local file (SQLite): a read cannot hang on a network."""
        return self._sqlite is not None

    def _keys(self, entity_ids: list[str]) -> list[EntityKey]:
        return [EntityKey(join_keys=[self.join_key], entity_values=[Value(string_val=e)]) for e in entity_ids]

    def read(self, entity_ids: list[str]) -> list[dict[str, object] | None]:
        """Each id's declared features (None for a feature never materialized), or None for an unknown id."""
        keys = self._keys(entity_ids)
        if self._sqlite is not None:
            return self._rows([read(keys) for read in self._sqlite])
        # a fresh list each call: Feast's Redis store appends its timestamp field to the one it is given
        return self._rows([self.provider.online_read(self.config, view, keys, list(names)) for view, names in self.views])

    async def read_async(self, entity_ids: list[str]) -> list[dict[str, object] | None]:
        """:meth:`read` through the store's own asynchronous client (only when :attr:`native_async`)."""
        keys = self._keys(entity_ids)
        if self._redis is not None:
            return self._rows([await read(keys) for read in self._redis])
        return self._rows(
            [await self.provider.online_read_async(self.config, view, keys, list(names)) for view, names in self.views]
        )

    def _rows(self, reads: list[list[tuple[Any, dict[str, Any] | None]]]) -> list[dict[str, object] | None]:
        rows: list[dict[str, object]] = [{} for _ in reads[0]] if reads else []
        for read in reads:
            for row, (_, values) in zip(rows, read, strict=True):
                for name, value in (values or {}).items():
                    row[name] = python_value(value)
        return [{c: row.get(c) for c in self.features} if any(v is not None for v in row.values()) else None for row in rows]
