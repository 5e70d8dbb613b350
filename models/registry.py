"""Registering versions per the model contract and keeping their lineage."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.tracking.fluent import ActiveRun
from mlflow.types.schema import AnyType, ColSpec, Schema

import features
import models
import slipway
from models import decision
from models.decision import DECISION_TAG, Decision
from models.fast_scorer import FastScorer
from models.pyfunc import ScoringModel
from models.routing import LEASE_TAG, Routing
from slipway import signing
from slipway.audit import AuditError, AuditLog
from slipway.errors import Refused
from slipway.settings import DataSettings

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION_TAG = "slipway.previous_champion"
AUDIT_HEAD_TAG = "slipway.audit.head"
AUDIT_SIGNED_HEAD_TAG = "slipway.audit.signed_head"  # the head as the promotion key's holder last signed it
AUDIT_HEAD_FORMAT = "slipway-audit-head/1"


def audit_head_message(name: str, seq: int, digest: str) -> bytes:
    return "\n".join([AUDIT_HEAD_FORMAT, name, str(seq), digest]).encode()


class RegistryAnchor:
    """The audit chain's head as a tag on the registered model, outside the log's file.

    A process holding the promotion key (``SLIPWAY_PROMOTION_KEY``) also signs the head it
    writes (``slipway.audit.signed_head``); with ``decision_key`` given, :meth:`signed`
    returns that head once its signature verifies.
    """

    def __init__(self, name: str, decision_key: str = "") -> None:
        self.name = name
        self.decision_key = decision_key

    def read(self) -> tuple[int, str] | None:
        try:
            text = (MlflowClient().get_registered_model(self.name).tags or {}).get(AUDIT_HEAD_TAG)
        except MlflowException:
            return None  # no registered model yet: nothing was anchored
        if not text:
            return None
        raw = json.loads(text)
        return int(raw["seq"]), str(raw["hash"])

    def write(self, seq: int, digest: str) -> None:
        tags = {AUDIT_HEAD_TAG: json.dumps({"seq": seq, "hash": digest})}
        key = decision.env_signer()
        if key is not None:
            signature = signing.sign(key, audit_head_message(self.name, seq, digest))
            tags[AUDIT_SIGNED_HEAD_TAG] = json.dumps({"seq": seq, "hash": digest, "signature": signature})
        try:
            client = MlflowClient()
            for tag, value in tags.items():
                client.set_registered_model_tag(self.name, tag, value)
        except MlflowException as exc:  # the entry itself is written; verify reports a lagging anchor as it finds it
            print(f"audit head not anchored in the registry ({exc})")

    def signed(self) -> tuple[int, str] | None:
        if not self.decision_key:
            return None
        try:
            text = (MlflowClient().get_registered_model(self.name).tags or {}).get(AUDIT_SIGNED_HEAD_TAG)
        except MlflowException:
            return None
        if not text:
            return None
        try:
            raw = json.loads(text)
            seq, digest, signature = int(raw["seq"]), str(raw["hash"]), str(raw["signature"])
        except (ValueError, KeyError, TypeError):
            raise AuditError(f"{self.name}: the signed audit head ({AUDIT_SIGNED_HEAD_TAG}) is not a signed head") from None
        key = signing.public_key(self.decision_key, "promotion.decision_key")
        if not signing.verify(key, audit_head_message(self.name, seq, digest), signature):
            raise AuditError(f"{self.name}: the signed audit head does not verify with promotion.decision_key: it was forged")
        return seq, digest


def audit_log(path: Path, name: str, decision_key: str = "") -> AuditLog:
    """The audit log, anchored on the registered model ``name`` (checked against the signed head with ``decision_key``)."""
    return AuditLog(path, RegistryAnchor(name, decision_key))


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: str
    run_id: str


def git_commit(repo: Path) -> str:
    """The checked-out commit, with ``-dirty`` when the tree has changes; ``unknown`` outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


INPUT_KINDS_TAG = "slipway.input_kinds"


def signature(data: DataSettings) -> ModelSignature:
    """The declared features by name, each optional and of any type, and one probability out.

    MLflow's schema enforcement refuses int64 for a ``double`` column ("Can not safely
    convert int64 to float64") and a number for a ``string`` one, so a typed signature
    would refuse the very frames ``pd.read_csv`` gives for integer columns. The model
    types its input itself (``features.gold.to_feature_frame``, shared with training),
    so every column is declared ``Any``; which are numeric and which categorical is
    recorded in the ``slipway.input_kinds`` tag.
    """
    inputs = Schema([ColSpec(AnyType(), column, required=False) for column in data.features])  # type: ignore[no-untyped-call]
    return ModelSignature(inputs=inputs, outputs=Schema([ColSpec("double", "probability")]))


def input_kinds(data: DataSettings) -> str:
    kinds = {**{c: "numeric" for c in data.numeric}, **{c: "categorical" for c in data.categorical}}
    return json.dumps(kinds, separators=(",", ":"))


def _log_pyfunc(artifact: str, model: ScoringModel, example: pd.DataFrame, **extra: Any) -> ModelInfo:
    """Log a scoring model per the model contract: signature, input example, and the code it needs."""
    info: ModelInfo = mlflow.pyfunc.log_model(
        name=artifact,
        python_model=model,
        signature=signature(model.data),
        input_example=example,
        code_paths=[str(Path(str(package.__file__)).parent) for package in (models, features, slipway)],
        **extra,
    )
    return info


def log_and_register(
    run: ActiveRun, model: ScoringModel, example: pd.DataFrame, name: str, lineage: dict[str, str]
) -> RegisteredVersion:
    """Log the pyfunc with signature and input example, register it, tag its lineage."""
    lineage = {**lineage, INPUT_KINDS_TAG: input_kinds(model.data)}
    info = _log_pyfunc("model", model, example, registered_model_name=name, tags=lineage)
    client = MlflowClient()
    version = str(info.registered_model_version)
    for key, value in lineage.items():
        client.set_model_version_tag(name, version, key, value)
    return RegisteredVersion(name, version, run.info.run_id)


EVALUATION_MODEL_TAG = "slipway.evaluation_model"  # the fit that did not see the test window, by model URI


def log_evaluation_model(model: ScoringModel, example: pd.DataFrame) -> str:
    """Log the evaluation fit in the active run (not registered); returns its model URI."""
    return str(_log_pyfunc("evaluation_model", model, example).model_uri)


def held_out_model_uri(name: str, version: str) -> str:
    """The model to judge a version by on its test window: its evaluation fit when it has one.

    The registered fit of a version also learnt from its own test window, so a fair
    comparison on that window uses the evaluation fit, which never saw it.
    """
    tags = MlflowClient().get_model_version(name, version).tags or {}
    return tags.get(EVALUATION_MODEL_TAG) or f"models:/{name}/{version}"


def set_alias(version: RegisteredVersion, alias: str) -> None:
    MlflowClient().set_registered_model_alias(version.name, alias, version.version)


def alias_version(name: str, alias: str) -> str | None:
    """The version an alias points at, or None."""
    aliases = MlflowClient().get_registered_model(name).aliases or {}
    version = aliases.get(alias)
    return None if version is None else str(version)


def holdout_auc(name: str, version: str) -> float | None:
    """The version's ROC-AUC on its training holdout, as the train flow logged it (None if it has none)."""
    client = MlflowClient()
    run_id = client.get_model_version(name, version).run_id
    value = client.get_run(run_id).data.metrics.get("test_roc_auc") if run_id else None
    return None if value is None else float(value)


def signed_decision(name: str, key: Ed25519PublicKey) -> Decision | None:
    """The registered model's signed decision, verified; None if it has none. :class:`decision.Unverified` if forged."""
    text = (MlflowClient().get_registered_model(name).tags or {}).get(DECISION_TAG)
    return decision.read(text, key, name) if text else None


def _signed_champion(name: str, key: Ed25519PrivateKey) -> str | None:
    """The champion as last signed. The alias only before anything was signed (the first signed decision adopts it)."""
    signed = signed_decision(name, key.public_key())  # a forged record raises: nothing is signed on top of it
    return signed.champion if signed is not None else alias_version(name, CHAMPION)


def publish_decision(name: str, champion: str | None, routing: Routing, key: Ed25519PrivateKey | None = None) -> None:
    """Sign what the service is to serve (with ``SLIPWAY_PROMOTION_KEY`` unless ``key`` is given; unsigned: nothing).

    Written before the readable mirrors (alias, routing tags), so the service never
    follows a mirror ahead of its decision. The sequence number only grows: at least
    the time in microseconds, so a forged record cannot push it back.
    """
    key = key or decision.env_signer()
    if key is None:
        return
    try:
        current = signed_decision(name, key.public_key())
    except decision.Unverified:
        current = None  # replaced by this one
    seq = max((current.seq if current else 0) + 1, time.time_ns() // 1000)
    MlflowClient().set_registered_model_tag(name, DECISION_TAG, Decision(name, champion, routing, seq).signed(key))


class RegistryTampered(Refused):
    """The registry's champion or routing is not what was signed: changed outside Slipway's flows."""


def _signed_state(name: str, decision_key: str) -> tuple[Decision | None, list[str]]:
    """The signed decision and where the registry disagrees with it, from one read of the registered model."""
    registered = MlflowClient().get_registered_model(name)
    tags = dict(registered.tags or {})
    text = tags.get(DECISION_TAG)
    if not text:
        return None, []
    try:
        signed = decision.read(text, signing.public_key(decision_key, "promotion.decision_key"), name)
    except decision.Unverified as exc:
        return None, [str(exc)]
    alias = (registered.aliases or {}).get(CHAMPION)
    return signed, decision.mismatches(signed, None if alias is None else str(alias), Routing.from_tags(tags))


def signed_state_problems(name: str, decision_key: str) -> list[str]:
    """Where the registry disagrees with the signed decision (empty when it agrees or nothing is signed)."""
    return _signed_state(name, decision_key)[1] if decision_key else []


def served_champion(name: str, decision_key: str) -> str | None:
    """The champion the service serves: the signed one when decisions are signed (None before the first), else the alias.

    :class:`RegistryTampered` when the registry disagrees with what was signed:
    nothing is to be decided on top of a registry changed behind the platform's back.
    """
    if not decision_key:
        return alias_version(name, CHAMPION)
    signed, problems = _signed_state(name, decision_key)
    if problems:
        raise RegistryTampered(
            f"{name!r}: the registry disagrees with the signed decision ({'; '.join(problems)}): it was changed "
            "outside Slipway's flows. 'slipway history' shows the audit trail; 'slipway run switch version=N "
            "reason=...' re-signs a champion"
        )
    return signed.champion if signed is not None else None


def switch_champion(name: str, version: str, actor: str, audit: AuditLog, reason: str) -> str | None:
    """Point ``champion`` at ``version``: audited, signed, then the alias; remember the previous one.

    Re-running after a crash is safe: if ``version`` already is the (signed)
    champion nothing changes. Returns the previous champion.
    """
    client = MlflowClient()
    key = decision.env_signer()
    alias = previous = alias_version(name, CHAMPION)
    done = previous == version
    if key is not None:
        signed = None
        with contextlib.suppress(decision.Unverified):  # a forged record: this switch replaces it (break-glass)
            signed = signed_decision(name, key.public_key())
        previous = signed.champion if signed is not None else alias
        done = signed is not None and signed.champion == version and alias == version
    if done:
        return previous
    now = datetime.now(UTC).isoformat()
    audit.append("champion_switch", actor, name, version, {"previous": previous, "reason": reason})  # intent first
    publish_decision(name, version, Routing(), key)  # what the service follows, when decisions are signed
    client.set_registered_model_alias(name, CHAMPION, version)  # the switch itself: one atomic update
    if previous is not None and previous != version:
        client.set_registered_model_tag(name, PREVIOUS_CHAMPION_TAG, previous)
        client.set_model_version_tag(name, previous, "slipway.champion_until", now)
    client.set_model_version_tag(name, version, "slipway.champion_since", now)
    client.set_model_version_tag(name, version, "slipway.promoted_by", actor)
    if alias_version(name, CHALLENGER) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    _mirror_routing(name, Routing())
    audit.append("switch_applied", actor, name, version, {"previous": previous})
    return previous


def rollback_champion(name: str, actor: str, audit: AuditLog, reason: str) -> str:
    """Restore the previous champion in one step; returns the restored version."""
    client = MlflowClient()
    registered = client.get_registered_model(name)
    previous: str | None = (registered.tags or {}).get(PREVIOUS_CHAMPION_TAG)
    key = decision.env_signer()
    current = _signed_champion(name, key) if key is not None else alias_version(name, CHAMPION)
    if previous is None or previous == current:
        raise RuntimeError(f"{name!r}: no previous champion is recorded, nothing to roll back to")
    now = datetime.now(UTC).isoformat()
    audit.append("rollback", actor, name, previous, {"from": current, "reason": reason})  # intent first
    publish_decision(name, previous, Routing(), key)
    _mirror_routing(name, Routing())  # stop any canary or shadow first
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.delete_registered_model_tag(name, PREVIOUS_CHAMPION_TAG)  # never "roll back" onto the version just removed
    if current is not None:
        client.set_model_version_tag(name, current, "slipway.rolled_back", f"{now} by {actor}: {reason}")
    client.set_model_version_tag(name, previous, "slipway.champion_since", now)
    audit.append("rollback_applied", actor, name, previous, {"from": current})
    return previous


STATUS_TAG = "slipway.promotion.status"


def set_routing(name: str, routing: Routing) -> None:
    """Write the routing record the scoring service follows: signed (when a promotion key is set), then its tags."""
    key = decision.env_signer()
    if key is not None:
        publish_decision(name, _signed_champion(name, key), routing, key)
    _mirror_routing(name, routing)


def _mirror_routing(name: str, routing: Routing) -> None:
    client = MlflowClient()
    for tag, value in routing.to_tags().items():
        client.set_registered_model_tag(name, tag, value)


def renew_routing_lease(name: str, routing: Routing) -> None:
    """Renew the lease of ``routing`` (the rest of the record is unchanged).

    Signed: the signed record's own routing is renewed, never the tags (which anyone
    with MLflow write access could have rewritten), and only while it is leased.
    """
    if routing.lease_until is None:
        return
    key = decision.env_signer()
    if key is not None:
        signed = signed_decision(name, key.public_key())
        if signed is None or signed.routing.lease_until is None:
            return
        renewed = dataclasses.replace(signed.routing, lease_until=routing.lease_until)
        publish_decision(name, signed.champion, renewed, key)
    MlflowClient().set_registered_model_tag(name, LEASE_TAG, routing.lease_until.isoformat())


def current_routing(name: str) -> Routing:
    return Routing.from_tags(dict(MlflowClient().get_registered_model(name).tags or {}))


def record_decision(name: str, version: str, status: str, details: dict[str, str]) -> None:
    """Put a promotion decision on the version's tags, next to its lineage."""
    client = MlflowClient()
    client.set_model_version_tag(name, version, STATUS_TAG, status)
    for key, value in details.items():
        client.set_model_version_tag(name, version, f"slipway.promotion.{key}", value[:5000])


def load_scorer(name: str, version: str) -> FastScorer:
    """Load a registered pyfunc and compile its pipeline for the hot path."""
    inner = mlflow.pyfunc.load_model(f"models:/{name}/{version}").unwrap_python_model()
    return FastScorer(inner.pipeline, inner.data)
