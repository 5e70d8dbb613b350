"""Opening the Feast store and reading from it."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
from feast import FeatureStore

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
