"""The process helpers: readiness, a failed start reported with the log's tail, stopping a whole group."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from slipway.processes import answers, free_port, port_is_free, running_server, start_detached, stop_group


class _Ok(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/livez" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_port_is_free_tells_a_listening_port_from_a_free_one(http_url: str) -> None:
    assert not port_is_free(int(http_url.rsplit(":", 1)[1])) and port_is_free(free_port())


def test_answers_only_on_200(http_url: str) -> None:
    assert answers(f"{http_url}/livez")() and not answers(f"{http_url}/readyz")()
    assert not answers(f"http://127.0.0.1:{free_port()}/livez")()  # nothing listens: False, not an exception


def test_a_server_that_dies_is_reported_with_its_log(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import sys; print('bind failed: port in use'); sys.exit(3)"]
    with (
        pytest.raises(RuntimeError, match=r"(?s)exited with 3.*bind failed: port in use"),
        running_server(command, lambda: False, tmp_path / "server.log", timeout=30),
    ):
        pass


def test_a_server_never_ready_times_out_and_is_stopped(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "import time; print('starting', flush=True); time.sleep(60)"]
    with (
        pytest.raises(RuntimeError, match=r"(?s)not ready after 1s.*starting"),
        running_server(command, lambda: False, tmp_path / "server.log", timeout=1),
    ):
        pass


def test_stop_group_ends_the_leader_and_its_children(tmp_path: Path) -> None:
    child_pid_file = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time, pathlib;"
        f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        f"pathlib.Path({str(child_pid_file)!r}).write_text(str(c.pid)); time.sleep(60)"
    )
    pid = start_detached([sys.executable, "-c", script], child_pid_file.exists, tmp_path / "group.log")
    child = int(child_pid_file.read_text())
    started = time.monotonic()
    assert stop_group(pid, grace=10) is True
    assert time.monotonic() - started < 5  # SIGTERM was enough: no wait for the grace period
    assert not _running(pid) and not _running(child)
    assert stop_group(pid) is False  # already gone


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphaned child may wait a moment to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_light_commands_import_nothing_heavy() -> None:
    """``slipway down`` and ``slipway --help`` answer at once: no Prefect, MLflow, Evidently, pandas or Feast."""
    probe = (
        "import sys, contextlib, io\n"
        "from flows.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['down'])\n"
        "    try:\n"
        "        main(['--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'prefect', 'mlflow', 'evidently', 'pandas', 'feast', 'bentoml', 'sklearn', 'xgboost', 'great_expectations'})))\n"
    )
    env = {**os.environ, "SLIPWAY_HOME": str(Path(os.environ.get("TMPDIR", "/tmp")) / f"slipway-light-{os.getpid()}")}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60, check=True)
    assert done.stdout.strip() == "", f"heavy modules imported: {done.stdout}"
