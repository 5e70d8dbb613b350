"""Starting a server as a child process and waiting until it answers.

Used wherever Slipway runs real servers on this machine (the Prefect server, the
scoring service, MLflow's): one place decides how long to wait, what counts as
ready, and how a failed start is reported (the tail of the server's own log).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def cpu_threads() -> int:
    """The cores this process may use (its affinity mask, which containers and ``taskset`` narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def free_port() -> int:
    """A port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether nothing accepts connections on ``host:port`` right now."""
    with socket.socket() as probe:
        return probe.connect_ex((host, port)) != 0


def answers(url: str) -> Callable[[], bool]:
    """Ready when a GET on ``url`` returns 200."""

    def probe() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return probe


def wait_until_ready(
    proc: subprocess.Popen[bytes], command: list[str], ready: Callable[[], bool], log: Path, timeout: float
) -> None:
    """Return once ``ready()``; raise with the tail of the log if the process dies or the time runs out."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            state = f"exited with {proc.returncode}" if proc.returncode is not None else f"not ready after {timeout:.0f}s"
            raise RuntimeError(f"{Path(command[0]).name} {state}; its log ends:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.5)


def start_detached(
    command: list[str], ready: Callable[[], bool], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> int:
    """Start a server that outlives this process (its own session, output to ``log``); return its pid once ready."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_ready(proc, command, ready, log, 180.0)
    except RuntimeError:
        stop_group(proc.pid)
        raise
    return proc.pid


def stop_group(pid: int, grace: float = 20.0) -> bool:
    """SIGTERM the process group led by ``pid``, SIGKILL it after ``grace``; False if it was already gone."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):  # a leader started by this process stays a zombie until reaped
            os.waitpid(pid, os.WNOHANG)
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True


@contextmanager
def running_server(
    command: list[str],
    ready: Callable[[], bool],
    log: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 180.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` until the block ends; fail with its log if it never becomes ready."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until_ready(proc, command, ready, log, timeout)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
