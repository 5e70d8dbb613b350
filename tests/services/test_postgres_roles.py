"""``infra/postgres/init.sh`` against a real PostgreSQL cluster of its own (``initdb`` + ``pg_ctl``): Slipway's
role owns its databases but is no superuser; the scoring service's role reads the Feast registry and nothing more."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from slipway.processes import free_port
from tests.conftest import REPO
from tests.services.conftest import unavailable

pytestmark = pytest.mark.services

APP, READER = "app-secret-1", "reader-secret-1"


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _binary(name: str) -> str | None:
    """On PATH, or where Debian's postgresql packages put it (/usr/lib/postgresql/<major>/bin)."""
    found = shutil.which(name)
    if found is None:
        candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
        found = str(candidates[-1]) if candidates else None
    return found


OWNER = "postgres" if _has_user("postgres") else "nobody"  # initdb refuses to run as root


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", OWNER, "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[int, Path]]:
    """A fresh cluster: the superuser over a local socket (trust), every other role over TCP with its password."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        unavailable("PostgreSQL's initdb and pg_ctl are not on PATH")
    assert initdb is not None and pg_ctl is not None
    root = Path(tempfile.mkdtemp(prefix="slipway-pg-"))  # not under pytest's root-only tmp: the postgres user writes here
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, OWNER)
        shutil.chown(sockets, OWNER)
    setup = [initdb, "-D", str(data), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256"]
    subprocess.run(_as_postgres(setup), check=True, capture_output=True, timeout=120)
    port = free_port()
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1"
    start = [pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"]
    subprocess.run(_as_postgres(start), check=True, capture_output=True, timeout=120)
    try:
        yield port, sockets
    finally:
        subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "fast", "stop"]), capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


def connect(port: int, user: str, password: str, db: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(host="127.0.0.1", port=port, user=user, password=password, dbname=db, autocommit=True)


def test_init_makes_an_owner_that_is_no_superuser_and_a_reader_of_the_feast_registry_only(cluster: tuple[int, Path]) -> None:
    port, sockets = cluster
    env = {
        **os.environ,
        "PGHOST": str(sockets),
        "PGPORT": str(port),
        "POSTGRES_USER": "postgres",
        "SLIPWAY_DB_PASSWORD": APP,
        "SLIPWAY_DB_READER_PASSWORD": READER,
    }
    done = subprocess.run(["sh", str(REPO / "infra" / "postgres" / "init.sh")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    without = subprocess.run(
        ["sh", str(REPO / "infra" / "postgres" / "init.sh")],
        env={k: v for k, v in env.items() if k != "SLIPWAY_DB_READER_PASSWORD"},
        capture_output=True,
        text=True,
    )
    assert without.returncode != 0 and "SLIPWAY_DB_READER_PASSWORD" in without.stderr

    for db in ("prefect", "mlflow", "mlflow_auth", "optuna"):
        with connect(port, "slipway", APP, db) as app:
            assert app.execute("select rolsuper, rolcreaterole from pg_roles where rolname = current_user").fetchone() == (
                False,
                False,
            )
            app.execute("create table owned (x int)")  # it owns the database's schema
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            connect(port, "slipway_reader", READER, db)
    with connect(port, "slipway", APP, "feast") as app:  # Feast's SQL registry, created by the flows
        app.execute("create table projects (name text)")
        app.execute("insert into projects values ('leads')")
    with connect(port, "slipway_reader", READER, "feast") as reader:
        assert reader.execute("select name from projects").fetchall() == [("leads",)]
        for write in ("insert into projects values ('forged')", "drop table projects", "create table mine (x int)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                reader.execute(write)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(port, "slipway", "a guessed password", "feast")
