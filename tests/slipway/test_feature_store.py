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
