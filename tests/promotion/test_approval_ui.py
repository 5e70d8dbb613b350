"""The approval form in the Prefect UI, seen by a real browser (Debian's headless Chromium)."""

from __future__ import annotations

from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from models.policy import Answer
from slipway import signing
from tests.promotion.conftest import KEYS, Stage
from tests.promotion.test_promote import EXIT_REFUSED, LENIENT, finish

pytestmark = pytest.mark.e2e  # starts real servers or processes


def test_an_approver_answers_from_the_form_in_the_prefect_ui(stage: Stage, browser: webdriver.Chrome, tmp_path: Path) -> None:
    stage.reset(champion="1", challenger="2")
    proc = stage.start_promote(stage.params(**LENIENT), "requested_by=alice")
    paused = stage.wait_paused(proc)
    ui = stage.prefect_url.removesuffix("/api")
    browser.get(f"{ui}/runs/flow-run/{paused.id}")
    wait = WebDriverWait(browser, 60)
    try:
        wait.until(expected_conditions.element_to_be_clickable((By.XPATH, "//button[contains(., 'Resume')]"))).click()
        field = "//label[contains(., '{}')]/following::*[self::input or self::textarea][1]"
        wait.until(expected_conditions.visibility_of_element_located((By.XPATH, field.format("Approver"))))
        form = browser.find_element(By.TAG_NAME, "body").text
        browser.find_element(By.XPATH, field.format("Approver")).send_keys("bob")
        browser.find_element(By.XPATH, field.format("Comment")).send_keys("answered in the UI")
        # what `slipway approve RUN_ID --approver bob --reject --comment "answered in the UI" --sign-only` prints
        unsigned = Answer("bob", False, "answered in the UI", "")
        browser.find_element(By.XPATH, field.format("Signature")).send_keys(
            signing.sign(KEYS["bob"], unsigned.message(str(paused.id)))
        )
        browser.find_element(By.XPATH, "//button[contains(., 'Submit')]").click()
        code, out = finish(proc)
    except Exception:
        browser.save_screenshot(str(tmp_path / "ui.png"))
        (tmp_path / "ui.html").write_text(browser.page_source)
        stage.resume(paused, approver="bob", approved=False, comment="the UI test failed")
        raise
    assert f"Promote {stage.name} v2 to champion?" in form and "Shadow comparison" in form, form
    assert all(label in form for label in ("Approver", "Approved", "Comment", "Signature")), form
    assert f"slipway approve {paused.id} --approver NAME" in form, form  # how to sign, on the form itself
    assert code == EXIT_REFUSED and "rejected by bob: answered in the UI" in out, out  # "approved" left unticked
