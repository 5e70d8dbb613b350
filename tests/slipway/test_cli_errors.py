"""A failing command keeps one line on screen and leaves its traceback in a log file it names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows.cli import EXIT_FAILED, main
from tests.conftest import REPO, preserved_environment


def test_a_failure_names_the_log_holding_its_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder is expected")
    with preserved_environment():
        os.environ["SLIPWAY_HOME"] = str(tmp_path / "home")
        code = main(["generate", "--params", str(REPO / "params.yaml"), "--output", str(blocker / "leads.csv")])
    err = capsys.readouterr().err
    log = tmp_path / "home" / "logs" / "errors.log"
    assert code == EXIT_FAILED
    assert err.splitlines()[0].startswith("slipway: FileExistsError: ") and f"(traceback in {log})" in err
    text = log.read_text()
    assert "slipway generate --params" in text and "Traceback (most recent call last)" in text
    assert "write_generated" in text  # the frame where it failed, which the screen does not show
