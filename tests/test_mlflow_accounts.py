"""The production profile's MLflow accounts, against a real ``mlflow server --app-name basic-auth`` started by
``infra/mlflow/start.sh``: the flows' account owns the model it registers; the scoring account reads it and can
change nothing, so the service's credentials cannot move an alias, a routing tag or the signed decision."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from models.decision import DECISION_TAG
from slipway.processes import answers, free_port, running_server
from tests.conftest import REPO, preserved_environment

pytestmark = pytest.mark.e2e  # starts a real MLflow server

ADMIN, FLOWS, SCORING = ("admin", "admin-secret-1"), ("slipway", "flows-secret-1"), ("scoring", "scoring-secret-1")


@pytest.fixture(scope="module")
def mlflow_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow-auth")
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_BACKEND_STORE_URI": f"sqlite:///{root / 'mlflow.db'}",
        "MLFLOW_AUTH_DATABASE_URI": f"sqlite:///{root / 'auth.db'}",
        "MLFLOW_ARTIFACTS_DESTINATION": str(root / "artifacts"),
        "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN[0],
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-only-secret",
        "MLFLOW_HOST": "127.0.0.1",
        "MLFLOW_PORT": str(port),
        "MLFLOW_WORKERS": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    url = f"http://127.0.0.1:{port}"
    with running_server(["sh", str(REPO / "infra" / "mlflow" / "start.sh")], answers(f"{url}/health"), root / "mlflow.log", env):
        yield url


def as_user(url: str, user: tuple[str, str]) -> MlflowClient:
    os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = user
    return MlflowClient(tracking_uri=url)


def test_only_the_flows_account_changes_the_model_and_the_scoring_account_reads_it(mlflow_auth: str) -> None:
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": mlflow_auth,
        "MLFLOW_TRACKING_USERNAME": ADMIN[0],
        "MLFLOW_TRACKING_PASSWORD": ADMIN[1],
        "SLIPWAY_MLFLOW_FLOWS_PASSWORD": FLOWS[1],
        "SLIPWAY_MLFLOW_SCORING_PASSWORD": SCORING[1],
    }
    script = [sys.executable, str(REPO / "infra" / "mlflow" / "accounts.py")]
    first = subprocess.run(script, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0 and "created now: slipway, scoring" in first.stdout, first.stdout + first.stderr
    again = subprocess.run(script, env=env, capture_output=True, text=True, timeout=120)  # idempotent
    assert again.returncode == 0 and "created now: none" in again.stdout, again.stdout + again.stderr
    missing = subprocess.run(
        script,
        env={k: v for k, v in env.items() if k != "SLIPWAY_MLFLOW_SCORING_PASSWORD"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "SLIPWAY_MLFLOW_SCORING_PASSWORD" in missing.stderr

    with preserved_environment():
        flows = as_user(mlflow_auth, FLOWS)
        flows.create_registered_model("leads")
        flows.set_registered_model_tag("leads", DECISION_TAG, "signed by the promote flow")

        scoring = as_user(mlflow_auth, SCORING)
        assert scoring.get_registered_model("leads").tags[DECISION_TAG] == "signed by the promote flow"
        for change in (
            lambda: scoring.set_registered_model_tag("leads", DECISION_TAG, "forged"),
            lambda: scoring.set_registered_model_tag("leads", "slipway.routing.mode", "canary"),
            lambda: scoring.delete_registered_model_tag("leads", DECISION_TAG),
            lambda: scoring.delete_registered_model("leads"),
        ):
            with pytest.raises(MlflowException, match=r"PERMISSION_DENIED|Permission denied"):
                change()

        outsider = as_user(mlflow_auth, ("scoring", "a guessed password"))
        with pytest.raises(MlflowException, match=r"401|Unauthorized|credentials"):
            outsider.get_registered_model("leads")
        assert as_user(mlflow_auth, FLOWS).get_registered_model("leads").tags[DECISION_TAG] == "signed by the promote flow"
