"""Strict, typed settings loaded from ``params.yaml``.

One frozen object built from one YAML file: a misspelt key fails loudly and the
error names the file and the dotted key, so a typo never silently falls back to a
default. DVC reads the same file, so every stage and flow agrees on one config.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from slipway.signing import KeyProblem, public_key


class SettingsError(ValueError):
    """A configuration problem; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _field(default: Any = ..., description: str = "", **constraints: Any) -> Any:
    """A setting with its one description (the JSON schema, ``slipway config --schema`` and the README table read it)."""
    if callable(default):
        return Field(default_factory=default, description=description, **constraints)
    return Field(default, description=description, **constraints)


Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]


class DataSettings(_Strict):
    """Where the raw data is and what its columns mean."""

    source: str = _field(description="the raw data: CSV or Parquet, a local path or an s3:// URI")
    entity: str = _field(description="the entity id column")
    timestamp: str = _field(description="the event timestamp column")
    label: str = _field(description="the binary label column: 0/1, yes/no or true/false")
    numeric: list[str] = _field(list, "numeric feature columns")
    categorical: list[str] = _field(list, "categorical feature columns")
    ranges: dict[str, tuple[float | None, float | None]] = _field(
        dict, "inclusive [min, max] per numeric column (null leaves a side open); rows outside are quarantined"
    )
    timestamp_format: str | None = _field(
        None, "strftime format of data.timestamp, e.g. '%d/%m/%Y %H:%M' (null: ISO 8601 only; dates are never guessed)"
    )
    timezone: str | None = _field(
        None, "IANA zone of timestamps written without an offset, e.g. 'Europe/Paris' (null: such rows are quarantined)"
    )
    max_quarantine_share: float = _field(
        0.05, "share of a batch's rows quarantined above which the batch fails (its bad rows still quarantined)", ge=0, le=1
    )

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
        if self.timezone is not None:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"data.timezone: {self.timezone!r} is not an IANA zone such as 'Europe/Paris'") from None
        if self.timestamp_format is not None and "%" not in self.timestamp_format:
            raise ValueError(f"data.timestamp_format: {self.timestamp_format!r} has no strftime directive (e.g. %Y-%m-%d)")
        return self


class FaultSettings(_Strict):
    """Share of rows the generator corrupts, to exercise validation and quarantine."""

    nulls: float = _field(0.0, "share of rows with a feature set to null", ge=0, le=1)
    out_of_range: float = _field(0.0, "share of rows with a value outside data.ranges", ge=0, le=1)
    wrong_types: float = _field(0.0, "share of rows with text in a numeric column", ge=0, le=1)
    duplicates: float = _field(0.0, "share of rows repeated with the same key", ge=0, le=1)
    broken_schema: bool = _field(False, "drop a declared column from the file altogether")


class GenerateSettings(_Strict):
    """The seeded demo-data generator (``slipway generate``, ``slipway demo``)."""

    rows: int = _field(20_000, "leads to generate", gt=0)
    seed: int = _field(7, "random seed: the same settings give the same file")
    start: date = _field(date(2026, 3, 1), "first day of the generated period")
    months: int = _field(6, "length of the generated period", gt=0)
    covariate_drift: float = _field(0.0, "0..1: how far the feature mix moves from the reference market", ge=0, le=1)
    concept_drift: float = _field(0.0, "0..1: how far the link between features and conversion moves", ge=0, le=1)
    faults: FaultSettings = _field(FaultSettings, "rows corrupted on purpose")


class FeatureSettings(_Strict):
    """How the gold features are named and kept in Feast."""

    view: Name = _field("features", "the Feast feature view")
    service: Name = _field("model_input", "the Feast feature service: the model's input contract")
    ttl_days: int = _field(365, "how long a feature value stays valid for point-in-time joins and online reads", gt=0)


class TrainSettings(_Strict):
    """Hyper-parameter search and evaluation."""

    n_trials: int = _field(20, "Optuna trials (finished trials of a resumed study count)", gt=0)
    workers: int = _field(1, "processes sharing the Optuna study; above 1 they split the cores", gt=0)
    timeout_seconds: float | None = _field(None, "stop the search after this long (null: no limit)", gt=0)
    seed: int = _field(7, "seed of the sampler and the models")
    cv_folds: int = _field(
        3, "expanding time windows over the rows older than the test window, for model choice and tree counts", ge=2, le=10
    )
    test_fraction: float = _field(
        0.15, "newest share of rows: the evaluation fit is scored there; the registered fit then learns from it too", gt=0, lt=0.5
    )
    early_stopping_rounds: int = _field(30, "XGBoost rounds without validation gain before a trial stops", gt=0)
    max_estimators: int = _field(1000, "upper bound on XGBoost trees per trial", gt=0)
    top_k_fraction: float = _field(0.1, "share of top-scored rows for the precision/lift metrics", gt=0, le=1)
    experiment: str = _field("slipway", "the MLflow experiment of the training runs")


class RegistrySettings(_Strict):
    """The MLflow registered model this project owns."""

    model_name: str = _field("lead-scoring", "the MLflow registered model (aliases champion and challenger)")


class WatchSettings(_Strict):
    """The post-deployment guard: how long a new champion is watched, beside the one it replaced, and on what."""

    seconds: float = _field(172_800, "how long the previous champion is scored in shadow after a switch (0: no watch)", ge=0)
    interval_seconds: float = _field(600, "how often the guard checks the new champion", gt=0)
    lease_seconds: float = _field(
        120, "a guard that has not renewed its hold on the watch for this long is presumed dead; the next guard takes over", gt=0
    )
    min_rows: int = _field(200, "rows a check needs before score PSI is judged (fewer: not judged yet)", gt=0)
    max_error_rate: float = _field(0.01, "new champion's scoring errors per row in a check", ge=0, le=1)
    max_p99_latency_ms: float = _field(250.0, "new champion's p99 request latency in a check", gt=0)
    max_score_psi: float = _field(0.25, "shift of the new champion's scores against the previous champion's", ge=0)
    max_auc_drop: float = _field(
        0.02, "ROC-AUC the new champion may lose to the previous one on labelled rows (more, significant at 95%: rollback)", ge=0
    )


class PromotionSettings(_Strict):
    """Who may promote and how cautiously."""

    approvers: list[str] = _field(list, "who may approve a promotion (never the requester)")
    approver_keys: dict[str, str] = _field(
        dict, "each approver's Ed25519 public key (ssh-ed25519 AAAA...): approvals are signed, a name alone is refused"
    )
    requester_keys: dict[str, str] = _field(
        dict,
        "Ed25519 public keys of those who may sign promotion requests besides the approvers (who sign with their"
        " approver key): a request signed by its requester needs one other approver, an unsigned one two",
    )
    decision_key: str = _field(
        "",
        "the promotion key's public half (ssh-ed25519 AAAA...): the service serves only champion switches and routing"
        " signed with its private half (SLIPWAY_PROMOTION_KEY); empty: the service follows the aliases unsigned",
    )
    shadow_seconds: float = _field(60, "how long the challenger is scored in shadow before approval is asked", ge=0)
    canary_steps: list[Annotated[int, Field(gt=0, le=100)]] = _field(
        lambda: [10, 50, 100], "shares of traffic (%) the challenger serves, step by step"
    )
    bake_seconds: float = _field(30, "how long each canary step is watched before its health check", ge=0)
    min_auc_gain: float = _field(0.02, "ROC-AUC gain over the champion on the evaluation window (0: no worse)")
    slices: list[str] = _field(list, "categorical columns in whose groups the challenger must not regress")
    max_slice_regression: float = _field(0.05, "allowed ROC-AUC drop within any slice", ge=0)
    min_slice_rows: int = _field(100, "smaller slices (or ones with one class) are not judged", gt=0)
    min_shadow_samples: int = _field(200, "live rows scored in shadow before approval is asked", ge=0)
    min_canary_samples: int = _field(20, "rows the challenger must serve in each canary step", ge=0)
    max_error_rate: float = _field(0.01, "challenger scoring errors per row, in shadow and canary", ge=0, le=1)
    max_p99_latency_ms: float = _field(250.0, "challenger p99 request latency in a canary step", gt=0)
    max_score_psi: float = _field(0.25, "shift of challenger scores against the champion's in a canary step", ge=0)
    approval_timeout_seconds: int = _field(86_400, "no valid answer in this time is a rejection", gt=0)
    service_url: str = _field("http://127.0.0.1:3000", "the scoring service whose traffic shadow and canary watch")
    replica_urls: list[str] = _field(
        list,
        "each replica's own URL, where a routing change must be confirmed before it counts (empty: service_url);"
        " a host name resolving to several addresses (a Kubernetes headless Service) counts each",
    )
    routing_lease_seconds: float = _field(
        120, "shadow or canary routing the promote flow has not renewed for this long is ignored by the service", gt=0
    )
    watch: WatchSettings = _field(WatchSettings, "the post-deployment guard after each switch")

    @model_validator(mode="after")
    def _keys_are_approvers_keys(self) -> PromotionSettings:
        for name, key in self.approver_keys.items():
            if name not in self.approvers:
                raise ValueError(f"promotion.approver_keys.{name}: {name!r} is not in promotion.approvers")
            try:
                public_key(key, f"promotion.approver_keys.{name}")
            except KeyProblem as exc:
                raise ValueError(str(exc)) from None
        for name, key in self.requester_keys.items():
            try:
                public_key(key, f"promotion.requester_keys.{name}")
            except KeyProblem as exc:
                raise ValueError(str(exc)) from None
        if self.decision_key:
            try:
                public_key(self.decision_key, "promotion.decision_key")
            except KeyProblem as exc:
                raise ValueError(str(exc)) from None
        return self


class ServingSettings(_Strict):
    """The scoring service's limits and how it follows the registry."""

    poll_seconds: float = _field(5.0, "how often the service re-reads aliases and routing", gt=0)
    max_body_bytes: int = _field(1_000_000, "larger request bodies get 413", gt=0)
    max_rows: int = _field(1000, "rows or entity ids per request", gt=0)
    token_env: str = _field("SLIPWAY_API_TOKEN", "variable holding the bearer token; required by the service when set")
    allow_anonymous: bool = _field(
        False, "slipway serve on an address other than loopback without a token (false: it refuses to start)"
    )
    log_flush_seconds: float = _field(1.0, "how often the prediction log is written out", gt=0)
    log_queue_size: int = _field(100_000, "prediction-log records held in memory before new ones are dropped", gt=0)
    lookup_timeout_seconds: float = _field(5.0, "feature-store lookups slower than this answer 503", gt=0)
    shadow_queue_rows: int = _field(
        20_000, "rows waiting for the challenger in shadow; beyond, rows are logged without a shadow score", gt=0
    )
    trace_scoring: bool = _field(
        False, "OpenTelemetry spans for the scoring routes (exported once BentoML tracing is configured); off saves ~10%"
    )


class MonitorSettings(_Strict):
    """What the monitor compares, and when it calls for retraining."""

    window_hours: float = _field(24.0, "the prediction-log window compared with the training reference", gt=0)
    min_rows: int = _field(200, "fewer logged rows in the window: no verdict", gt=0)
    sample_rows: int = _field(
        20_000, "rows per side given to Evidently's tests (distance-based beyond 1,000 rows; PSI uses every row)", gt=0
    )
    max_feature_psi: float = _field(0.25, "any feature with a PSI above this is drift", gt=0)
    max_drifted_share: float = _field(0.5, "share of columns Evidently's tests flag above which it is drift", gt=0, le=1)
    max_score_psi: float = _field(0.25, "prediction drift: PSI of the served scores", gt=0)
    max_auc_drop: float = _field(0.05, "ROC-AUC drop against the holdout, once labels arrive", gt=0)
    schedule_minutes: int = _field(60, "the monitor deployment's interval", gt=0)
    retrain_every_days: int = _field(7, "scheduled retraining, drift or not", gt=0)
    retrain_cooldown_seconds: float = _field(3600, "a retraining within this time of the last one does nothing", ge=0)
    max_conversion_drop: float = _field(
        0.10, "business trigger: relative drop of the positive-label rate among labelled scored rows", gt=0, le=1
    )
    min_labelled_rows: int = _field(200, "labelled scored rows needed before the conversion rate is judged", gt=0)


class BatchSettings(_Strict):
    """Batch scoring (``slipway run score``) on a Dask cluster."""

    output: str | None = _field(
        None, "where score runs go: a local or mounted folder or an s3:// prefix (null: $SLIPWAY_HOME/lake/scores)"
    )
    schedule_cron: str = _field("0 2 * * *", "the score deployment's cron schedule (UTC)")
    carry_columns: list[str] = _field(list, "source columns copied into the output next to the scores, by name")
    partition_rows: int = _field(250_000, "rows per partition of the entity table (files are split by Dask's own blocks)", gt=0)
    local_workers: int | None = _field(None, "workers of the embedded local cluster (null: one per core)", gt=0)


class EmailSettings(_Strict):
    """Alert mail over SMTP; the login, if the relay wants one, only from environment variables."""

    host: str = _field(description="the SMTP relay")
    port: int = _field(587, "its port (587: submission with STARTTLS, 465: TLS, 25: plain)", gt=0, lt=65536)
    sender: str = _field(description="the From address", alias="from")
    to: list[str] = _field(description="who receives alerts", min_length=1)
    security: Literal["starttls", "tls", "none"] = _field("starttls", "starttls, tls (implicit, port 465) or none")
    username_env: str = _field("SLIPWAY_SMTP_USERNAME", "variable holding the SMTP user (unset: no login)")
    password_env: str = _field("SLIPWAY_SMTP_PASSWORD", "variable holding the SMTP password")


class AlertSettings(_Strict):
    """Where alerts go (``slipway up`` turns them into Prefect notification blocks and automations)."""

    slack_webhook_env: str = _field("SLIPWAY_SLACK_WEBHOOK_URL", "variable holding a Slack-compatible incoming-webhook URL")
    webhook_env: str = _field("SLIPWAY_ALERT_WEBHOOK_URL", "variable holding a generic JSON webhook URL (PagerDuty, Opsgenie)")
    email: EmailSettings | None = _field(None, "alert mail over SMTP (null: no mail)")
    cooldown_seconds: float = _field(900, "the same alert again within this time sends nothing more", ge=0)


class Settings(_Strict):
    """The whole of ``params.yaml``."""

    data: DataSettings = _field(description="the dataset and its columns")
    generate: GenerateSettings | None = _field(None, "demo data for slipway generate / demo (absent for real data)")
    features: FeatureSettings = _field(FeatureSettings, "Feast names")
    train: TrainSettings = _field(TrainSettings, "tuning and evaluation")
    registry: RegistrySettings = _field(RegistrySettings, "the MLflow registry")
    promotion: PromotionSettings = _field(PromotionSettings, "the promotion gate")
    serving: ServingSettings = _field(ServingSettings, "the scoring service")
    monitor: MonitorSettings = _field(MonitorSettings, "drift, performance and retraining")
    batch: BatchSettings = _field(BatchSettings, "batch scoring on Dask")
    alerts: AlertSettings = _field(AlertSettings, "who is told what happened, and how")

    @model_validator(mode="after")
    def _sections_agree(self) -> Settings:
        for column in self.promotion.slices:
            if column not in self.data.categorical:
                raise ValueError(f"promotion.slices: {column!r} is not a column in data.categorical")
        return self

    def fingerprint(self) -> str:
        """A stable hash of every setting, recorded as lineage on each model version."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    if error["type"] == "missing":
        return f"{key}: required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "value_error":  # our own checks name their dotted key themselves
        return message
    return f"{key or '(top level)'}: {message}"


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


def settings_schema() -> dict[str, Any]:
    """The JSON schema of ``params.yaml`` (``slipway config --schema``)."""
    return Settings.model_json_schema()


def _section(annotation: Any) -> type[_Strict] | None:
    """The settings model a field holds (also inside ``X | None``), or None for a plain value."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, _Strict):
            return candidate
    return None


def _type_name(annotation: Any) -> str:
    """A type as a reader writes it: ``list[int]``, ``float | None`` (constraints are the schema's business)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]"
    return "None" if annotation is type(None) else str(getattr(annotation, "__name__", annotation))


def setting_rows(model: type[_Strict] = Settings, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, description) for every leaf setting, in declaration order."""
    rows: list[tuple[str, str, str, str]] = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{info.alias or name}"
        section = _section(info.annotation)
        if section is not None:
            rows.extend(setting_rows(section, f"{key}."))
            continue
        default = "required" if info.is_required() else json.dumps(info.get_default(call_default_factory=True), default=str)
        rows.append((key, _type_name(info.annotation), default, info.description or ""))
    return rows


def settings_table() -> str:
    """The README's configuration table, generated from the settings' own descriptions."""
    lines = ["| key | type | default | what it does |", "|---|---|---|---|"]
    for key, kind, default, text in setting_rows():
        cells = [f"`{key}`", f"`{kind}`", "required" if default == "required" else f"`{default}`", text]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"
