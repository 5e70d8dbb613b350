"""Shared fixtures: an isolated Slipway home per test, small configs, real servers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from slipway.processes import answers, free_port, running_server

REPO = Path(__file__).resolve().parent.parent
SLIPWAY = str(Path(sys.executable).parent / "slipway")


def run_command(
    command: list[str], env: dict[str, str], cwd: Path = REPO, timeout: float = 600, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run a command as a user would; with ``check`` a non-zero exit fails the test, showing the output's tail."""
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        assert done.returncode == 0, f"{' '.join(command)} exited {done.returncode}:\n{output}"
    return done


def slipway(
    args: list[str], env: dict[str, str], cwd: Path = REPO, timeout: float = 600, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """The ``slipway`` command installed next to this interpreter."""
    return run_command([SLIPWAY, *args], env, cwd, timeout, check)


def small_params(tmp: Path, rows: int = 3000, n_trials: int = 3, **faults: float) -> dict[str, Any]:
    """The shipped lead config, shrunk for tests and pointed at a source under ``tmp``."""
    raw: dict[str, Any] = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["source"] = str(tmp / "leads.csv")
    raw["generate"]["rows"] = rows
    raw["generate"]["faults"] = {"nulls": 0.0, "out_of_range": 0.0, "wrong_types": 0.0, "duplicates": 0.0, **faults}
    raw["train"]["n_trials"] = n_trials
    return raw


def write_params(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def write_demo_params(path: Path, raw: dict[str, Any]) -> Path:
    """Write the params file and, as ``slipway generate`` would, its generated source (ingest never generates)."""
    from slipway.datagen import generate_leads, write_generated
    from slipway.settings import load_settings

    settings = load_settings(write_params(path, raw))
    assert settings.generate is not None, "write_demo_params needs a generate: section"
    write_generated(generate_leads(settings.generate), settings.data.source)
    return path


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextmanager
def preserved_environment() -> Iterator[None]:
    """Undo every environment change made inside, including prepare_environment()'s defaults."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A fresh SLIPWAY_HOME with its own MLflow store."""
    root = tmp_path / "home"
    with preserved_environment():
        os.environ["SLIPWAY_HOME"] = str(root)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
        from slipway.paths import prepare_environment

        prepare_environment()
        yield root


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server process (SQLite), shared by the CLI tests."""
    port = free_port()
    prefect_home = tmp_path_factory.mktemp("prefect-server")
    env = {**os.environ, "PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    prefect = shutil.which("prefect", path=str(Path(sys.executable).parent))
    assert prefect, "the prefect executable is not installed next to this interpreter"
    url = f"http://127.0.0.1:{port}/api"
    env["PREFECT_UI_API_URL"] = url  # the UI otherwise looks for the API on the default port
    env["PREFECT_UI_URL"] = url.removesuffix("/api")  # where alerts' links to runs point
    command = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with running_server(command, answers(f"{url}/health"), prefect_home / "server.log", env=env):
        yield url
