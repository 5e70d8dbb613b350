"""Real backing services for the production profile.

PostgreSQL and Redis are the machine's (127.0.0.1:5432 and :6379, or the URLs in
SLIPWAY_TEST_POSTGRES / SLIPWAY_TEST_REDIS); the S3-compatible store is moto's
server, started here as a process. Without PostgreSQL or Redis these tests skip,
naming what is missing, unless SLIPWAY_REQUIRE_SERVICES=1 (as in CI): then they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from slipway.processes import answers, free_port, running_server, wait_until_ready
from tests.conftest import REPO

BIN = Path(sys.executable).parent
POSTGRES = os.environ.get("SLIPWAY_TEST_POSTGRES", "postgresql://root@127.0.0.1:5432/postgres")
REDIS = os.environ.get("SLIPWAY_TEST_REDIS", "redis://127.0.0.1:6379/0")
REQUIRED = os.environ.get("SLIPWAY_REQUIRE_SERVICES") == "1"
S3_KEYS = {"AWS_ACCESS_KEY_ID": "slipway-test", "AWS_SECRET_ACCESS_KEY": "slipway-test", "AWS_DEFAULT_REGION": "us-east-1"}


def unavailable(reason: str) -> None:
    """Skip with the reason, or fail where the services are required."""
    if REQUIRED:
        pytest.fail(f"{reason}; SLIPWAY_REQUIRE_SERVICES=1 makes this a failure", pytrace=False)
    pytest.skip(reason)


def _postgres_problem() -> str | None:
    try:
        psycopg.connect(POSTGRES, connect_timeout=3).close()
    except psycopg.Error as exc:
        return f"PostgreSQL at {POSTGRES} is not reachable: {str(exc).strip()}"
    return None


@pytest.fixture(scope="session")
def postgres() -> str:
    problem = _postgres_problem()
    if problem:
        unavailable(problem)
    return POSTGRES


@pytest.fixture(scope="session")
def new_database(postgres: str) -> Iterator[Callable[[str], str]]:
    """Create fresh databases on the machine's PostgreSQL; all are dropped at the end of the session."""
    created: list[str] = []

    def admin(sql: str) -> None:
        conn = psycopg.connect(postgres, autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
        finally:
            conn.close()

    def create(purpose: str) -> str:
        name = f"slipway_{purpose}_{uuid.uuid4().hex[:8]}"
        admin(f'CREATE DATABASE "{name}"')
        created.append(name)
        return postgres.rsplit("/", 1)[0] + f"/{name}"

    yield create
    for name in created:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def machine_redis() -> redis.Redis:
    client = redis.Redis.from_url(REDIS, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at {REDIS} is not reachable: {exc}")
    return client


@dataclass
class RedisServer:
    """A redis-server process of the test's own, which the test may stop and start again."""

    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return f"127.0.0.1:{self.port},socket_timeout=0.5,socket_connect_timeout=0.5"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)

    def keys(self) -> int:
        return int(self.client().dbsize())  # type: ignore[arg-type]

    def limit_memory(self, headroom: int | None) -> None:
        """Let Redis take ``headroom`` bytes more than it holds now, then refuse writes (None: no limit)."""
        client = self.client()
        used = int(client.info("memory")["used_memory"])  # type: ignore[index]
        client.config_set("maxmemory", 0 if headroom is None else used + headroom)

    def start(self) -> None:
        # Keeps its data in a dump file in its own directory, so a restart brings it back.
        binary = shutil.which("redis-server")
        assert binary
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory), "--save", ""]
        log = self.directory / "redis.log"
        with open(log, "ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

        def ready() -> bool:
            try:
                return bool(self.client().ping())
            except redis.ConnectionError:
                return False

        wait_until_ready(self.process, command, ready, log, timeout=10)

    def stop(self) -> None:
        """Save to disk and exit, as an orderly shutdown does."""
        assert self.process is not None
        self.client().shutdown(save=True)
        self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def redis_server(machine_redis: redis.Redis, tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not installed: the fault tests stop and restart a Redis of their own")
    server = RedisServer(free_port(), tmp_path / "redis")
    server.directory.mkdir()
    server.start()
    yield server
    if server.process is not None:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """moto's S3-compatible server as a process; yields the standard AWS variables that reach it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with running_server([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], answers(f"{url}/"), log):
        yield {**S3_KEYS, "AWS_ENDPOINT_URL": url}


def s3_client(env: dict[str, str]) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


def s3_keys(env: dict[str, str], bucket: str) -> list[str]:
    return [o["Key"] for o in s3_client(env).list_objects_v2(Bucket=bucket).get("Contents", [])]


def make_bucket(env: dict[str, str], name: str) -> None:
    s3_client(env).create_bucket(Bucket=name)


def with_driver(url: str, driver: str) -> str:
    """``postgresql://…`` spelt for one SQLAlchemy driver (``psycopg``, ``asyncpg``)."""
    return url.replace("postgresql://", f"postgresql+{driver}://", 1)


@dataclass(frozen=True)
class PrefectOnPostgres:
    api_url: str
    database_url: str


@pytest.fixture(scope="session")
def prefect_on_postgres(
    new_database: Callable[[str], str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrefectOnPostgres]:
    """A Prefect server whose database is PostgreSQL, configured by Prefect's own variables only."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    database = new_database("prefect")
    prefect_home = tmp_path_factory.mktemp("prefect-pg")
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_DATABASE_CONNECTION_URL": with_driver(database, "asyncpg"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_API_URL": url,
        "PREFECT_SERVER_DATABASE_SQLALCHEMY_POOL_SIZE": "5",  # as infra/compose.yaml: the connection budget
        "PREFECT_SERVER_DATABASE_SQLALCHEMY_MAX_OVERFLOW": "5",
    }
    env.pop("PREFECT_API_URL", None)
    command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with running_server(command, answers(f"{url}/health"), prefect_home / "server.log", env=env):
        yield PrefectOnPostgres(url, database)


def feast_profile(registry_url: str, redis: str) -> dict[str, str]:
    """The variables that select infra/feast: Redis online store, SQL registry on PostgreSQL."""
    return {
        "FEAST_FS_YAML_FILE_PATH": str(REPO / "infra" / "feast" / "feature_store.yaml"),
        "SLIPWAY_FEAST_REGISTRY_URL": with_driver(registry_url, "psycopg"),
        "SLIPWAY_REDIS_CONNECTION_STRING": redis,
    }
