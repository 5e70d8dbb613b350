"""Starting a server as a child process and waiting until it answers.

Used wherever Slipway runs real servers on this machine (the Prefect server, the
scoring service, MLflow's): one place decides how long to wait, what counts as
ready, and how a failed start is reported (the tail of the server's own log).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    """A port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def answers(url: str) -> Callable[[], bool]:
    """Ready when a GET on ``url`` returns 200."""

    def probe() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    return probe


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
            deadline = time.monotonic() + timeout
            while not ready():
                if proc.poll() is not None or time.monotonic() > deadline:
                    state = f"exited with {proc.returncode}" if proc.returncode is not None else f"not ready after {timeout:.0f}s"
                    raise RuntimeError(
                        f"{Path(command[0]).name} {state}; its log ends:\n{log.read_text(errors='replace')[-3000:]}"
                    )
                time.sleep(0.5)
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
