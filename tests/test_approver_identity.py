"""Approver identity: separation of duties compares identities, not spellings.

An approver's name is compared NFKC-normalised and case-folded, so the run's owner cannot
approve their own high-tier action as ``ALICE@example.com``, ``alice@EXAMPLE.com`` or fullwidth
``ａｌｉｃｅ@example.com``; a name holding a control or invisible character (zero-width space or
joiner, BOM, bidi controls ...) or surrounding whitespace is refused when parsed, naming the
field ``approver``; a charter's owner with such a character is refused, and kept as given otherwise.

Unit tests, then end-to-end through a real ToolNode graph at high tier (signed approvals and
separation of duties), from Python and through ``warden approvals decide``.
"""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from langchain_core.messages import HumanMessage
from langgraph.types import Command
from typer.testing import CliRunner

from langgraph_warden.charter import RunCharter
from langgraph_warden.cli import app
from langgraph_warden.errors import ConfigurationError
from langgraph_warden.events import EventKind
from langgraph_warden.guards import approval as approvals
from langgraph_warden.guards.approval import (
    ApprovalDecision,
    InvalidApprovalError,
    decision_signing_bytes,
    is_party,
    normalize_identity,
    same_identity,
)
from langgraph_warden.keys import EphemeralKeyStore, SigningKey, b64u
from langgraph_warden.names import identity_key
from langgraph_warden.warden import Warden

from .support.agents import SideEffects
from .support.graphs_approval import DEFAULT_SCRIPT, EFFECTS_ENV, build, policy

OWNER = "alice@example.com"
BOB = "bob@example.com"

#: The owner's name as the owner could type it to pass an exact-string comparison.
OWNER_SPELLINGS = [
    "ALICE@example.com",
    "alice@EXAMPLE.com",
    "Alice@Example.Com",
    "\uff41\uff4c\uff49\uff43\uff45@example.com",  # fullwidth ａｌｉｃｅ
    "alice\uff20example.com",  # fullwidth commercial at
]

#: Names with a character a reader cannot see (or that changes how the name displays).
INVISIBLE = {
    "zero width space": OWNER + "\u200b",
    "zero width joiner": "ali\u200dce@example.com",
    "zero width non-joiner": "ali\u200cce@example.com",
    "byte order mark": "\ufeff" + OWNER,
    "right-to-left override": "\u202e" + OWNER,
    "left-to-right isolate": "\u2066alice@example.com\u2069",
    "word joiner": "alice\u2060@example.com",
    "soft hyphen": "ali\u00adce@example.com",
    "combining grapheme joiner": "al\u034fice@example.com",
    "variation selector": "alice\ufe0f@example.com",
    "hangul filler": "\u3164alice@example.com",
    "tag character": "alice@example.com\U000e0041",
    "NUL": "alice\x00@example.com",
    "newline": "alice@example.com\nbob@example.com",
    "tab": "alice\t@example.com",
    "escape": "\x1b[31malice@example.com",
    "DEL": "alice@example.com\x7f",
    "line separator": "alice\u2028@example.com",
    "private use": "alice\ue000@example.com",
}
WHITESPACE = {
    "leading space": " " + OWNER,
    "trailing space": OWNER + " ",
    "trailing no-break space": OWNER + "\u00a0",
    "leading ideographic space": "\u3000" + OWNER,
}


# ------------------------------------------------------------------------------------ unit
@pytest.mark.parametrize("spelling", OWNER_SPELLINGS)
def test_spellings_of_one_identity_normalise_to_one_key(spelling):
    assert normalize_identity(spelling) == normalize_identity(OWNER) == OWNER
    assert same_identity(spelling, OWNER) and same_identity(OWNER, spelling)
    assert is_party(spelling, None, OWNER)
    assert is_party(spelling.upper(), "spiffe://example.org/agent", OWNER)
    assert not is_party(spelling, BOB, None)


def test_workload_id_spellings_are_the_workload():
    workload = "spiffe://langgraph-warden.local/agent"
    assert is_party("SPIFFE://LANGGRAPH-WARDEN.LOCAL/AGENT", OWNER, workload)
    assert not is_party("spiffe://langgraph-warden.local/agent2", OWNER, workload)


def test_distinct_people_stay_distinct():
    assert not same_identity("alice@example.com", "alice@example.org")
    assert not same_identity("alice", "alicia")
    assert not same_identity(None, None) and not same_identity("", "")
    # Case folding, not lower-casing: ß folds to ss (and stays equal to its capital form).
    assert same_identity("STRASSE@example.com", "straße@example.com")


@pytest.mark.parametrize("name", list(INVISIBLE.values()), ids=list(INVISIBLE))
def test_invisible_and_control_characters_are_refused_naming_the_field(name):
    with pytest.raises(InvalidApprovalError, match="approver") as err:
        normalize_identity(name)
    assert err.value.field == "approver"
    assert "U+" in str(err.value) and "invisible" in str(err.value)
    request = {"request_id": "apr_x", "action_digest": "sha256:x"}
    # Refused when the payload is parsed (whatever built it) ...
    payload = {**approvals.approve(request, BOB), "approver": name}
    with pytest.raises(InvalidApprovalError) as parsed:
        ApprovalDecision.parse(payload)
    assert parsed.value.field == "approver" and parsed.value.reason == "invalid_payload"
    # ... and already when a payload is built for it.
    for build_it in (
        lambda: approvals.approve(request, name),
        lambda: approvals.reject(request, name, message="no"),
        lambda: approvals.edit(request, name, {"amount": 1}),
    ):
        with pytest.raises(InvalidApprovalError) as built:
            build_it()
        assert built.value.field == "approver"
    # A comparison never lets such a name count as "not the owner".
    with pytest.raises(InvalidApprovalError):
        is_party(name, BOB)


@pytest.mark.parametrize("name", list(WHITESPACE.values()), ids=list(WHITESPACE))
def test_surrounding_whitespace_is_refused(name):
    with pytest.raises(InvalidApprovalError, match="whitespace") as err:
        ApprovalDecision.parse({**approvals.approve({"request_id": "apr_x", "action_digest": "d"}, BOB), "approver": name})
    assert err.value.field == "approver"
    with pytest.raises(InvalidApprovalError, match="whitespace"):
        approvals.approve({"request_id": "apr_x", "action_digest": "d"}, name)


@pytest.mark.parametrize("name", ["", "   ", None, 42, ["bob"]])
def test_missing_or_non_string_names_are_refused(name):
    with pytest.raises(InvalidApprovalError) as err:
        normalize_identity(name)
    assert err.value.field == "approver"


def test_the_name_is_kept_as_given_and_its_signature_still_verifies():
    key = EphemeralKeyStore().signing_key()
    request = {"request_id": "apr_x", "action_digest": "sha256:x"}
    payload = approvals.approve(request, "Bob@Example.COM", key=key)
    decision = ApprovalDecision.parse(payload)
    assert decision.approver == "Bob@Example.COM"  # recorded as typed; compared by its key
    assert decision.signature_valid(key.public_key)
    assert decision.approver_is(BOB) and not decision.approver_is(OWNER, None)


def test_identity_key_drops_invisible_characters_of_recorded_names():
    """Lenient for the names an approver is compared against: a hidden character makes no new person."""
    assert identity_key("alice\u200b@EXAMPLE.com ") == OWNER
    assert identity_key("  Alice   Smith ") == "alice smith"


def test_charter_refuses_an_owner_with_invisible_characters_and_keeps_the_owner_as_given():
    for name in (OWNER + "\u200b", "\u202e" + OWNER, "alice\n", "ali\u00adce@example.com", "alice\x00"):
        with pytest.raises(ConfigurationError, match="charter.owner") as err:
            RunCharter(owner=name, intent="refund o-1")
        assert "U+" in str(err.value)
        with pytest.raises(ConfigurationError, match="charter.owner"):
            RunCharter.from_dict({"owner": name, "intent": "refund o-1"})
    charter = RunCharter(owner="Alice@Example.com", intent="refund o-1", risk_tier="high")
    assert charter.owner == "Alice@Example.com" and charter.to_dict()["owner"] == "Alice@Example.com"


# ------------------------------------------------------------------------------ end to end
@pytest.fixture
def effects_path(tmp_path):
    return tmp_path / "effects.jsonl"


@pytest.fixture
def keys():
    return {name: EphemeralKeyStore().signing_key() for name in (OWNER, BOB)}


def _signed_as(request, approver: str, key: SigningKey) -> dict:
    """A correctly signed approval under any name (``approve()`` itself refuses a bad name)."""
    d = ApprovalDecision(request_id=request["request_id"], action_digest=request["action_digest"],
                         decision="approve", approver=approver, key_id=key.key_id)
    return {**d.to_dict(), "key_id": key.key_id, "signature": b64u(key.sign(decision_signing_bytes(d)))}


def _paused_high_tier(db_url, tmp_path, effects_path, keys, thread, extra_keys):
    """A high-tier run paused before ``issue_refund``; the owner also holds registered keys under ``extra_keys``."""
    approver_keys = {name: k.public_key for name, k in keys.items()}
    approver_keys.update({name: keys[OWNER].public_key for name in extra_keys})
    warden = Warden.open(db_url, ephemeral_keys=True, policy=policy(tmp_path), approver_keys=approver_keys)
    g = build(warden, effects_path, DEFAULT_SCRIPT)
    cfg = warden.start_run(thread, owner=OWNER, intent="refund order o-1", risk_tier="high")
    out = g.invoke({"messages": [HumanMessage("please refund o-1")]}, cfg)
    (intr,) = out["__interrupt__"]
    assert intr.value["separation_of_duties"] is True and intr.value["requires_signature"] is True
    return warden, g, cfg, intr


def _refusals(warden, thread):
    return [e.payload for e in warden.ledger.events(thread, kinds=[EventKind.APPROVAL_REFUSED])]


def _assert_still_paused(warden, g, cfg, intr, effects):
    state = g.get_state(cfg)
    assert state.next == ("tools",) and [i.value["request_id"] for i in state.interrupts] == [intr.value["request_id"]]
    assert effects.count("issue_refund") == 0
    assert not warden.ledger.events(cfg["configurable"]["thread_id"], kinds=[EventKind.TOOL_STARTED])


def test_owner_cannot_approve_under_another_spelling(db_url, tmp_path, effects_path, keys):
    """Needs guards/guard.py's ``_check_answer`` to compare identities (``answer.approver_is(...)``)."""
    effects = SideEffects(effects_path)
    warden, g, cfg, intr = _paused_high_tier(db_url, tmp_path, effects_path, keys, "t-spelling", OWNER_SPELLINGS)
    with warden:
        for spelling in OWNER_SPELLINGS:
            # Signed with the owner's key, registered under that spelling: only the identity check stops it.
            payload = approvals.approve(intr.value, spelling, key=keys[OWNER])
            with pytest.raises(InvalidApprovalError, match="separation of duties") as err:
                g.invoke(Command(resume=payload), cfg)
            assert (err.value.field, err.value.reason) == ("approver", "separation_of_duties"), spelling
            _assert_still_paused(warden, g, cfg, intr, effects)
        # The workload, spelled in capitals, cannot approve either (refused before the signature check).
        with pytest.raises(InvalidApprovalError, match="separation of duties"):
            g.invoke(Command(resume=approvals.approve(intr.value, warden.ledger.workload_id.upper())), cfg)
        refused = _refusals(warden, "t-spelling")
        assert [r["reason"] for r in refused] == ["separation_of_duties"] * (len(OWNER_SPELLINGS) + 1)
        assert [r["approver"] for r in refused][:-1] == OWNER_SPELLINGS  # recorded as typed
        _assert_still_paused(warden, g, cfg, intr, effects)

        out = g.invoke(Command(resume=approvals.approve(intr.value, BOB, key=keys[BOB])), cfg)
        assert effects.count("issue_refund") == 1
        (granted,) = [e.payload for e in warden.ledger.events("t-spelling", kinds=[EventKind.APPROVAL_GRANTED])]
        assert granted["approver"] == BOB and granted["authenticated"] is True
        assert "__interrupt__" in out  # on to the next gated call
        assert warden.audit("t-spelling").verified


def test_invisible_characters_in_an_approver_are_refused_by_the_running_graph(db_url, tmp_path, effects_path, keys):
    effects = SideEffects(effects_path)
    names = [INVISIBLE["zero width space"], INVISIBLE["zero width joiner"], INVISIBLE["byte order mark"],
             INVISIBLE["right-to-left override"], WHITESPACE["trailing space"]]
    warden, g, cfg, intr = _paused_high_tier(db_url, tmp_path, effects_path, keys, "t-invisible", names)
    with warden:
        for name in names:
            # Correctly signed by a key registered under exactly that name: refused for the name itself.
            with pytest.raises(InvalidApprovalError) as err:
                g.invoke(Command(resume=_signed_as(intr.value, name, keys[OWNER])), cfg)
            assert (err.value.field, err.value.reason) == ("approver", "invalid_payload"), repr(name)
            _assert_still_paused(warden, g, cfg, intr, effects)
        refused = _refusals(warden, "t-invisible")
        assert [(r["field"], r["reason"]) for r in refused] == [("approver", "invalid_payload")] * len(names)
        g.invoke(Command(resume=approvals.approve(intr.value, BOB, key=keys[BOB])), cfg)
        assert effects.count("issue_refund") == 1


def test_a_run_cannot_start_with_an_invisible_owner(db_url, tmp_path):
    with Warden.open(db_url, ephemeral_keys=True, policy=policy(tmp_path)) as warden:
        with pytest.raises(ConfigurationError, match="charter.owner"):
            warden.start_run("t-owner", owner=OWNER + "\u200b", intent="refund order o-1", risk_tier="high")
        assert warden.ledger.head("t-owner") is None  # nothing recorded
        warden.start_run("t-owner", owner="Alice@Example.com", intent="refund order o-1", risk_tier="high")
        assert warden.charter("t-owner").owner == "Alice@Example.com"


# ------------------------------------------------------------------------------------- CLI
runner = CliRunner()
GRAPH = "tests.support.graphs_approval:graph"


def _seed_file(path, key: Ed25519PrivateKey):
    path.write_text(base64.b64encode(key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())).decode())
    return path


def test_cli_decide_refuses_the_owner_under_another_spelling_and_invisible_names(db_url, tmp_path, monkeypatch):
    """The owner tries ``--as ALICE@example.com`` with a valid key registered under that spelling.

    Needs guards/guard.py's ``_check_answer`` to compare identities (``answer.approver_is(...)``).
    """
    effects_path = tmp_path / "effects.jsonl"
    monkeypatch.setenv(EFFECTS_ENV, str(effects_path))
    effects = SideEffects(effects_path)
    alice = Ed25519PrivateKey.generate()
    alice_pub = SigningKey.from_private(alice, "file").public_key
    key_file = _seed_file(tmp_path / "alice.key", alice)
    approver_keys = tmp_path / "approvers.json"
    approver_keys.write_text(json.dumps({"ALICE@example.com": base64.b64encode(alice_pub).decode()}))
    with Warden.open(db_url, ephemeral_keys=True) as w:
        g = build(w, effects_path, DEFAULT_SCRIPT)
        cfg = w.start_run("t-cli-id", owner=OWNER, intent="refund o-1", risk_tier="high")
        g.invoke({"messages": [HumanMessage("go")]}, cfg)
        (req,) = w.pending_approvals("t-cli-id")
    common = ["--db", db_url, "--graph", GRAPH, "--ephemeral-keys", "--approver-keys", str(approver_keys)]

    res = runner.invoke(app, ["approvals", "decide", "t-cli-id", req.request_id, "--approve",
                              "--as", "ALICE@example.com", "--key", str(key_file), *common])
    assert res.exit_code == 1 and "separation_of_duties" in res.output, res.output
    assert effects.count("issue_refund") == 0

    res = runner.invoke(app, ["approvals", "decide", "t-cli-id", req.request_id, "--approve",
                              "--as", "bob@example.com\u200b", *common])
    assert res.exit_code == 2 and "approver" in res.output and "U+200B" in res.output, res.output
    assert len([ln for ln in res.output.splitlines() if ln.strip()]) == 1
    with Warden.open(db_url, ephemeral_keys=True) as w:
        assert [r.request_id for r in w.pending_approvals("t-cli-id")] == [req.request_id]
        assert [e.payload["reason"] for e in w.ledger.events("t-cli-id", kinds=[EventKind.APPROVAL_REFUSED])] == [
            "separation_of_duties"
        ]
    assert effects.count("issue_refund") == 0
