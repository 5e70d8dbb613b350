"""A replica started while the MLflow server is down: alive at once, ready by itself once the registry is back.

With a Bento packaged by ``slipway run package``, it serves the packaged champion at once, if the
signed decision packaged with it verifies, and follows the registry once it answers.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import httpx
import pytest

from models.decision import KEY_ENV
from models.registry import CHAMPION, publish_decision
from models.routing import Routing
from slipway import signing
from slipway.processes import answers, free_port, running_server
from tests.conftest import preserved_environment, slipway
from tests.serving import sample_service

pytestmark = pytest.mark.e2e  # starts real servers or processes


def test_a_replica_started_while_mlflow_is_down_is_alive_at_once_and_serves_once_it_is_back(tmp_path: Path) -> None:
    port = free_port()
    registry = f"http://127.0.0.1:{port}"  # nothing listens there yet
    nothing_packaged = {"BENTOML_HOME": str(tmp_path / "bentoml")}  # an empty model store: no Bento to start from
    with sample_service(tmp_path, tracking_uri=registry, ready="/livez", extra_env=nothing_packaged) as served:
        assert httpx.get(f"{served.url}/livez", timeout=5).status_code == 200
        assert httpx.get(f"{served.url}/readyz", timeout=5).status_code == 503  # no traffic before a champion loads
        refused = httpx.post(f"{served.url}/predict", json={"rows": served.rows[:1]}, timeout=10)
        assert refused.status_code == 503, refused.text

        database = served.env["MLFLOW_TRACKING_URI"]  # the deployment's own registry, now behind a server
        command = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", database]
        command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
        with running_server(command, answers(f"{registry}/health"), tmp_path / "mlflow.log", env=served.env):
            deadline = time.monotonic() + 120
            while httpx.get(f"{served.url}/readyz", timeout=5).status_code != 200:
                assert time.monotonic() < deadline, "the replica did not become ready once the registry was back"
                time.sleep(1)
            scored = httpx.post(f"{served.url}/predict", json={"rows": served.rows[:3]}, timeout=10)
        assert scored.status_code == 200, scored.text
        assert {p["model_version"] for p in scored.json()["predictions"]} == {"1"}


def _mlflow_server(database: str, port: int) -> list[str]:
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", database]
    return [*command, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]


def test_a_replica_started_while_mlflow_is_down_serves_the_signed_champion_packaged_in_its_bento(
    tmp_path: Path, prefect_server: str
) -> None:
    key = signing.new_private_key()
    port = free_port()
    registry = f"http://127.0.0.1:{port}"  # nothing listens there yet
    extra = {"BENTOML_HOME": str(tmp_path / "bentoml"), "PREFECT_API_URL": prefect_server}

    def package(env: dict[str, str]) -> None:  # the real flow: the served versions and the signed decision, packaged
        slipway(["run", "package", "--params", env["SLIPWAY_PARAMS"]], env, timeout=600, check=True)

    # waits for /readyz: ready without any registry, from what was packaged
    with sample_service(tmp_path, tracking_uri=registry, promotion_key=key, extra_env=extra, before_serve=package) as served:
        status = httpx.get(f"{served.url}/readyz", timeout=5).json()
        assert status["from_bundle"] is True and status["champion"] == "1" and status["routing"] == "champion", status
        assert status["decision_seq"] and status["registry_error"], status
        scored = httpx.post(f"{served.url}/predict", json={"rows": served.rows[:3]}, timeout=10)
        assert scored.status_code == 200 and {p["model_version"] for p in scored.json()["predictions"]} == {"1"}

        name = served.settings.registry.model_name
        with preserved_environment():  # meanwhile, a signed switch to v2 lands in the registry the replica cannot see
            os.environ.update({"MLFLOW_TRACKING_URI": served.env["MLFLOW_TRACKING_URI"], KEY_ENV: served.env[KEY_ENV]})
            publish_decision(name, "2", Routing(), key)
            served.client().set_registered_model_alias(name, CHAMPION, "2")
        command = _mlflow_server(served.env["MLFLOW_TRACKING_URI"], port)
        with running_server(command, answers(f"{registry}/health"), tmp_path / "mlflow.log", env=served.env):
            deadline = time.monotonic() + 120
            while (status := httpx.get(f"{served.url}/readyz", timeout=5).json())["champion"] != "2":
                assert time.monotonic() < deadline, f"the replica did not follow the registry once it was back: {status}"
                time.sleep(1)
            assert status["from_bundle"] is False and status["registry_error"] is None and not status["unverified"]
            scored = httpx.post(f"{served.url}/predict", json={"rows": served.rows[:3]}, timeout=10)
        assert {p["model_version"] for p in scored.json()["predictions"]} == {"2"}


def test_a_packaged_champion_whose_decision_does_not_verify_is_not_served(tmp_path: Path, prefect_server: str) -> None:
    port = free_port()
    extra = {"BENTOML_HOME": str(tmp_path / "bentoml"), "PREFECT_API_URL": prefect_server}

    def package_then_forge(env: dict[str, str]) -> None:
        slipway(["run", "package", "--params", env["SLIPWAY_PARAMS"]], env, timeout=600, check=True)
        # an operator's params now name another promotion key: the packaged decision is not signed by it
        raw = Path(env["SLIPWAY_PARAMS"]).read_text()
        other = signing.public_text(signing.new_private_key().public_key())
        Path(env["SLIPWAY_PARAMS"]).write_text(raw.replace(_decision_key(raw), other))

    key = signing.new_private_key()
    with sample_service(
        tmp_path,
        tracking_uri=f"http://127.0.0.1:{port}",
        ready="/livez",
        promotion_key=key,
        extra_env=extra,
        before_serve=package_then_forge,
    ) as served:
        deadline = time.monotonic() + 120
        while "not served" not in (tmp_path / "bentoml.log").read_text():  # the bundle was tried and refused
            assert time.monotonic() < deadline, "the packaged champion was neither served nor refused"
            time.sleep(0.5)
        ready = httpx.get(f"{served.url}/readyz", timeout=5)
        assert ready.status_code == 503 and ready.json()["champion"] is None and ready.json()["from_bundle"] is False


def _decision_key(params: str) -> str:
    import yaml

    return str(yaml.safe_load(params)["promotion"]["decision_key"])
