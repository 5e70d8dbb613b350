"""A replica started while the MLflow server is down: alive at once, ready by itself once the registry is back.

A champion whose artifacts are gone is never served silently: every replica reports the failed load.

With a Bento packaged by ``slipway run package``, it serves the packaged champion at once, if the
signed decision packaged with it verifies, and follows the registry once it answers.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from models.decision import KEY_ENV
from models.registry import CHAMPION, publish_decision
from models.routing import Routing
from slipway import signing
from slipway.processes import answers, free_port, running_server
from slipway.service_metrics import replica_problems
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


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(f"{name} ")))


def test_a_champion_whose_artifacts_vanished_is_reported_by_every_replica_and_requests_never_fail(tmp_path: Path) -> None:
    """The issue's fault: after a signed switch to v2, v2's artifacts are gone from the store.

    The running replica keeps serving v1 and a new one has nothing to serve; neither is silent:
    each reports the failed load on /readyz and on /metrics, where the production rules
    ``SlipwayRegistryUnreadable`` (each replica) and ``SlipwayReplicasDisagree`` (champion 1 vs 0) fire,
    and the monitor flow's check names each replica and what it serves.
    """
    key = signing.new_private_key()
    with sample_service(tmp_path, promotion_key=key) as served:
        name = served.settings.registry.model_name
        client = served.client()
        stored = client.get_model_version_download_uri(name, "2")
        assert stored.startswith("file://"), stored
        shutil.rmtree(Path(urlparse(stored).path))  # deleted from the artifact store behind the registry's back
        with preserved_environment():
            os.environ.update({"MLFLOW_TRACKING_URI": served.env["MLFLOW_TRACKING_URI"], KEY_ENV: served.env[KEY_ENV]})
            publish_decision(name, "2", Routing(), key)  # a signed switch: the replicas must follow it, and cannot
            client.set_registered_model_alias(name, CHAMPION, "2")

        deadline = time.monotonic() + 60
        while (status := httpx.get(f"{served.url}/readyz", timeout=5).json())["registry_error"] is None:
            assert time.monotonic() < deadline, f"the failed load of v2 was not reported: {status}"
            scored = httpx.post(f"{served.url}/predict", json={"rows": served.rows[:3]}, timeout=10)
            assert scored.status_code == 200, scored.text
            time.sleep(0.5)
        assert status["champion"] == "1" and status["registry_error"].startswith("loading v2: "), status  # keeps v1
        scored = httpx.post(f"{served.url}/predict", json={"rows": served.rows[:3]}, timeout=10)
        assert scored.status_code == 200 and {p["model_version"] for p in scored.json()["predictions"]} == {"1"}
        assert _metric(served.url, "slipway_serving_registry_error") == 1
        assert _metric(served.url, "slipway_serving_champion_version") == 1

        port = free_port()  # a replica started now, from the same registry
        url = f"http://127.0.0.1:{port}"
        command = [str(Path(sys.executable).parent / "bentoml"), "serve", "bentos.service:Scoring", "--port", str(port)]
        repo = Path(__file__).resolve().parents[2]
        env = {**served.env, "BENTOML_HOME": str(tmp_path / "empty-store")}  # nothing packaged to fall back on
        env.pop(KEY_ENV)  # a replica never holds the promotion key
        with running_server(command, answers(f"{url}/livez"), tmp_path / "new-replica.log", env=env, cwd=repo):
            deadline = time.monotonic() + 120
            while (fresh := httpx.get(f"{url}/readyz", timeout=5)).json()["registry_error"] is None:
                assert time.monotonic() < deadline, f"the new replica did not report the failed load: {fresh.text}"
                time.sleep(0.5)
            assert fresh.status_code == 503 and fresh.json()["champion"] is None, fresh.text  # not ready: no traffic
            assert fresh.json()["registry_error"].startswith("loading v2: "), fresh.text
            assert _metric(url, "slipway_serving_registry_error") == 1
            assert _metric(url, "slipway_serving_champion_version") == 0  # 1 on the old replica: they disagree, visibly
            told = replica_problems("2", [served.url, url])  # what the monitor flow alerts (tests/promotion/test_alerts.py)
            assert told == [
                f"{served.url} serves v1, not the champion v2 ({status['registry_error']})",
                f"{url} serves nothing, not the champion v2 ({fresh.json()['registry_error']})",
            ], told
