"""The scoring service's request and response models, built from the configuration.

Each declared feature becomes a required field under its original name (an alias,
since names like ``sensor.temp`` are not identifiers): numbers are strict, finite,
within float32's range and within ``data.ranges``; categories are strings; unknown
fields are refused. The OpenAPI
document at ``/docs.json`` therefore lists the real features.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from slipway.settings import DataSettings

FLOAT32_MAX = 3.4028234663852886e38  # XGBoost computes in float32: beyond this a value would become infinite
Number = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-FLOAT32_MAX, le=FLOAT32_MAX)]
Category = Annotated[str, Field(strict=True, max_length=256)]
EntityId = Annotated[str, Field(strict=True, min_length=1, max_length=256)]


class Prediction(BaseModel):
    score: float = Field(ge=0, le=1, description="probability of the positive class")
    model_version: str = Field(description="registry version that produced the served score")
    request_id: str


class PredictResponse(BaseModel):
    predictions: list[Prediction]


@dataclass(frozen=True)
class Contract:
    """The dynamic models for one dataset."""

    row: type[BaseModel]
    predict_request: type[BaseModel]
    entities_request: type[BaseModel]


def build_contract(data: DataSettings, max_rows: int) -> Contract:
    fields: dict[str, Any] = {}
    for i, column in enumerate(data.features):
        kind: Any = Number if column in data.numeric else Category
        low, high = data.ranges.get(column, (None, None))
        if low is not None or high is not None:  # the range ingest enforces, enforced here too
            kind = Annotated[kind, Field(ge=low, le=high)]
        fields[f"f{i}"] = (kind, Field(alias=column))
    strict = ConfigDict(extra="forbid", populate_by_name=False)
    row = create_model("FeatureRow", __config__=strict, **fields)
    predict = create_model(
        "PredictRequest",
        __config__=strict,
        rows=(list[row], Field(min_length=1, max_length=max_rows)),
    )
    entities = create_model(
        "PredictEntitiesRequest",
        __config__=strict,
        entity_ids=(list[EntityId], Field(min_length=1, max_length=max_rows)),
    )
    return Contract(row, predict, entities)
