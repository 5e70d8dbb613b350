"""Feast objects built from the configuration: entity, source, view and service.

The feature service is the model's input contract: exactly the declared features,
under their original names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, String

from slipway.paths import Home
from slipway.settings import DataSettings, FeatureSettings


@dataclass(frozen=True)
class FeastDefinitions:
    entity: Entity
    source: FileSource
    view: FeatureView
    service: FeatureService

    def all(self) -> list[Any]:
        return [self.entity, self.source, self.view, self.service]


def gold_features_path(home: Home) -> str:
    return str(home.gold / "features.parquet")


def build_definitions(data: DataSettings, features: FeatureSettings, home: Home) -> FeastDefinitions:
    entity = Entity(
        name=f"{features.view}_entity",
        join_keys=[data.entity],
        value_type=ValueType.STRING,
        description=f"configured entity column {data.entity!r}",
    )
    source = FileSource(name=f"{features.view}_source", path=gold_features_path(home), timestamp_field=data.timestamp)
    schema = [Field(name=c, dtype=Float64) for c in data.numeric] + [Field(name=c, dtype=String) for c in data.categorical]
    view = FeatureView(
        name=features.view,
        entities=[entity],
        ttl=timedelta(days=features.ttl_days),
        schema=schema,
        source=source,
        online=True,
    )
    service = FeatureService(name=features.service, features=[view], description="the model's input contract")
    return FeastDefinitions(entity, source, view, service)
