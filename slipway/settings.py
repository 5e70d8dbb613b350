"""Strict, typed settings loaded from ``params.yaml``.

One frozen object built from one YAML file: a misspelt key fails loudly and the
error names the file and the dotted key, so a typo never silently falls back to a
default. DVC reads the same file, so every stage and flow agrees on one config.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class SettingsError(ValueError):
    """A configuration problem; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSettings(_Strict):
    """Where the raw data is and what its columns mean."""

    source: str
    entity: str
    timestamp: str
    label: str
    numeric: list[str] = Field(default_factory=list)
    categorical: list[str] = Field(default_factory=list)
    ranges: dict[str, tuple[float | None, float | None]] = Field(default_factory=dict)

    @property
    def features(self) -> list[str]:
        """The model's input columns, in declared order."""
        return [*self.numeric, *self.categorical]

    @property
    def required_columns(self) -> list[str]:
        """Every column a raw batch must carry."""
        return [self.entity, self.timestamp, self.label, *self.features]

    @model_validator(mode="after")
    def _columns_are_consistent(self) -> DataSettings:
        if not self.features:
            raise ValueError("declare at least one feature in data.numeric or data.categorical")
        seen: set[str] = set()
        for column in self.required_columns:
            if column in seen:
                raise ValueError(f"column {column!r} is declared twice across data.entity/timestamp/label/numeric/categorical")
            seen.add(column)
        for column in self.ranges:
            if column not in self.numeric:
                raise ValueError(f"data.ranges.{column}: not a column in data.numeric")
        return self


class FaultSettings(_Strict):
    """Share of rows the generator corrupts, to exercise validation and quarantine."""

    nulls: float = Field(0.0, ge=0, le=1)
    out_of_range: float = Field(0.0, ge=0, le=1)
    wrong_types: float = Field(0.0, ge=0, le=1)
    duplicates: float = Field(0.0, ge=0, le=1)
    broken_schema: bool = False


class GenerateSettings(_Strict):
    """The seeded demo-data generator; used when ``data.source`` does not exist yet."""

    rows: int = Field(20_000, gt=0)
    seed: int = 7
    start: date = date(2026, 3, 1)
    months: int = Field(6, gt=0)
    covariate_drift: float = Field(0.0, ge=0, le=1)
    concept_drift: float = Field(0.0, ge=0, le=1)
    faults: FaultSettings = Field(default_factory=FaultSettings)


class FeatureSettings(_Strict):
    """How the gold features are named and kept in Feast."""

    view: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")] = "features"
    service: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")] = "model_input"
    ttl_days: int = Field(365, gt=0)


class TrainSettings(_Strict):
    """Hyper-parameter search and evaluation."""

    n_trials: int = Field(20, gt=0)
    workers: int = Field(1, gt=0)  # processes sharing the Optuna study; above 1 they split the cores
    timeout_seconds: float | None = Field(None, gt=0)
    seed: int = 7
    validation_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.15, gt=0, lt=0.5)
    early_stopping_rounds: int = Field(30, gt=0)
    max_estimators: int = Field(1000, gt=0)
    top_k_fraction: float = Field(0.1, gt=0, le=1)
    experiment: str = "slipway"


class RegistrySettings(_Strict):
    """The MLflow registered model this project owns."""

    model_name: str = "lead-scoring"


class PromotionSettings(_Strict):
    """Who may promote and how cautiously."""

    approvers: list[str] = Field(default_factory=list)
    shadow_seconds: float = Field(60, ge=0)
    canary_steps: list[Annotated[int, Field(gt=0, le=100)]] = Field(default_factory=lambda: [10, 50, 100])
    bake_seconds: float = Field(30, ge=0)
    min_auc_gain: float = 0.02  # over the champion on the evaluation window; 0 means "no worse"
    slices: list[str] = Field(default_factory=list)  # categorical columns whose groups must not regress
    max_slice_regression: float = Field(0.05, ge=0)  # allowed ROC-AUC drop within any slice
    min_slice_rows: int = Field(100, gt=0)  # smaller slices (or ones with one class) are not judged
    min_shadow_samples: int = Field(200, ge=0)  # live rows scored in shadow before approval is asked
    min_canary_samples: int = Field(20, ge=0)  # rows the challenger must serve in each canary step
    max_error_rate: float = Field(0.01, ge=0, le=1)  # challenger scoring errors per row
    max_p99_latency_ms: float = Field(250.0, gt=0)  # challenger p99 request latency in a canary step
    max_score_psi: float = Field(0.25, ge=0)  # shift of challenger scores against the champion's
    approval_timeout_seconds: int = Field(86_400, gt=0)  # no answer in time is a rejection
    service_url: str = "http://127.0.0.1:3000"  # the scoring service whose traffic shadow and canary watch


class ServingSettings(_Strict):
    """The scoring service's limits and how it follows the registry."""

    poll_seconds: float = Field(5.0, gt=0)
    max_body_bytes: int = Field(1_000_000, gt=0)
    max_rows: int = Field(1000, gt=0)
    token_env: str = "SLIPWAY_API_TOKEN"  # the token itself never lives in the params file
    log_flush_seconds: float = Field(1.0, gt=0)
    log_queue_size: int = Field(100_000, gt=0)
    lookup_timeout_seconds: float = Field(5.0, gt=0)  # feature store lookups slower than this answer 503


class MonitorSettings(_Strict):
    """What the monitor compares, and when it calls for retraining."""

    window_hours: float = Field(24.0, gt=0)  # the prediction-log window compared with the training reference
    min_rows: int = Field(200, gt=0)  # fewer logged rows: no verdict
    sample_rows: int = Field(50_000, gt=0)  # rows per side given to Evidently's statistical tests
    max_feature_psi: float = Field(0.25, gt=0)  # any feature above this is drift
    max_drifted_share: float = Field(0.5, gt=0, le=1)  # share of features Evidently's tests flag
    max_score_psi: float = Field(0.25, gt=0)  # prediction drift
    max_auc_drop: float = Field(0.05, gt=0)  # performance against the reference, once labels arrive
    schedule_minutes: int = Field(60, gt=0)  # the monitor deployment's interval
    retrain_every_days: int = Field(7, gt=0)  # scheduled retraining, drift or not
    retrain_cooldown_seconds: float = Field(3600, ge=0)  # a burst of drift events retrains once


class Settings(_Strict):
    """The whole of ``params.yaml``."""

    data: DataSettings
    generate: GenerateSettings | None = None
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    promotion: PromotionSettings = Field(default_factory=PromotionSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)

    def fingerprint(self) -> str:
        """A stable hash of every setting, recorded as lineage on each model version."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    return f"{key}: {error['msg']}"


def parse_settings(raw: Any, origin: str = "params") -> Settings:
    """Validate an already-parsed mapping; errors name ``origin`` and each bad key."""
    if not isinstance(raw, dict):
        raise SettingsError(f"{origin}: expected a mapping of sections at the top level")
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(_describe(dict(e)) for e in exc.errors())
        raise SettingsError(f"{origin}: {problems}") from None


def load_settings(path: str | Path = "params.yaml") -> Settings:
    """Read and validate a params file."""
    file = Path(path)
    if not file.is_file():
        raise SettingsError(f"{file}: params file not found")
    try:
        raw = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise SettingsError(f"{file}: not valid YAML: {exc}") from None
    return parse_settings(raw, str(file))
