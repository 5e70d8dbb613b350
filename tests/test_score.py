"""Batch scoring through a separately started ``dask scheduler`` and two ``dask worker`` processes."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.dataframe as dd
import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from slipway.processes import answers, free_port, port_is_free, running_server
from tests.conftest import preserved_environment, slipway, small_params, write_params
from tests.services.conftest import S3_KEYS, s3_client

pytestmark = pytest.mark.e2e  # a Dask scheduler, two workers and the slipway command as processes

BIN = Path(sys.executable).parent


@dataclass
class Cluster:
    address: str
    env: dict[str, str]
    params: Path
    home: Path
    workers: list[Any]  # Popen of each `dask worker`
    gold: pd.DataFrame
    s3: dict[str, str]  # the AWS_* variables that reach the S3-compatible server (moto's)


def _workers_connected(address: str, count: int) -> bool:
    from distributed import Client

    try:
        with Client(address, timeout="5s") as client:
            return len(client.scheduler_info()["workers"]) >= count
    except OSError:
        return False


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, prefect_server: str) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("score")
    home = root / "home"
    env = {
        **os.environ,
        "SLIPWAY_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        "DASK_DISTRIBUTED__WORKER__DAEMON": "False",
        "PREFECT_API_URL": prefect_server,  # one server for every run, rather than one per command
    }
    raw = small_params(root, rows=3000, n_trials=1)
    raw["batch"] = {"partition_rows": 500, "carry_columns": []}
    params = write_params(root / "params.yaml", raw)
    with preserved_environment():
        os.environ.update({k: env[k] for k in ("SLIPWAY_HOME", "MLFLOW_TRACKING_URI")})
        from models.sample import build_sample_deployment
        from slipway.paths import prepare_environment
        from slipway.settings import load_settings

        prepare_environment()
        build_sample_deployment(load_settings(params))
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    with ExitStack() as stack:
        s3_port = free_port()
        s3 = {**S3_KEYS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}"}
        moto = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)]
        stack.enter_context(running_server(moto, answers(f"{s3['AWS_ENDPOINT_URL']}/"), root / "moto.log"))
        env.update(s3)  # the workers write S3 outputs with the standard variables
        scheduler = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
        scheduler += ["--preload", "models.batch"]  # as infra/ starts it: the graph's code is imported before a run
        stack.enter_context(running_server(scheduler, lambda: not port_is_free(port), root / "scheduler.log", env=env))
        workers = []
        for i in range(2):
            command = [str(BIN / "dask"), "worker", address, "--nthreads", "1", "--name", f"w{i}", "--no-dashboard"]
            command += ["--memory-limit", "1GiB", "--preload", "models.batch"]
            ready = (lambda n: lambda: _workers_connected(address, n))(i + 1)
            workers.append(stack.enter_context(running_server(command, ready, root / f"worker-{i}.log", env=env)))
        gold = pd.read_parquet(home / "lake" / "gold" / "features.parquet")
        yield Cluster(address, {**env, "DASK_SCHEDULER_ADDRESS": address}, params, home, workers, gold, s3)


def _worker_loads(address: str) -> dict[str, dict[str, int]]:
    """How often each worker process loaded each version (models.batch.LOADS, read on the workers)."""
    from distributed import Client

    def loads() -> dict[str, int]:
        from models import batch

        return dict(batch.LOADS)

    with Client(address, timeout="10s") as client:
        return dict(client.run(loads))


def _imported_mlflow(address: str) -> dict[str, bool]:
    from distributed import Client

    with Client(address, timeout="10s") as client:
        return dict(client.run(lambda: "mlflow" in sys.modules))


def _once(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """One partition entry per worker that appears in the manifest."""
    return list({p["worker"]: p for p in manifest["partitions"]}.values())


def source_folder(cluster: Cluster, path: Path, copies: int, bad: bool = True, parts: int = 8) -> pd.DataFrame:
    """The gold rows repeated ``copies`` times under new entity ids, as Parquet parts, a few of them bad."""
    base = cluster.gold.drop(columns=["created_at"])
    frames = [base.assign(lead_id=base["lead_id"] + f"-{c}") for c in range(copies)]
    rows = pd.concat(frames, ignore_index=True).astype({"page_views": object, "region": object})
    if bad:
        rows.loc[3, "page_views"] = "n/a"
        rows.loc[10, "region"] = None
    path.mkdir(parents=True)
    size = -(-len(rows) // parts)
    for i in range(parts):  # page_views as text in the files, as a careless export writes it
        part = rows.iloc[i * size : (i + 1) * size].astype({"page_views": str})
        part.to_parquet(path / f"part-{i}.parquet", index=False)
    return rows


def score(cluster: Cluster, *assignments: str) -> tuple[dict[str, Any], Path]:
    done = slipway(["run", "score", "--params", str(cluster.params), *assignments], cluster.env, timeout=600, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("rows_in="))
    run = Path(line.split(" run=", 1)[1])
    return json.loads((run / "_SUCCESS").read_text()), run


def pyfunc_scores(cluster: Cluster, rows: pd.DataFrame) -> np.ndarray:
    with preserved_environment():  # not mlflow.set_tracking_uri: that global would outlive this module's tests
        os.environ["MLFLOW_TRACKING_URI"] = cluster.env["MLFLOW_TRACKING_URI"]
        model = mlflow.pyfunc.load_model("models:/lead-scoring/1")
    return np.asarray(model.predict(rows), dtype=float)


def test_a_source_is_scored_on_both_workers_with_the_pyfuncs_scores(cluster: Cluster, tmp_path: Path) -> None:
    rows = source_folder(cluster, tmp_path / "source", copies=4)
    manifest, run = score(cluster, f"source={tmp_path / 'source'}")
    assert manifest["rows_in"] == len(rows) == manifest["rows_scored"] + manifest["rows_rejected"]
    assert manifest["rows_rejected"] == 2 and manifest["model_version"] == "1" and manifest["source_md5"]
    assert len({p["worker"] for p in manifest["partitions"]}) == 2  # both workers scored partitions
    loads = _worker_loads(cluster.address)
    assert sorted(loads) == sorted(p["worker"] for p in _once(manifest)) and all(v == {"1": 1} for v in loads.values())
    assert not any(_imported_mlflow(cluster.address).values())  # the flow loaded the model and sent it to them
    out = pd.read_parquet(run)
    assert len(out) == manifest["rows_scored"] == len(dd.read_parquet(str(run)))
    assert list(out.columns) == ["entity", "score", "model_version", "scored_at"] and out["entity"].is_unique
    good = rows.drop(index=[3, 10]).set_index("lead_id")
    expected = pyfunc_scores(cluster, good.loc[out["entity"], [c for c in good.columns if c != "lead_id"]])
    assert np.abs(out["score"].to_numpy() - expected).max() < 1e-6
    rejects = pd.read_parquet(run.parent / "rejects" / run.name)
    assert sorted(rejects["reason"]) == ["missing feature region", "page_views: not a number: n/a"]
    assert not any((run.parent / "_staging").iterdir())  # nothing staged is left behind


def test_a_worker_that_joins_gets_the_model_from_the_flow_or_loads_it_itself(cluster: Cluster, tmp_path: Path) -> None:
    source_folder(cluster, tmp_path / "source", copies=1, bad=False, parts=2)
    score(cluster, f"source={tmp_path / 'source'}")  # every worker of the fixture holds version 1 now
    before = _worker_loads(cluster.address)
    command = [str(BIN / "dask"), "worker", cluster.address, "--nthreads", "1", "--name", "late", "--no-dashboard"]
    ready = lambda: _workers_connected(cluster.address, 3)  # noqa: E731
    with running_server(command, ready, tmp_path / "late-worker.log", env=cluster.env):
        run = ["run", "score", "--params", str(cluster.params), f"source={tmp_path / 'source'}"]
        done = slipway(run, cluster.env, timeout=600, check=True)
        assert "version 1 loaded and sent to 1 worker(s)" in done.stdout + done.stderr  # only to the one without it
        loads = _worker_loads(cluster.address)
        late = next(w for w in loads if w not in before)
        assert loads == {**before, late: {"1": 1}}
        assert _imported_mlflow(cluster.address)[late] is False
        # a worker that joins after the model was sent (a replacement, mid-run) loads it from the registry itself
        from distributed import Client

        from models import batch

        with Client(cluster.address, timeout="10s") as client:
            uri = cluster.env["MLFLOW_TRACKING_URI"]
            key = (uri, "lead-scoring", "2", "")
            width = client.run(lambda: batch.scorer(key).layout.width, workers=[late])[late]
        assert width > 0 and _worker_loads(cluster.address)[late] == {"1": 1, "2": 1}
        assert _imported_mlflow(cluster.address)[late] is True


def test_without_a_source_every_entity_of_the_feature_store_is_scored_once(cluster: Cluster) -> None:
    manifest, run = score(cluster)
    out = pd.read_parquet(run)
    assert manifest["rows_rejected"] == 0 and out["entity"].is_unique
    assert set(out["entity"]) == set(cluster.gold["lead_id"])
    newest = cluster.gold.sort_values("created_at").drop_duplicates("lead_id", keep="last").set_index("lead_id")
    features = [c for c in newest.columns if c != "created_at"]
    expected = pyfunc_scores(cluster, newest.loc[out["entity"], features])
    assert np.abs(out["score"].to_numpy() - expected).max() < 1e-6


def test_ids_only_get_features_from_the_store_and_unknown_ids_are_rejected(cluster: Cluster, tmp_path: Path) -> None:
    ids = pd.DataFrame({"lead_id": [*cluster.gold["lead_id"].head(20), "L-nobody"]})
    ids.to_csv(tmp_path / "open_leads.csv", index=False)
    manifest, run = score(cluster, f"source={tmp_path / 'open_leads.csv'}")
    assert (manifest["rows_in"], manifest["rows_scored"], manifest["rows_rejected"]) == (21, 20, 1)
    rejects = pd.read_parquet(run.parent / "rejects" / run.name)
    assert rejects["reason"].tolist() == ["unknown entity: L-nobody"]


def test_an_s3_source_is_scored_into_an_s3_output_whose_manifest_is_written_last(cluster: Cluster, tmp_path: Path) -> None:
    bucket = s3_client(cluster.s3)
    bucket.create_bucket(Bucket="batch")
    rows = source_folder(cluster, tmp_path / "source", copies=2)
    for part in sorted((tmp_path / "source").glob("*.parquet")):
        bucket.upload_file(str(part), "batch", f"leads/{part.name}")
    bucket.put_object(Bucket="batch", Key="leads/_notes/ignored.parquet", Body=b"not parquet")  # skipped, as readers do
    raw = yaml.safe_load(cluster.params.read_text())
    raw["batch"]["output"] = "s3://batch/scores/"
    params = write_params(tmp_path / "params.yaml", raw)
    done = slipway(["run", "score", "--params", str(params), "source=s3://batch/leads"], cluster.env, timeout=600, check=True)
    line = next(x for x in done.stdout.splitlines() if x.startswith("rows_in="))
    run = line.split(" run=", 1)[1]
    assert run.startswith("s3://batch/scores/run=")
    keys = [o["Key"] for o in bucket.list_objects_v2(Bucket="batch", Prefix="scores/")["Contents"]]
    name = run.removeprefix("s3://batch/")
    assert not [k for k in keys if "_staging" in k], keys  # nothing staged is left behind
    assert f"{name}/_SUCCESS" in keys and f"scores/rejects/{name.removeprefix('scores/')}/part-00000.parquet" in keys
    manifest = json.loads(bucket.get_object(Bucket="batch", Key=f"{name}/_SUCCESS")["Body"].read())
    assert manifest["rows_in"] == len(rows) and manifest["rows_rejected"] == 2 and manifest["source_md5"]
    assert manifest["rows_scored"] == len(rows) - 2
    options = {"key": S3_KEYS["AWS_ACCESS_KEY_ID"], "secret": S3_KEYS["AWS_SECRET_ACCESS_KEY"]}
    options["endpoint_url"] = cluster.s3["AWS_ENDPOINT_URL"]
    out = pd.read_parquet(f"{run}/", storage_options=options)
    assert len(out) == manifest["rows_scored"] == len(dd.read_parquet(f"{run}/", storage_options=options))
    good = rows.drop(index=[3, 10]).set_index("lead_id")
    expected = pyfunc_scores(cluster, good.loc[out["entity"], [c for c in good.columns if c != "lead_id"]])
    assert np.abs(out["score"].to_numpy() - expected).max() < 1e-6
    elsewhere = slipway(["run", "score", "--params", str(params), "source=s3://batch/nothing-here"], cluster.env)
    assert elsewhere.returncode == 3 and "s3://batch/nothing-here: batch source not found" in elsewhere.stderr


def test_a_missing_source_or_column_is_refused_by_name_with_exit_3(cluster: Cluster, tmp_path: Path) -> None:
    command = ["run", "score", "--params", str(cluster.params)]
    missing = slipway([*command, f"source={tmp_path / 'nope.parquet'}"], cluster.env)
    assert missing.returncode == 3 and "nope.parquet: batch source not found" in missing.stderr, missing.stderr
    pd.DataFrame({"lead_id": ["L1"], "page_views": [3]}).to_csv(tmp_path / "partial.csv", index=False)
    partial = slipway([*command, f"source={tmp_path / 'partial.csv'}"], cluster.env)
    assert partial.returncode == 3 and "missing required column(s): 'email_opens'" in partial.stderr, partial.stderr


def test_a_worker_killed_mid_run_leaves_a_complete_run_or_nothing(cluster: Cluster, tmp_path: Path) -> None:
    rows = source_folder(cluster, tmp_path / "source", copies=60, bad=False, parts=60)
    staging = cluster.home / "lake" / "scores" / "_staging"
    proc = slipway_background(cluster, f"source={tmp_path / 'source'}")
    deadline = time.monotonic() + 300
    while len(written := list(staging.glob("*/scores/part-*.parquet"))) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "no partition was written"
        time.sleep(0.02)
    cluster.workers[1].send_signal(signal.SIGKILL)  # mid-run: its partitions must be redone by the other worker
    assert len(written) < 60, "the run finished before the worker was killed"
    output, _ = proc.communicate(timeout=600)
    runs = sorted(p for p in (cluster.home / "lake" / "scores").glob("run=*") if (p / "_SUCCESS").exists())
    if proc.returncode == 0:
        manifest = json.loads((runs[-1] / "_SUCCESS").read_text())
        out = pd.read_parquet(runs[-1])
        assert manifest["rows_scored"] == len(rows) == len(out) and out["entity"].is_unique, output[-2000:]
        assert set(out["entity"]) == set(rows["lead_id"])
    else:  # a failed run shows nothing
        assert all(json.loads((r / "_SUCCESS").read_text())["rows_in"] != len(rows) for r in runs), output[-2000:]
    assert not any(p for p in staging.glob("*") if p.is_dir())


def test_a_flow_killed_during_its_s3_commit_leaves_a_run_the_next_one_removes(cluster: Cluster, tmp_path: Path) -> None:
    """S3 cannot rename: a commit copies each part, then writes _SUCCESS. SIGKILL lands mid-copy."""
    bucket = s3_client(cluster.s3)
    bucket.create_bucket(Bucket="killed")
    rows = source_folder(cluster, tmp_path / "source", copies=20, bad=False, parts=120)
    raw = yaml.safe_load(cluster.params.read_text())
    raw["batch"] = {**raw["batch"], "output": "s3://killed/scores/", "partition_rows": 250}
    params = write_params(tmp_path / "params.yaml", raw)

    def keys() -> list[str]:
        return [o["Key"] for o in bucket.list_objects_v2(Bucket="killed", Prefix="scores/").get("Contents", [])]

    proc = slipway_background(cluster, f"source={tmp_path / 'source'}", params=params)
    deadline = time.monotonic() + 300
    while not [k for k in keys() if k.startswith("scores/run=")]:  # the commit has begun copying
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    left = keys()
    (run,) = {k.split("/")[1] for k in left if k.startswith("scores/run=")}
    assert f"scores/{run}/_SUCCESS" not in left, "the commit finished before the kill"
    assert [k for k in left if k.startswith("scores/_staging/")], left  # what it was copying from

    deadline = time.monotonic() + 240  # the dead run's slot on the output lapses (Prefect's lease: a minute at least)
    while (
        "another run holds the Prefect global concurrency limit"
        in (
            done := slipway(["run", "score", "--params", str(params), f"source={tmp_path / 'source'}"], cluster.env, timeout=600)
        ).stderr
        + done.stdout
    ):
        assert time.monotonic() < deadline, done.stderr[-2000:]
        time.sleep(5)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert f"removed s3://killed/scores/{run}: left by a score run that died before it finished" in done.stdout + done.stderr
    after = keys()
    assert not [k for k in after if run in k or k.startswith("scores/_staging/")], after
    (complete,) = {k.split("/")[1] for k in after if k.startswith("scores/run=")}
    assert f"scores/{complete}/_SUCCESS" in after
    options = {"key": S3_KEYS["AWS_ACCESS_KEY_ID"], "secret": S3_KEYS["AWS_SECRET_ACCESS_KEY"]}
    out = pd.read_parquet(
        f"s3://killed/scores/{complete}/", storage_options={**options, "endpoint_url": cluster.s3["AWS_ENDPOINT_URL"]}
    )
    assert len(out) == len(rows) and set(out["entity"]) == set(rows["lead_id"]) and out["entity"].is_unique


def slipway_background(cluster: Cluster, *assignments: str, params: Path | None = None) -> Any:
    import subprocess

    command = [str(BIN / "slipway"), "run", "score", "--params", str(params or cluster.params), *assignments]
    return subprocess.Popen(command, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
