"""Choosing the Feast configuration: the embedded file, or the one FEAST_FS_YAML_FILE_PATH names."""

from pathlib import Path

import pytest

from slipway.feature_store import FeatureStoreConfigError, config_file, open_store
from tests.conftest import REPO

PRODUCTION = REPO / "infra" / "feast" / "feature_store.yaml"


def test_feasts_own_variable_selects_the_production_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEAST_FS_YAML_FILE_PATH", raising=False)
    assert config_file() == REPO / "feature_repo" / "feature_store.yaml"
    monkeypatch.setenv("FEAST_FS_YAML_FILE_PATH", str(PRODUCTION))
    assert config_file() == PRODUCTION


def test_unset_variables_in_the_file_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEAST_FS_YAML_FILE_PATH", str(PRODUCTION))
    monkeypatch.delenv("SLIPWAY_FEAST_REGISTRY_URL", raising=False)
    monkeypatch.setenv("SLIPWAY_REDIS_CONNECTION_STRING", "127.0.0.1:6379")
    expected = r"feature_store\.yaml: environment variable\(s\) not set: SLIPWAY_FEAST_REGISTRY_URL$"
    with pytest.raises(FeatureStoreConfigError, match=expected):
        open_store()


def test_a_missing_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEAST_FS_YAML_FILE_PATH", str(tmp_path / "nowhere.yaml"))
    with pytest.raises(FeatureStoreConfigError, match=r"nowhere\.yaml: Feast configuration file not found"):
        open_store()


def test_direct_sqlite_read_equals_feasts_online_features(home: Path, tmp_path: Path) -> None:
    """The service's direct read of Feast's SQLite table gives what ``get_online_features`` gives, None for unknown ids."""
    from datetime import UTC, datetime

    import pandas as pd

    from features import feast_defs, gold
    from models.sample import clean_leads
    from slipway import lake
    from slipway.feature_store import OnlineReader, SqliteViewRead
    from slipway.paths import Home
    from slipway.settings import load_settings
    from tests.conftest import small_params, write_params

    settings = load_settings(write_params(tmp_path / "params.yaml", small_params(tmp_path, rows=300)))
    data, where = settings.data, Home.current()
    features = gold.build_features(clean_leads(settings), data)
    first = features[data.entity].iloc[0]
    features.loc[features[data.entity] == first, data.numeric[0]] = float("nan")  # a value missing when materialized
    lake.write_parquet(features, where.gold / "features.parquet")
    store = open_store()
    store.apply(feast_defs.build_definitions(data, settings.features, where).all())
    store.materialize(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC))
    ids = sorted(features[data.entity].unique())
    reader = OnlineReader(store, settings.features.service, data.features)
    assert reader.local  # the direct path, not the provider's
    rows = reader.read([*ids, "no-such-entity"])
    with pytest.MonkeyPatch.context() as patch:  # many ids go in several statements, with the same answer
        patch.setattr(SqliteViewRead, "CHUNK", 7)
        assert reader.read([*ids, "no-such-entity"]) == rows
    online = store.get_online_features(
        features=store.get_feature_service(settings.features.service), entity_rows=[{data.entity: e} for e in ids]
    ).to_dict()
    assert rows[-1] is None
    expected = pd.DataFrame({c: online[c] for c in data.features}, index=ids)
    assert pd.DataFrame(rows[:-1], index=ids).equals(expected)
    assert rows[ids.index(first)][data.numeric[0]] is None  # type: ignore[index]
