"""A failing command keeps one line on screen and leaves its traceback in a log file it names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

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


def keyed_params(tmp_path: Path, section: str, owner: str, key: Ed25519PrivateKey) -> Path:
    """The repo's params with ``owner``'s public key in ``promotion.<section>``; ``owner``'s and mallory's key files beside it."""
    import yaml

    from slipway import signing

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["promotion"][section] = {owner: signing.public_text(key.public_key())}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    (tmp_path / f"{owner}.pem").write_text(signing.private_pem(key))
    (tmp_path / "mallory.pem").write_text(signing.private_pem(signing.new_private_key()))
    return params


def with_key(tmp_path: Path, capsys: pytest.CaptureFixture[str], key_file: str | None, argv: list[str]) -> tuple[int, str, str]:
    """``slipway`` with SLIPWAY_APPROVER_KEY naming ``key_file`` under ``tmp_path`` (None: unset): exit code, out, err."""
    with preserved_environment():
        os.environ["SLIPWAY_HOME"] = str(tmp_path / "home")
        os.environ.pop("SLIPWAY_APPROVER_KEY", None)
        if key_file:
            os.environ["SLIPWAY_APPROVER_KEY"] = str(tmp_path / key_file)
        code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_approve_signs_only_with_the_named_approvers_own_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from flows.cli import EXIT_USAGE
    from models.policy import Answer
    from slipway import signing

    bob = signing.new_private_key()
    params = keyed_params(tmp_path, "approver_keys", "bob", bob)
    run = "0b6f8c1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b"
    args = ["approve", run, "--params", str(params), "--approver", "bob", "--comment", "ok", "--sign-only"]

    def approve(key_file: str | None, *more: str) -> tuple[int, str, str]:
        return with_key(tmp_path, capsys, key_file, [*args, *more])

    code, out, _ = approve("bob.pem")
    assert code == 0 and signing.verify(bob.public_key(), Answer("bob", True, "ok", "").message(run), out.strip())
    code, out, _ = approve("bob.pem", "--reject")
    assert code == 0 and signing.verify(bob.public_key(), Answer("bob", False, "ok", "").message(run), out.strip())
    code, _, err = approve(None)
    assert code == EXIT_USAGE and "SLIPWAY_APPROVER_KEY is not set" in err
    code, _, err = approve("mallory.pem")  # someone else's key under bob's name
    assert code == EXIT_USAGE and "SLIPWAY_APPROVER_KEY is not the key of 'bob'" in err
    code, _, err = approve("missing.pem")
    assert code == EXIT_USAGE and "missing.pem" in err
    code, _, err = approve("bob.pem", "--approver", "alice")  # alice is an approver in params.yaml, with no key
    assert code == EXIT_USAGE and "promotion.approver_keys has no key for 'alice'" in err


def test_sign_request_signs_as_the_named_requester_with_their_own_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from datetime import UTC, datetime

    from flows.cli import EXIT_USAGE
    from models.policy import check_request
    from slipway import signing
    from slipway.settings import load_settings

    params = keyed_params(tmp_path, "requester_keys", "dana", signing.new_private_key())

    def sign(key_file: str | None, *more: str) -> tuple[int, str, str]:
        return with_key(tmp_path, capsys, key_file, ["sign-request", "--params", str(params), "--requested-by", "dana", *more])

    settings = load_settings(params)
    cfg, model = settings.promotion, settings.registry.model_name
    code, out, _ = sign("dana.pem", "--version", "3")
    check = check_request(model, "3", "dana", out.strip(), cfg, datetime.now(UTC))
    assert code == 0 and check.verified and check.by == "dana's key", check
    assert "not dana's" in str(check_request(model, "4", "dana", out.strip(), cfg, datetime.now(UTC)).problem)
    code, _, err = sign("mallory.pem")  # someone else's key under dana's name
    assert code == EXIT_USAGE and "SLIPWAY_APPROVER_KEY is not the key of 'dana'" in err
    code, _, err = sign(None)
    assert code == EXIT_USAGE and "SLIPWAY_APPROVER_KEY is not set" in err
    code, _, err = sign("dana.pem", "--requested-by", "erin")
    assert code == EXIT_USAGE and "have no key for 'erin'" in err and "two approvers" in err


def test_serve_beyond_loopback_requires_a_token_unless_anonymous_is_configured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from flows.cli import EXIT_USAGE

    with preserved_environment():
        os.environ["SLIPWAY_HOME"] = str(tmp_path / "home")
        os.environ.pop("SLIPWAY_API_TOKEN", None)
        code = main(["serve", "--params", str(REPO / "params.yaml"), "--host", "0.0.0.0"])
        assert code == EXIT_USAGE
        err = capsys.readouterr().err
        assert "--host 0.0.0.0 serves beyond this machine: set SLIPWAY_API_TOKEN" in err
        assert "serving.allow_anonymous" in err
        raw = yaml.safe_load((REPO / "params.yaml").read_text())
        raw["serving"] = {**raw.get("serving", {}), "allow_anonymous": True, "token_env": "NO_SUCH_TOKEN"}
        params = tmp_path / "params.yaml"
        params.write_text(yaml.safe_dump(raw))
        started: list[list[str]] = []

        def execve(path: str, argv: list[str], env: dict[str, str]) -> None:  # stands in for becoming the server
            started.append(argv)
            assert "SLIPWAY_PROMOTION_KEY" not in env and "SLIPWAY_APPROVER_KEY" not in env

        os.environ["SLIPWAY_PROMOTION_KEY"] = "a signing key the service must never hold"
        monkeypatch.setattr(os, "execve", execve)
        monkeypatch.chdir(os.getcwd())  # serve changes into the repository before it execs
        assert main(["serve", "--params", str(params), "--host", "0.0.0.0", "--port", "3999"]) == 0
    assert started and started[0][-4:] == ["--host", "0.0.0.0", "--port", "3999"]
