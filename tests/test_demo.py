"""A smoke test of ``slipway demo``, the README's first command, with tiny settings."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.conftest import slipway, small_params, write_params

pytestmark = pytest.mark.e2e  # the whole local stack: Prefect server, runner, scoring service


def test_the_demo_runs_the_whole_loop_to_a_retrained_champion(tmp_path: Path) -> None:
    raw = small_params(tmp_path, rows=4000, n_trials=2, nulls=0.01)
    params = write_params(tmp_path / "params.yaml", raw)
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}  # embedded defaults only
    env["SLIPWAY_HOME"] = str(home)
    try:
        demo = slipway(["demo", "--params", str(params)], env, timeout=1500)
        output = demo.stdout + demo.stderr
        assert demo.returncode == 0, output[-6000:]
        assert re.search(r"champion\s+v2", demo.stdout), demo.stdout[-3000:]  # v1 promoted, drift retrained v2, v2 promoted
        assert "monitor (in-distribution):" in demo.stdout and "no drift" in demo.stdout.split("monitor (drifted)")[0]
        drifted = next(line for line in demo.stdout.splitlines() if "monitor (drifted):" in line)
        assert "no drift" not in drifted and "PSI" in drifted, drifted  # the drifted month raised drift, by feature
        statuses = re.search(r"traffic\s+(\d+) requests, statuses \{(.*)\}", demo.stdout)
        assert statuses and int(statuses.group(1)) > 0 and set(re.findall(r"(\d+):", statuses.group(2))) == {"200"}, statuses
        history = slipway(["history", "--params", str(home / "demo" / "params.yaml")], env, check=True).stdout
        assert history.count("champion_switch") == 2 and "slipway-demo" in history and "verified" in history
    finally:
        slipway(["down"], env)
