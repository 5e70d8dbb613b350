"""Package flow: a Bento from the MLflow registry, with the served versions and their lineage as labels."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import bentoml
import yaml
from mlflow import MlflowClient
from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import load_params
from models.decision import DECISION_TAG
from models.registry import CHALLENGER, CHAMPION
from models.routing import Mode, Routing
from slipway.settings import Settings

REPO = Path(__file__).resolve().parent.parent
BENTOFILE = REPO / "bentos" / "bentofile.yaml"
LINEAGE = ("git_commit", "dvc_data_md5", "params_hash", "optuna_study", "feast_feature_service")


@task(retries=2, retry_delay_seconds=[2, 10], cache_policy=NO_CACHE)
def served_versions(settings: Settings) -> dict[str, str]:
    """The champion, plus the version in shadow or canary (the challenger, or the previous champion under watch)."""
    registered = MlflowClient().get_registered_model(settings.registry.model_name)
    aliases = {alias: str(version) for alias, version in (registered.aliases or {}).items()}
    if CHAMPION not in aliases:
        raise RuntimeError(f"{settings.registry.model_name!r} has no '{CHAMPION}' alias: promote a version first")
    served = {CHAMPION: aliases[CHAMPION]}
    routing = Routing.from_tags(dict(registered.tags or {}))
    second = routing.version or aliases.get(CHALLENGER)
    if routing.mode is not Mode.CHAMPION and second not in (None, aliases[CHAMPION]):
        served[CHALLENGER] = str(second)
    return served


@task(cache_policy=NO_CACHE)
def import_models(settings: Settings, served: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """Copy each served version into the BentoML model store; collect lineage labels."""
    client, name = MlflowClient(), settings.registry.model_name
    tags, labels = [], {"model_name": name}
    signed = (client.get_registered_model(name).tags or {}).get(DECISION_TAG)
    for alias, version in served.items():
        lineage = client.get_model_version(name, version).tags
        model_labels = {"model_name": name, "registry_version": version, "alias": alias}
        model_labels.update({k: lineage[k] for k in LINEAGE if k in lineage})
        # the signed decision goes with the champion: a replica that starts while the registry is down
        # serves this champion only if the decision verifies (bentos/router.py)
        metadata = {DECISION_TAG: signed} if signed and alias == CHAMPION else {}
        uri = f"models:/{name}/{version}"
        model = bentoml.mlflow.import_model(f"{name}-v{version}", uri, labels=model_labels, metadata=metadata)
        tags.append(str(model.tag))
        labels[f"{alias}_version"] = version
        labels.update({f"{alias}_{k}": v for k, v in model_labels.items() if k in LINEAGE})
    return tags, labels


@task(cache_policy=NO_CACHE)
def build_bento(model_tags: list[str], labels: dict[str, str]) -> str:
    """The committed bentofile plus the served models, built with BentoML's public API."""
    spec: dict[str, Any] = yaml.safe_load(BENTOFILE.read_text())
    spec["models"] = model_tags
    with tempfile.TemporaryDirectory() as scratch:
        bentofile = Path(scratch) / "bentofile.yaml"
        bentofile.write_text(yaml.safe_dump(spec))
        bento = bentoml.bentos.build_bentofile(str(bentofile), labels={**spec.get("labels", {}), **labels}, build_ctx=str(REPO))
    return str(bento.tag)


@flow(name="package", log_prints=True)
def package(params: str = "params.yaml") -> str:
    """Build the scoring Bento for what the registry serves now."""
    settings = load_params(params)
    served = served_versions(settings)
    model_tags, labels = import_models(settings, served)
    tag = build_bento(model_tags, labels)
    lines = "\n".join(f"| {k} | {v} |" for k, v in sorted(labels.items()))
    create_markdown_artifact(key="bento", markdown=f"# Bento `{tag}`\n\n| label | value |\n|---|---|\n{lines}\n")
    print(f"bento={tag} with {', '.join(model_tags)}")
    return tag
