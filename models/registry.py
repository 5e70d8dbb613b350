"""Registering versions per the model contract and keeping their lineage."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow import MlflowClient
from mlflow.models import infer_signature
from mlflow.tracking.fluent import ActiveRun

import features
import models
import slipway
from models.pyfunc import ScoringModel

CHAMPION = "champion"
CHALLENGER = "challenger"


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


def log_and_register(
    run: ActiveRun, model: ScoringModel, example: pd.DataFrame, name: str, lineage: dict[str, str]
) -> RegisteredVersion:
    """Log the pyfunc with signature and input example, register it, tag its lineage."""
    output = model.predict(None, example)
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=model,
        signature=infer_signature(example, output),
        input_example=example,
        code_paths=[str(Path(str(package.__file__)).parent) for package in (models, features, slipway)],
        registered_model_name=name,
        tags=lineage,
    )
    client = MlflowClient()
    version = str(info.registered_model_version)
    for key, value in lineage.items():
        client.set_model_version_tag(name, version, key, value)
    return RegisteredVersion(name, version, run.info.run_id)


def set_alias(version: RegisteredVersion, alias: str) -> None:
    MlflowClient().set_registered_model_alias(version.name, alias, version.version)
