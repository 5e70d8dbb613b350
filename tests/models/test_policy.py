import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from models.policy import Answer, Request, RequestCheck, approval_problem, check_request, evaluate
from models.promotion import checked_request, request_digest
from slipway import signing
from slipway.audit import AuditLog
from slipway.errors import Refused
from slipway.settings import PromotionSettings

RNG = np.random.default_rng(0)
Y = RNG.integers(0, 2, 4000)
GOOD = Y * 0.6 + RNG.uniform(size=4000) * 0.8  # strongly informative
WEAK = Y * 0.2 + RNG.uniform(size=4000)  # barely informative
SLICES = pd.DataFrame({"region": np.where(np.arange(4000) < 2000, "emea", "apac")})
CFG = PromotionSettings(slices=["region"], min_auc_gain=0.02, max_slice_regression=0.05)


def test_a_better_challenger_passes_with_its_metrics() -> None:
    verdict = evaluate(Y, GOOD, WEAK, SLICES, CFG)
    assert verdict.passed and verdict.metrics["roc_auc_gain"] > 0.1
    assert "slice_region=emea_roc_auc_change" in verdict.metrics


def test_a_worse_challenger_is_refused_with_the_reason() -> None:
    verdict = evaluate(Y, WEAK, GOOD, SLICES, CFG)
    assert not verdict.passed
    assert any("ROC-AUC gain" in r for r in verdict.reasons)


def test_a_slice_regression_is_refused_even_with_overall_gain() -> None:
    challenger = GOOD.copy()
    apac = SLICES["region"].to_numpy() == "apac"
    challenger[apac] = RNG.uniform(size=apac.sum())  # useless on one slice
    champion = np.where(apac, GOOD, WEAK) * 0.5 + WEAK * 0.5
    verdict = evaluate(Y, challenger, champion, SLICES, CFG.model_copy(update={"min_auc_gain": -1.0}))
    assert not verdict.passed
    assert verdict.reasons == [r for r in verdict.reasons if r.startswith("slice region=apac")]


def test_without_a_champion_better_than_chance_is_enough() -> None:
    assert evaluate(Y, WEAK, None, SLICES, CFG).passed
    assert not evaluate(Y, RNG.uniform(size=4000) * 0 + 0.5, None, SLICES, CFG).passed


def test_single_class_window_cannot_pass() -> None:
    verdict = evaluate(np.zeros(100, dtype=int), GOOD[:100], None, SLICES.head(100), CFG)
    assert not verdict.passed and "single label class" in verdict.reasons[0]


ALICE, BOB, MALLORY = signing.new_private_key(), signing.new_private_key(), signing.new_private_key()
GATE = PromotionSettings(
    approvers=["alice", "bob", "carol"],
    approver_keys={"alice": signing.public_text(ALICE.public_key()), "bob": signing.public_text(BOB.public_key())},
)
RUN = "5f0e6a3c-1d2b-4c8e-9a7f-0b1c2d3e4f50"


def signed(key: Ed25519PrivateKey, approver: str, approved: bool = True, comment: str = "ok", run: str = RUN) -> Answer:
    unsigned = Answer(approver, approved, comment, "")
    return Answer(approver, approved, comment, signing.sign(key, unsigned.message(run)))


def test_an_approval_signed_by_a_listed_approver_for_this_run_is_accepted() -> None:
    assert approval_problem(signed(BOB, "bob"), RUN, "alice", GATE) is None
    assert approval_problem(signed(BOB, "bob", approved=False, comment="not yet"), RUN, "alice", GATE) is None


def test_a_typed_name_or_a_forged_replayed_or_altered_signature_is_refused() -> None:
    def problem(answer: Answer) -> str:
        return str(approval_problem(answer, RUN, "alice", GATE))

    assert "not signed" in problem(Answer("bob", True, "ok", ""))  # the name alone, as the old form took it
    assert "not bob's" in problem(signed(MALLORY, "bob"))  # mallory types bob's name and signs with her own key
    assert "not bob's" in problem(signed(BOB, "bob", run="an-earlier-run"))  # bob's answer to another promotion
    rejection = signed(BOB, "bob", approved=False, comment="no")
    assert "not bob's" in problem(Answer("bob", True, "no", rejection.signature))  # his rejection turned into approval
    assert "not bob's" in problem(Answer("bob", True, "ok, fine", signed(BOB, "bob").signature))  # comment rewritten
    assert "not bob's" in problem(Answer("bob", True, "ok", "not-base64!"))
    assert "not bob's" in problem(Answer("bob", True, "ok", signed(ALICE, "alice").signature))  # alice's for bob
    assert "no public key for 'carol'" in problem(signed(MALLORY, "carol"))  # listed, but nobody can prove to be carol
    assert "not in promotion.approvers" in problem(signed(MALLORY, "mallory"))
    assert "cannot approve it too" in problem(signed(ALICE, "alice"))  # alice requested it
    assert "names no approver" in problem(Answer("  ", True, "", ""))


def test_approver_keys_must_be_ed25519_public_keys_of_listed_approvers() -> None:
    with pytest.raises(ValidationError, match=r"approver_keys\.dave: 'dave' is not in promotion.approvers"):
        PromotionSettings(approvers=["alice"], approver_keys={"dave": signing.public_text(ALICE.public_key())})
    with pytest.raises(ValidationError, match=r"approver_keys\.alice: not an Ed25519 public key"):
        PromotionSettings(approvers=["alice"], approver_keys={"alice": "ssh-ed25519 garbage"})


def test_keys_made_by_ssh_keygen_sign_and_verify(tmp_path: Path) -> None:
    path = tmp_path / "id_ed25519"
    done = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bob@laptop", "-f", str(path)], check=False)
    if done.returncode != 0:
        pytest.skip("ssh-keygen is not installed")
    key = signing.private_key(str(path), "SLIPWAY_APPROVER_KEY")
    gate = PromotionSettings(approvers=["bob"], approver_keys={"bob": (path.with_suffix(".pub")).read_text()})
    assert approval_problem(signed(key, "bob"), RUN, "alice", gate) is None
    assert signing.private_key(signing.private_pem(key), "PEM text").public_key() == key.public_key()
    with pytest.raises(signing.KeyProblem, match=r"SLIPWAY_APPROVER_KEY: .*nowhere"):
        signing.private_key(str(path.parent / "nowhere"), "SLIPWAY_APPROVER_KEY")


DANA, PLATFORM = signing.new_private_key(), signing.new_private_key()  # dana requests, never approves
REQUESTS = GATE.model_copy(
    update={
        "requester_keys": {"dana": signing.public_text(DANA.public_key())},
        "decision_key": signing.public_text(PLATFORM.public_key()),
    }
)
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def request(key: Ed25519PrivateKey, who: str, version: str = "7", at: datetime = NOW, model: str = "leads") -> str:
    return Request(model, version, who, at.isoformat()).signed(key)


def test_a_request_signed_by_its_requester_needs_one_other_approver_an_unsigned_one_two() -> None:
    def check(signature: str, who: str = "dana", version: str | None = "7") -> RequestCheck:
        return check_request("leads", version, who, signature, REQUESTS, NOW)

    assert check(request(DANA, "dana")) == RequestCheck(True, "dana's key") and check(request(DANA, "dana")).approvals_needed == 1
    assert check(request(ALICE, "alice"), "alice").verified  # an approver requests with their approver key
    assert check(request(PLATFORM, "slipway-retrain"), "slipway-retrain") == RequestCheck(True, "the promotion key")
    assert check(request(DANA, "dana", "challenger"), version=None).verified  # "whatever is challenger at start"
    assert check(request(DANA, "dana", at=NOW - timedelta(minutes=59))).verified
    unsigned = check("")
    assert not unsigned.verified and unsigned.problem is None and unsigned.approvals_needed == 2


def test_a_forged_altered_stale_or_malformed_request_signature_is_refused() -> None:
    def problem(signature: str, who: str = "dana", version: str | None = "7") -> str:
        found = check_request("leads", version, who, signature, REQUESTS, NOW)
        assert not found.verified
        return str(found.problem)

    # alice (an approver) requests as dana, to approve "dana's" request herself: she cannot sign as dana
    assert "not dana's for leads 7" in problem(request(ALICE, "dana"))
    assert "not dana's" in problem(request(DANA, "dana", "6"))  # signed for another version
    assert "not dana's" in problem(request(DANA, "dana", model="churn"))  # for another model
    assert "not dana's" in problem(request(DANA, "dana", version="challenger"))  # "the challenger", used for v7
    assert "'mallory' has no key" in problem(request(MALLORY, "mallory"), "mallory")
    assert "valid for an hour" in problem(request(DANA, "dana", at=NOW - timedelta(minutes=61)))
    assert "valid for an hour" in problem(request(DANA, "dana", at=NOW + timedelta(minutes=10)))
    assert "no UTC offset" in problem(request(DANA, "dana", at=NOW.replace(tzinfo=None)))
    assert "ISO_TIME SIGNATURE" in problem("c2lnbmF0dXJl")
    signature = request(DANA, "dana")
    stamp, _, text = signature.partition(" ")
    later = (NOW + timedelta(minutes=1)).isoformat()
    assert "not dana's" in problem(f"{later} {text}")  # the time moved, to extend the hour
    assert "not dana's" in problem(f"{stamp} {text[:-4]}AAAA")


def test_the_same_approver_never_counts_twice() -> None:
    assert approval_problem(signed(BOB, "bob"), RUN, "dana", GATE, already=["alice"]) is None
    assert "has approved this promotion already" in str(approval_problem(signed(BOB, "bob"), RUN, "dana", GATE, already=["bob"]))


def test_requester_keys_must_be_ed25519_public_keys() -> None:
    with pytest.raises(ValidationError, match=r"requester_keys\.dana: not an Ed25519 public key"):
        PromotionSettings(requester_keys={"dana": "ssh-ed25519 garbage"})


def test_a_signed_request_starts_one_promotion_and_a_refusal_is_audited(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    signature = Request("leads", "7", "dana", datetime.now(UTC).isoformat()).signed(DANA)
    check = checked_request("leads", REQUESTS, "7", "dana", signature, audit, "7")
    assert check.verified and audit.entries() == []
    audit.append("promotion_requested", "dana", "leads", "7", {"flow_run": "run-1", "request": request_digest(signature)})
    with pytest.raises(Refused, match="this signed request started promotion run run-1 already"):
        checked_request("leads", REQUESTS, "7", "dana", signature, audit, "7")  # replayed, e.g. after a rejection
    forged = Request("leads", "7", "dana", datetime.now(UTC).isoformat()).signed(ALICE)
    with pytest.raises(Refused, match="not dana's"):
        checked_request("leads", REQUESTS, "7", "dana", forged, audit, "7")
    refused = [e for e in audit.entries() if e["event"] == "request_refused"]
    assert [e["actor"] for e in refused] == ["dana", "dana"] and "already" in refused[0]["details"]["reason"]
    assert not checked_request("leads", REQUESTS, "7", "dana", "", audit, "7").verified  # unsigned: allowed, two approvers
