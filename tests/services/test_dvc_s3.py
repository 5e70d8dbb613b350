"""DVC's S3 remote against a real S3-compatible server: push, lose the local copy, pull it back."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, run_command
from tests.services.conftest import BIN, make_bucket, s3_keys

pytestmark = pytest.mark.services


def dvc(repo: Path, *args: str, env: dict[str, str]) -> str:
    return run_command([str(BIN / "dvc"), *args], env, cwd=repo, timeout=300, check=True).stdout


def test_push_and_pull_through_the_projects_s3_remote(s3: dict[str, str], tmp_path: Path) -> None:
    env = {**os.environ, **s3}
    make_bucket(s3, "team-data")
    repo = tmp_path / "project"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    shutil.copytree(REPO / ".dvc", repo / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp", "config.local"))
    data = repo / "data" / "leads.csv"
    data.parent.mkdir()
    content = "".join(f"{i},{i % 7},{'yes' if i % 3 else 'no'}\n" for i in range(5000)).encode()
    data.write_bytes(content)

    # What infra/README.md tells a team to do: aim the project's s3 remote at their bucket.
    dvc(repo, "remote", "modify", "--local", "s3", "url", "s3://team-data/dvc", env=env)
    dvc(repo, "add", "data/leads.csv", env=env)
    dvc(repo, "push", "-r", "s3", env=env)

    keys = s3_keys(s3, "team-data")
    md5 = (repo / "data" / "leads.csv.dvc").read_text().split("md5: ")[1].split()[0]
    assert keys == [f"dvc/files/md5/{md5[:2]}/{md5[2:]}"]

    shutil.rmtree(repo / ".dvc" / "cache")
    data.unlink()
    dvc(repo, "pull", "-r", "s3", env=env)
    assert data.read_bytes() == content
