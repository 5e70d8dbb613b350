"""``slipway up`` / ``slipway down``: the local stack as background processes.

Up starts, in order, the Prefect server (unless ``PREFECT_API_URL`` points at
one), the MLflow UI on the tracking store, the Evidently UI (the monitoring
dashboard), the scoring service, and the runner that serves every flow as a
deployment. Each runs in its own session with its log under
``SLIPWAY_HOME/stack/``; their pids go to ``stack.json`` so down can stop exactly
them, whichever shell it runs in.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import httpx

from models.decision import KEY_ENV
from slipway.catalog import FLOWS, deployment_name
from slipway.paths import Home
from slipway.processes import answers, start_detached, stop_group
from slipway.settings import load_settings
from slipway.signing import APPROVER_KEY_ENV

REPO = Path(__file__).resolve().parent.parent


def _state_file(home: Home) -> Path:
    return home.root / "stack" / "stack.json"


def recorded_url(home: Home, part: str) -> str | None:
    """The URL ``slipway up`` recorded for one part of the stack (``mlflow``, ``dashboard`` …), if it is up."""
    try:
        entry = json.loads(_state_file(home).read_text()).get(part) or {}
    except (OSError, ValueError):
        return None
    return str(entry["url"]) if "url" in entry else None


def _alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def up(
    params: str, prefect_port: int, mlflow_port: int | None, dashboard_port: int | None = None
) -> dict[str, dict[str, object]]:
    """Start what is not running yet (the MLflow and Evidently UIs only with a port); return the stack (name → pid, url, log)."""
    home = Home.current()
    settings = load_settings(params)
    state_file = _state_file(home)
    stack: dict[str, dict[str, object]] = json.loads(state_file.read_text()) if state_file.exists() else {}
    stack = {k: v for k, v in stack.items() if v.get("pid") is None or _alive(int(str(v["pid"])))}
    logs = home.root / "stack"
    env = dict(os.environ)
    if "prefect" not in stack:
        api = env.get("PREFECT_API_URL")
        if api:
            if not answers(f"{api.rstrip('/')}/health")():
                raise RuntimeError(f"PREFECT_API_URL={api} does not answer /health; start that server or unset the variable")
            stack["prefect"] = {"pid": None, "url": api.removesuffix("/api"), "log": None}
        else:
            api = f"http://127.0.0.1:{prefect_port}/api"
            command = [_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)]
            # the UI otherwise looks for the API on port 4200; alerts link to runs on the UI's address
            server_env = {**env, "PREFECT_UI_API_URL": api, "PREFECT_UI_URL": api.removesuffix("/api")}
            pid = start_detached(command, answers(f"{api}/health"), logs / "prefect.log", env=server_env)
            stack["prefect"] = {"pid": pid, "url": api.removesuffix("/api"), "log": str(logs / "prefect.log")}
    env["PREFECT_API_URL"] = f"{stack['prefect']['url']}/api"
    if "mlflow" not in stack and mlflow_port is not None:
        url = f"http://127.0.0.1:{mlflow_port}"
        command = [_bin("mlflow"), "ui", "--backend-store-uri", env["MLFLOW_TRACKING_URI"], "--port", str(mlflow_port)]
        pid = start_detached(command, answers(url), logs / "mlflow.log", env=env)
        stack["mlflow"] = {"pid": pid, "url": url, "log": str(logs / "mlflow.log")}
    if "dashboard" not in stack and dashboard_port is not None:  # the Evidently UI over the monitor runs' snapshots
        url = f"http://127.0.0.1:{dashboard_port}"
        home.evidently.mkdir(parents=True, exist_ok=True)
        command = [
            _bin("evidently"),
            "ui",
            "--workspace",
            str(home.evidently),
            "--host",
            "127.0.0.1",
            "--port",
            str(dashboard_port),
        ]
        pid = start_detached(command, answers(url), logs / "dashboard.log", env=env)
        stack["dashboard"] = {"pid": pid, "url": url, "log": str(logs / "dashboard.log")}
    if "scoring" not in stack:
        service = urlparse(settings.promotion.service_url)
        port = service.port or 80
        command = [_bin("bentoml"), "serve", "bentos.service:Scoring", "--host", "127.0.0.1", "--port", str(port)]
        # the public scoring service holds no signing key: it verifies decisions, it never makes them
        service_env = {k: v for k, v in env.items() if k not in (KEY_ENV, APPROVER_KEY_ENV)}
        service_env["SLIPWAY_PARAMS"] = str(Path(params).resolve())
        pid = start_detached(
            command, answers(f"{service.scheme}://127.0.0.1:{port}/livez"), logs / "scoring.log", service_env, REPO
        )
        stack["scoring"] = {"pid": pid, "url": settings.promotion.service_url, "log": str(logs / "scoring.log")}
    if "deployments" not in stack:
        command = [sys.executable, "-m", "flows.deployments", "--params", str(Path(params).resolve())]
        registered = _registered_since(env["PREFECT_API_URL"], datetime.now(UTC))
        pid = start_detached(command, registered, logs / "deployments.log", env, REPO)
        stack["deployments"] = {"pid": pid, "url": f"{stack['prefect']['url']}/deployments", "log": str(logs / "deployments.log")}
    state_file.parent.mkdir(parents=True, exist_ok=True)
    state_file.write_text(json.dumps(stack, indent=2))
    from flows.automations import ensure_automations  # Prefect's client: only ``up`` needs it, ``down`` stays light

    automations = ensure_automations(env["PREFECT_API_URL"], str(Path(params).resolve()))
    stack["automations"] = {"pid": None, "url": f"{stack['prefect']['url']}/automations", "log": ", ".join(automations)}
    return stack


def _registered_since(api: str, since: datetime) -> Callable[[], bool]:
    """Ready once this runner has (re)registered every deployment: older ones may carry other params."""

    def probe() -> bool:
        for flow in FLOWS:
            try:
                response = httpx.get(f"{api.rstrip('/')}/deployments/name/{deployment_name(flow)}", timeout=5)
            except httpx.HTTPError:
                return False
            if response.status_code != 200 or datetime.fromisoformat(response.json()["updated"]) < since:
                return False
        return True

    return probe


def down() -> list[str]:
    """Stop every process ``up`` started; return their names."""
    state_file = _state_file(Home.current())
    if not state_file.exists():
        return []
    stack = json.loads(state_file.read_text())
    stopped = [name for name, entry in reversed(stack.items()) if entry.get("pid") and stop_group(int(entry["pid"]))]
    state_file.unlink()
    return stopped
