"""The ``slipway`` command as users run it: subprocesses against a real Prefect server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import REPO, SLIPWAY, slipway, small_params, write_demo_params, write_params

pytestmark = pytest.mark.e2e  # starts real servers or processes


@pytest.fixture
def env(tmp_path: Path, prefect_server: str) -> dict[str, str]:
    home = tmp_path / "home"
    out = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    return {
        **out,
        "SLIPWAY_HOME": str(home),
        "PREFECT_API_URL": prefect_server,
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
    }


def challenger(env: dict[str, str], name: str) -> str:
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    return str(client.get_model_version_by_alias(name, "challenger").version)


@pytest.mark.parametrize(
    ("params", "model"),
    [("lead", "lead-scoring"), ("examples/equipment/params.yaml", "machine-failure")],
)
def test_ingest_materialize_train_register_a_challenger(params: str, model: str, env: dict[str, str], tmp_path: Path) -> None:
    if params == "lead":
        params = str(write_demo_params(tmp_path / "params.yaml", small_params(tmp_path, rows=2500, wrong_types=0.01)))
    ingest = slipway(["run", "ingest", "--params", params], env)
    assert ingest.returncode == 0, ingest.stderr[-3000:]
    line = next(x for x in ingest.stdout.splitlines() if x.startswith("rows_in="))
    counts = dict(part.split("=") for part in line.split())
    assert int(counts["rows_in"]) == int(counts["rows_accepted"]) + int(counts["rows_quarantined"])
    for flow in ("materialize", "train"):
        done = slipway(["run", flow, "--params", params], env)
        assert done.returncode == 0, done.stderr[-3000:]
    assert challenger(env, model) == "1"


def test_errors_name_what_is_wrong_with_meaningful_exit_codes(env: dict[str, str], tmp_path: Path) -> None:
    bad_key = tmp_path / "typo.yaml"
    raw = small_params(tmp_path)
    raw["train"]["n_trails"] = 3
    write_params(bad_key, raw)
    result = slipway(["run", "train", "--params", str(bad_key)], env)
    assert result.returncode == 2 and "train.n_trails: unknown key" in result.stderr

    result = slipway(["run", "promote-everything"], env)
    assert result.returncode == 2 and "unknown flow 'promote-everything'" in result.stderr

    result = slipway(["run", "ingest", "colour=blue"], env)
    assert result.returncode == 2 and "unknown parameter 'colour'" in result.stderr

    missing = small_params(tmp_path)
    missing.pop("generate")
    missing["data"]["source"] = str(tmp_path / "absent.csv")
    result = slipway(["run", "ingest", "--params", str(write_params(tmp_path / "m.yaml", missing))], env)
    assert result.returncode == 3 and "absent.csv" in result.stderr and "file not found" in result.stderr

    broken = small_params(tmp_path, rows=100)
    broken["generate"]["faults"]["broken_schema"] = True
    result = slipway(["run", "ingest", "--params", str(write_demo_params(tmp_path / "b.yaml", broken))], env)
    assert result.returncode == 3 and "'meetings', 'region'" in result.stderr


def test_dvc_repro_reproduces_then_does_nothing(env: dict[str, str], tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    for tracked in subprocess.run(
        ["git", "ls-files", "-m", "-o", "--exclude-standard"], cwd=REPO, capture_output=True, text=True
    ).stdout.split():
        if (REPO / tracked).is_file():  # test the working tree, not only the last commit
            (clone / tracked).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / tracked, clone / tracked)
    raw = yaml.safe_load((clone / "params.yaml").read_text())
    raw["generate"]["rows"], raw["train"]["n_trials"] = 2500, 2
    (clone / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{clone / '.slipway' / 'mlflow' / 'mlflow.db'}"}
    env.pop("SLIPWAY_HOME")
    dvc = str(Path(sys.executable).parent / "dvc")
    first = subprocess.run([dvc, "repro"], cwd=clone, env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    for stage in ("generate", "ingest", "features", "train"):
        assert f"Running stage '{stage}'" in first.stdout
    assert (clone / ".slipway" / "reports" / "train_metrics.json").exists()
    second = subprocess.run([dvc, "repro"], cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "Running stage" not in second.stdout
    assert "Data and pipelines are up to date" in second.stdout


def test_ingest_is_idempotent_and_two_at_once_never_duplicate_silver(env: dict[str, str], tmp_path: Path) -> None:
    import pandas as pd

    params = str(write_demo_params(tmp_path / "params.yaml", small_params(tmp_path, rows=1500)))
    command = [SLIPWAY, "run", "ingest", "--params", params]
    both = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in both]
    assert [p.returncode for p in both] == [0, 0], [err[-2000:] for _, err in outputs]
    lines = [next(x for x in out.splitlines() if x.startswith("rows_in=")) for out, _ in outputs]
    assert sum("already ingested, nothing to do" in line for line in lines) == 1, lines  # one did the work
    silver = Path(env["SLIPWAY_HOME"]) / "lake" / "silver"
    accepted = pd.concat([pd.read_parquet(f) for f in silver.glob("*.parquet")])
    assert len(accepted) == 1500 and not accepted.duplicated(["lead_id", "created_at"]).any()

    again = slipway(["run", "ingest", "--params", params], env, check=True)
    assert "rows_in=1500 rows_accepted=1500 rows_quarantined=0" in again.stdout and "already ingested" in again.stdout
    assert len(list(silver.glob("*.parquet"))) == 1
    assert not list((Path(env["SLIPWAY_HOME"]) / "lake" / "quarantine").glob("*.parquet"))  # nothing copied there again


def test_ingest_never_generates_data_for_a_missing_source(env: dict[str, str], tmp_path: Path) -> None:
    params = str(write_params(tmp_path / "params.yaml", small_params(tmp_path)))  # a generate: section, no file
    result = slipway(["run", "ingest", "--params", params], env)
    assert result.returncode == 3 and "leads.csv" in result.stderr and "file not found" in result.stderr
    assert f"slipway generate --params {params}" in result.stderr
    assert not (tmp_path / "leads.csv").exists()
