"""A served sample deployment, a real Prefect server, and steady live traffic for promotion tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort
from prefect.settings import PREFECT_API_URL, temporary_settings
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

from models.decision import KEY_ENV
from models.policy import Answer
from models.registry import CHALLENGER, CHAMPION, publish_decision
from models.routing import Routing
from models.watch import GUARD_TAG, WATCH_TAG
from slipway import signing
from slipway.service_metrics import read_state
from slipway.traffic import Traffic
from tests.conftest import REPO, write_params
from tests.serving import Served, sample_service

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        if os.environ.get("SLIPWAY_REQUIRE_SERVICES"):
            pytest.fail("Chromium is required here: apt-get install chromium chromium-driver")
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium'}")
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium", ignore_errors=True)


KEYS = {name: signing.new_private_key() for name in ("alice", "bob", "carol", "mallory")}  # carol requests; mallory is nobody
SIGNED_REQUESTERS = ("alice", "bob", "carol")  # start_promote signs their requests with their own key
PROMOTION_KEY = signing.new_private_key()  # the stage's decisions are signed: the service serves only what it signs
FAST_PROMOTION = {
    "approvers": ["alice", "bob"],
    "approver_keys": {name: signing.public_text(KEYS[name].public_key()) for name in ("alice", "bob")},
    "requester_keys": {"carol": signing.public_text(KEYS["carol"].public_key())},
    "shadow_seconds": 4,
    "canary_steps": [50, 100],
    "bake_seconds": 3,
    "min_shadow_samples": 40,
    "min_canary_samples": 15,
    "approval_timeout_seconds": 300,
    "watch": {"seconds": 0},  # no post-deployment watch unless a test asks for one (tests/promotion/test_guard.py)
}


@dataclass
class Stage:
    served: Served
    prefect_url: str
    root: Path

    @property
    def name(self) -> str:
        return self.served.settings.registry.model_name

    def params(self, **promotion: Any) -> Path:
        """The served params with promotion settings for one test."""
        raw = yaml.safe_load((self.root / "params.yaml").read_text())
        raw["promotion"] = {**raw["promotion"], **FAST_PROMOTION, "service_url": self.served.url, **promotion}
        return write_params(self.root / f"promote-{time.monotonic_ns()}.yaml", raw)

    def sign(self, champion: str, routing: Routing) -> None:
        """A decision as the promotion key's holder makes it: signed, then the alias and routing tags that mirror it."""
        publish_decision(self.name, champion, routing, PROMOTION_KEY)
        client = self.served.client()
        client.set_registered_model_alias(self.name, CHAMPION, champion)
        for key, value in routing.to_tags().items():
            client.set_registered_model_tag(self.name, key, value)

    def reset(self, champion: str, challenger: str) -> None:
        """Aliases as given, champion-only routing (signed), no watch, and the service following it."""
        client = self.served.client()
        client.set_registered_model_alias(self.name, CHALLENGER, challenger)
        for tag in set(client.get_registered_model(self.name).tags or {}) & {WATCH_TAG, GUARD_TAG}:
            client.delete_registered_model_tag(self.name, tag)
        self.sign(champion, Routing())
        deadline = time.monotonic() + 30
        while read_state(self.served.url).champion != champion or read_state(self.served.url).challenger is not None:
            assert time.monotonic() < deadline, "the service did not follow the reset"
            time.sleep(0.3)

    def prefect(self) -> SyncPrefectClient:
        return SyncPrefectClient(self.prefect_url)

    def start_promote(self, params: Path, *assignments: str, signed: bool = True) -> subprocess.Popen[str]:
        """``slipway run promote``; a requester with a key runs it with that key in SLIPWAY_APPROVER_KEY (it signs)."""
        env = {**self.served.env, "PREFECT_API_URL": self.prefect_url}
        env.pop("SLIPWAY_APPROVER_KEY", None)
        requester = next((a.split("=", 1)[1] for a in assignments if a.startswith("requested_by=")), "")
        if signed and requester in SIGNED_REQUESTERS:
            key = self.root / f"{requester}.pem"
            key.write_text(signing.private_pem(KEYS[requester]))
            env["SLIPWAY_APPROVER_KEY"] = str(key)
        command = [sys.executable, "-m", "flows.cli", "run", "promote", "--params", str(params), *assignments]
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def latest_promote_run(self) -> FlowRun | None:
        with self.prefect() as client:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["promote"])), sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=1
            )
        return runs[0] if runs else None

    def wait_paused(self, proc: subprocess.Popen[str], after_key: str | None = None, timeout: float = 240) -> FlowRun:
        """The promote run once it pauses (with a pause key other than ``after_key``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.latest_promote_run()
            if run and run.state and run.state.is_paused() and run.state.state_details.pause_key != after_key:
                return run
            if proc.poll() is not None:
                pytest.fail(f"promote exited with {proc.returncode} before pausing:\n{proc.stdout.read() if proc.stdout else ''}")
            time.sleep(0.5)
        proc.kill()
        pytest.fail(f"promote did not pause within {timeout:.0f}s:\n{proc.communicate()[0][-4000:]}")

    def resume(self, run: FlowRun, approver: str, approved: bool, comment: str, signer: str | None = None) -> None:
        """Answer as the Prefect UI's form does, signed with ``signer``'s key (default: the approver's own)."""
        unsigned = Answer(approver, approved, comment, "")
        signature = signing.sign(KEYS[signer or approver], unsigned.message(str(run.id)))
        answer = {"approver": approver, "approved": approved, "comment": comment, "signature": signature}
        with self.prefect() as client:
            response = client.resume_flow_run(run.id, run_input=answer)
        assert response.status.value == "ACCEPT", response

    def approve_from_terminal(self, run: FlowRun, params: Path, approver: str, *flags: str) -> str:
        """``slipway approve`` as an approver runs it, with their key in a file named by SLIPWAY_APPROVER_KEY."""
        key = self.root / f"{approver}.pem"
        key.write_text(signing.private_pem(KEYS[approver]))
        env = {**self.served.env, "PREFECT_API_URL": self.prefect_url, "SLIPWAY_APPROVER_KEY": str(key)}
        command = [sys.executable, "-m", "flows.cli", "approve", str(run.id), "--params", str(params), "--approver", approver]
        done = subprocess.run([*command, *flags], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout


@pytest.fixture(scope="package")
def stage(tmp_path_factory: pytest.TempPathFactory, prefect_server: str) -> Iterator[Stage]:
    root = tmp_path_factory.mktemp("promotion")
    prefect = temporary_settings(updates={PREFECT_API_URL: prefect_server})
    with sample_service(root, promotion_key=PROMOTION_KEY) as served, prefect:
        os.environ[KEY_ENV] = signing.private_pem(PROMOTION_KEY)  # flows run in-process sign too (restored on exit)
        traffic = Traffic(served.url, per_second=80).entities(served.entity_ids)
        try:
            yield Stage(served, prefect_server, root)
        finally:
            traffic.stop()
        assert set(traffic.statuses) == {200}, f"live traffic saw errors during promotion: {traffic.statuses}"
