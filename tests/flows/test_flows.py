"""The flows end to end in-process, against a temporary Prefect server, MLflow and Feast."""

import hashlib
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from mlflow import MlflowClient

from features.validation import REASON_COLUMN, SchemaError
from flows.ingest import ingest
from flows.materialize import materialize
from flows.train import train
from slipway.feature_store import open_store
from slipway.settings import load_settings
from tests.conftest import small_params, write_demo_params, write_params

pytestmark = pytest.mark.e2e  # starts real servers or processes


def test_lead_pipeline_registers_a_challenger_with_lineage(home: Path, tmp_path: Path) -> None:
    params = str(write_demo_params(tmp_path / "params.yaml", small_params(tmp_path, nulls=0.01, duplicates=0.01)))

    rec = ingest(params)
    assert (rec.rows_in, rec.rows_accepted, rec.rows_quarantined) == (3030, 2970, 60)
    quarantine = pd.read_parquet(next((home / "lake" / "quarantine").glob("*.parquet")))
    assert len(quarantine) == 60 and quarantine[REASON_COLUMN].str.len().gt(0).all()
    assert len(list((home / "lake" / "bronze").glob("*/leads.csv"))) == 1
    assert len(list((home / "validations").glob("*.json"))) == 1

    assert materialize(params) == 2970
    store = open_store()
    online = store.get_online_features(
        features=store.get_feature_service("lead_scoring_v1"), entity_rows=[{"lead_id": "L0070000001"}]
    ).to_dict()
    assert online["industry"][0] is not None

    result = train(params)
    client = MlflowClient()
    version = client.get_model_version_by_alias("lead-scoring", "challenger")
    assert str(version.version) == result.version == "1"
    tags = version.tags
    for key in (
        "git_commit",
        "dvc_data_md5",
        "feast_feature_service",
        "params_hash",
        "optuna_study",
        "training_window_start",
        "training_window_end",
    ):
        assert tags.get(key), key
    assert tags["feast_feature_service"] == "lead_scoring_v1"
    raw_md5 = hashlib.md5((tmp_path / "leads.csv").read_bytes(), usedforsecurity=False).hexdigest()
    assert tags["dvc_data_md5"] == raw_md5 and tags["bronze_batches"] == rec.batch_id  # the batch actually used
    assert tags["training_window_end"] == tags["test_window_end"] > tags["evaluation_fit_window_end"]  # learnt from all
    held_out = mlflow.pyfunc.load_model(tags["slipway.evaluation_model"])  # the fit the estimate comes from
    assert held_out.metadata.run_id == result.run_id
    run_inputs = client.get_run(result.run_id).inputs
    assert run_inputs is not None
    inputs = run_inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["training_set"] and inputs[0].dataset.digest == tags["training_set_digest"]

    run = client.get_run(result.run_id)
    nested = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{result.run_id}'")
    assert len(nested) >= 1  # pruned trials are not logged
    assert {"test_roc_auc", "test_pr_auc", "test_log_loss", "test_brier", "test_precision_at_k", "test_recall_at_k"} <= set(
        run.data.metrics
    )
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert {
        f"plots/{p}.png" for p in ("roc", "precision_recall", "calibration", "feature_importance", "optimisation_history")
    } == artifacts

    model = mlflow.pyfunc.load_model("models:/lead-scoring@challenger")
    signature = model.metadata.get_input_schema()
    assert signature is not None and signature.input_names() == load_settings(params).data.features
    example = pd.DataFrame(online).drop(columns=["lead_id"])
    score = model.predict(example)
    assert np.all((score > 0) & (score < 1))


def test_second_dataset_with_awkward_names(home: Path, tmp_path: Path) -> None:
    from tests.conftest import REPO

    params = str(REPO / "examples" / "equipment" / "params.yaml")
    rec = ingest(params)
    assert rec.rows_in == rec.rows_accepted == 4000
    materialize(params)
    result = train(params)
    assert str(MlflowClient().get_model_version_by_alias("machine-failure", "challenger").version) == result.version
    assert result.test_metrics["roc_auc"] > 0.7
    model = mlflow.pyfunc.load_model("models:/machine-failure@challenger")
    row = pd.DataFrame(
        [
            {
                "sensor.temp": 71.0,
                "vibration level": 2.0,
                "pressure psi": 30.0,
                "hours since service": 100.0,
                "machine type": "pump",
                "site": "Plant B",
            }
        ]
    )
    assert 0 < float(model.predict(row)[0]) < 1


def test_broken_schema_is_rejected_and_kept_in_bronze(home: Path, tmp_path: Path) -> None:
    raw = small_params(tmp_path, rows=200)
    raw["generate"]["faults"]["broken_schema"] = True
    params = str(write_demo_params(tmp_path / "params.yaml", raw))
    with pytest.raises(SchemaError, match="'meetings', 'region'"):
        ingest(params)
    assert list((home / "lake" / "bronze").glob("*/leads.csv"))
    assert list((home / "lake" / "quarantine").glob("*.rejected.json"))
    assert not list((home / "lake" / "silver").glob("*.parquet"))


def test_package_builds_a_bento_with_the_served_versions(home: Path, tmp_path: Path) -> None:
    import bentoml

    from flows.package import package
    from models.routing import Mode, Routing
    from models.sample import build_sample_deployment
    from slipway.settings import load_settings

    params = write_params(tmp_path / "params.yaml", small_params(tmp_path, rows=1500))
    settings = load_settings(params)
    build_sample_deployment(settings)
    client = MlflowClient()
    name = settings.registry.model_name
    client.set_model_version_tag(name, "1", "git_commit", "abc123")
    for key, value in Routing(Mode.SHADOW).to_tags().items():
        client.set_registered_model_tag(name, key, value)

    tag = package(str(params))
    bento = bentoml.bentos.get(tag)
    labels = bento.info.labels
    assert labels["champion_version"] == "1" and labels["challenger_version"] == "2"
    assert labels["champion_git_commit"] == "abc123" and labels["model_name"] == name
    assert {str(m.tag).split(":")[0] for m in bento.info.all_models} == {f"{name}-v1", f"{name}-v2"}
    assert (Path(bento.path) / "src" / "bentos" / "service.py").exists()

    for key, value in Routing().to_tags().items():  # champion only: the challenger is not packaged
        client.set_registered_model_tag(name, key, value)
    alone = bentoml.bentos.get(package(str(params)))
    assert "challenger_version" not in alone.info.labels


def test_champion_switch_rollback_and_history(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli import history
    from flows.rollback import rollback
    from models import registry
    from models.sample import build_sample_deployment
    from slipway.audit import AuditError, AuditLog
    from slipway.paths import Home
    from slipway.settings import load_settings

    params = write_params(tmp_path / "params.yaml", small_params(tmp_path, rows=1500))
    name = load_settings(params).registry.model_name
    build_sample_deployment(load_settings(params))
    audit = AuditLog(Home.current().audit_log)

    assert registry.switch_champion(name, "2", "alice", audit, "approved after canary") == "1"
    assert registry.switch_champion(name, "2", "alice", audit, "re-run after a crash") == "2"  # idempotent
    client = MlflowClient()
    assert registry.alias_version(name, "champion") == "2" and registry.alias_version(name, "challenger") is None
    assert client.get_model_version(name, "2").tags["slipway.promoted_by"] == "alice"

    assert rollback(str(params), requested_by="bob", reason="canary errors") == "1"
    assert registry.alias_version(name, "champion") == "1"
    assert "canary errors" in client.get_model_version(name, "2").tags["slipway.rolled_back"]

    events = [e["event"] for e in audit.entries()]  # each decision written before the state it changes, then its outcome
    assert events == ["champion_switch", "switch_applied", "rollback", "rollback_applied"] and audit.verify() == 4
    history(str(params))
    out = capsys.readouterr().out
    assert "champion_switch" in out and "alice" in out and "rollback" in out and "bob" in out
    assert "agreement: audit log and registry name the same champion" in out
    with pytest.raises(RuntimeError, match="nothing to roll back to"):
        rollback(str(params), requested_by="bob")  # v1 has no recorded predecessor

    client.set_registered_model_alias(name, "champion", "2")  # someone with MLflow write access, behind the platform's back
    with pytest.raises(RuntimeError, match="disagree on the champion"):
        history(str(params))
    assert "DISAGREEMENT: the registry's champion alias is v2, but the audit log's last switch made v1" in capsys.readouterr().out
    client.set_registered_model_alias(name, "champion", "1")

    log = Home.current().audit_log  # the last decision cut from the file: the chain alone would still verify
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:-1]))
    assert AuditLog(log).verify() == 3
    with pytest.raises(AuditError, match="has 3 entries but the registry's anchor records 4"):
        history(str(params))


def test_a_failed_retraining_gives_the_cooldown_back(home: Path, tmp_path: Path) -> None:
    from flows.retrain import retrain
    from slipway.cooldown import current

    params = str(write_params(tmp_path / "params.yaml", small_params(tmp_path)))  # nothing ingested: materialize fails
    with pytest.raises(RuntimeError, match="silver is empty"):
        retrain(params, reason="drift")
    assert current(home / "reports" / "last_retrain.json") is None  # the next drift event retrains at once


def signed_deployment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Ed25519PrivateKey, str, str]:
    """The sample deployment with signed decisions, and this process holding the promotion key: key, model, decision_key."""
    from models import decision
    from models.sample import build_sample_deployment
    from slipway import signing
    from slipway.settings import load_settings

    key = signing.new_private_key()
    raw = small_params(tmp_path, rows=1500)
    raw["promotion"]["decision_key"] = signing.public_text(key.public_key())
    settings = load_settings(write_params(tmp_path / "params.yaml", raw))
    name, configured = settings.registry.model_name, settings.promotion.decision_key
    build_sample_deployment(settings)
    monkeypatch.setenv(decision.KEY_ENV, signing.private_pem(key))
    return key, name, configured


def test_signed_switches_routing_and_renewals_follow_only_the_signed_record(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models import decision, registry
    from models.routing import Mode, Routing
    from slipway import signing
    from slipway.audit import AuditLog
    from slipway.paths import Home

    key, name, configured = signed_deployment(tmp_path, monkeypatch)
    audit = AuditLog(Home.current().audit_log)
    client = MlflowClient()

    assert registry.served_champion(name, configured) is None  # nothing signed yet: the service serves nothing
    registry.switch_champion(name, "1", "ops", audit, "first champion")  # the sample's alias already says v1: signed now
    first = registry.signed_decision(name, key.public_key())
    assert first is not None and first.champion == "1" and registry.served_champion(name, configured) == "1"

    client.set_registered_model_alias(name, "champion", "2")  # behind the platform's back
    assert registry.signed_state_problems(name, configured) == ["the champion alias is v2, the signed champion v1"]
    with pytest.raises(registry.RegistryTampered, match="disagrees with the signed decision"):
        registry.served_champion(name, configured)
    leased = Routing(Mode.CANARY, 10, "2").leased(60)
    registry.set_routing(name, leased)  # signs the signed champion, not the moved alias
    signed = registry.signed_decision(name, key.public_key())
    assert signed is not None and signed.champion == "1" and signed.routing == leased and signed.seq > first.seq

    for tag, value in Routing(Mode.CANARY, 100, "2").to_tags().items():  # the tags rewritten to 100%
        client.set_registered_model_tag(name, tag, value)
    registry.renew_routing_lease(name, leased.leased(120))
    renewed = registry.signed_decision(name, key.public_key())
    assert renewed is not None and renewed.routing.canary_percent == 10  # the signed 10%, renewed; never the tags' 100%
    assert renewed.routing.lease_until is not None and leased.lease_until is not None
    assert renewed.routing.lease_until > leased.lease_until

    forged = decision.Decision(name, "2", seq=10**18).signed(signing.new_private_key())
    client.set_registered_model_tag(name, decision.DECISION_TAG, forged)
    with pytest.raises(decision.Unverified, match="not signed by the promotion key"):
        registry.set_routing(name, Routing())  # nothing is signed on top of a forged record
    registry.switch_champion(name, "2", "ops", audit, "break-glass: re-sign")  # the key's holder replaces it
    final = registry.signed_decision(name, key.public_key())
    assert final is not None and final.champion == "2" and final.routing == Routing()
    assert registry.signed_state_problems(name, configured) == []


def test_the_audit_head_signed_by_the_promotion_key_catches_a_log_rewritten_with_its_anchor(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone who can write the log's file and the registry, but holds no promotion key, cannot rewrite or cut it."""
    import json

    from models import decision, registry
    from slipway import signing
    from slipway.audit import AuditError, AuditLog
    from slipway.paths import Home

    _, name, configured = signed_deployment(tmp_path, monkeypatch)
    path = Home.current().audit_log
    log = registry.audit_log(path, name, configured)
    for event in ("promotion_requested", "approved", "champion_switch"):
        log.append(event, "alice", name, "2")
    monkeypatch.delenv(decision.KEY_ENV)  # the monitor flow, say: it appends without the key
    log.append("registry_unverified", "slipway", name, None)
    client = MlflowClient()
    signed = json.loads(client.get_registered_model(name).tags[registry.AUDIT_SIGNED_HEAD_TAG])
    assert signed["seq"] == 3 and log.verify() == 4  # the signed head lags at the key holder's last entry: fine
    original = path.read_text()

    # rewritten from scratch, "approved" by bob instead, with the unsigned anchor moved to match
    path.unlink()
    forged = AuditLog(path)
    for event, who in (("promotion_requested", "alice"), ("approved", "bob"), ("champion_switch", "bob")):
        last = forged.append(event, who, name, "2")
    client.set_registered_model_tag(name, registry.AUDIT_HEAD_TAG, json.dumps({"seq": last["seq"], "hash": last["hash"]}))
    assert AuditLog(path, registry.RegistryAnchor(name)).verify() == 3  # the unsigned anchor alone is fooled
    with pytest.raises(AuditError, match="entry 3 is not the one the promotion key signed"):
        log.verify()

    path.write_text("".join(original.splitlines(keepends=True)[:2]))  # cut below the signed head
    head = json.loads(path.read_text().splitlines()[-1])
    client.set_registered_model_tag(name, registry.AUDIT_HEAD_TAG, json.dumps({"seq": head["seq"], "hash": head["hash"]}))
    with pytest.raises(AuditError, match="was cut or rewritten"):
        log.verify()
    path.unlink()
    client.delete_registered_model_tag(name, registry.AUDIT_HEAD_TAG)  # the file and its unsigned anchor both gone
    with pytest.raises(AuditError, match=r"missing, but the registry's anchor records 3 entries"):
        log.verify()

    path.write_text(original)
    last_hash = json.loads(original.splitlines()[-1])["hash"]
    client.set_registered_model_tag(name, registry.AUDIT_HEAD_TAG, json.dumps({"seq": 4, "hash": last_hash}))
    assert log.verify() == 4  # restored: both heads agree with the file again
    other = signing.new_private_key()  # a signed head made with another key
    fake = {"seq": 4, "hash": last_hash, "signature": signing.sign(other, registry.audit_head_message(name, 4, last_hash))}
    client.set_registered_model_tag(name, registry.AUDIT_SIGNED_HEAD_TAG, json.dumps(fake))
    with pytest.raises(AuditError, match=r"does not verify with promotion\.decision_key: it was forged"):
        log.verify()
