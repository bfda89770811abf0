"""The run charter on real graphs: ownership, the signed run.started, tier profiles, intent, monitor mode.

Tools (from ``tests/test_guard.build``): ``lookup_customer`` (confidential, pii, idempotent),
``send_email`` (external), ``issue_refund`` (irreversible, needs ``payments:refund``) and the
undeclared ``delete_everything``.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from langchain_core.messages import HumanMessage
from langgraph.types import Command
from sqlalchemy import text
from typer.testing import CliRunner

from langgraph_warden import canonical
from langgraph_warden.charter import TIER_PROFILES, RunCharter
from langgraph_warden.cli import app
from langgraph_warden.errors import ConfigurationError
from langgraph_warden.events import EventKind, event_hash, head_signing_bytes
from langgraph_warden.guards import approval as approvals
from langgraph_warden.guards.approval import InvalidApprovalError
from langgraph_warden.keys import EphemeralKeyStore
from langgraph_warden.warden import Warden

from .support.agents import SideEffects, call, turn
from .test_guard import build, tool_messages

OWNER = "alice@example.com"
runner = CliRunner()


@pytest.fixture
def keys():
    return {n: EphemeralKeyStore().signing_key() for n in (OWNER, "bob@example.com")}


@pytest.fixture
def warden(db_url, keys):
    with Warden.open(db_url, ephemeral_keys=True, approver_keys={n: k.public_key for n, k in keys.items()}) as w:
        yield w


@pytest.fixture
def effects(tmp_path):
    return SideEffects(tmp_path / "effects.jsonl")


class _Recording:
    """Policy proxy that keeps every input document it decided on."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.inputs = inner, []

    def decide(self, policy_input):
        self.inputs.append(policy_input)
        return self.inner.decide(policy_input)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def one_call(name: str, args: dict, cid: str = "x1"):
    return [turn(call(name, args, cid)), turn(text="done")]


REFUND = ("issue_refund", {"order_id": "o-1", "amount": 5})
LOOKUP = ("lookup_customer", {"customer_id": "c-1"})
EMAIL = ("send_email", {"to": "ada@example.com", "body": "hi"})


# ------------------------------------------------------------------------------ ownership
def test_run_without_owner_is_refused_in_enforcing_mode(warden, effects):
    g = build(warden, effects, one_call(*LOOKUP))
    out = g.invoke({"messages": [HumanMessage("x")]}, {"configurable": {"thread_id": "no-owner"}})
    msg = tool_messages(out)["x1"]
    assert msg.status == "error" and "no_owner" in msg.content and effects.count("lookup_customer") == 0
    assert not warden.ledger.events("no-owner", kinds=[EventKind.RUN_STARTED])
    a = warden.audit("no-owner").action("x1")
    assert (a.status, a.reasons, a.ran, a.attempts) == ("denied", ["no_owner"], False, 0)
    assert warden.audit("no-owner").owner is None
    with pytest.raises(ConfigurationError, match="owner"):
        RunCharter(owner="  ", intent="x")
    with pytest.raises(ConfigurationError, match="owner"):
        warden.start_run("no-owner-2", intent="x")


# ------------------------------------------------------------------------------ signed run.started
def test_charter_is_the_signed_run_started_event_and_part_of_every_policy_input(warden, effects):
    rec = warden.guard.policy = _Recording(warden.guard.policy)
    cfg = warden.start_run(
        "chartered", owner=OWNER, intent="refund order o-1", risk_tier="low", purpose={"ticket": "OPS-12"},
        allowed_tools=["lookup_customer", "issue_refund"], allowed_data_classes=["pii"],
    )
    (started,) = warden.ledger.events("chartered")
    assert started.kind == EventKind.RUN_STARTED and started.seq == 1
    charter = started.payload["charter"]
    assert charter == {
        "owner": OWNER, "intent": "refund order o-1", "risk_tier": "low", "purpose": {"ticket": "OPS-12"},
        "allowed_tools": ["lookup_customer", "issue_refund"], "allowed_data_classes": ["pii"],
        "profile": TIER_PROFILES["low"].to_dict(),
    }
    assert started.payload["workload_id"] == warden.ledger.workload_id and started.payload["source"] == "api"
    # The commit that recorded it signed the chain head it left: check that signature by hand.
    head = warden.ledger.head("chartered")
    assert (head.seq, head.hash) == (1, started.hash) and head.key_store == "ephemeral"
    assert event_hash(canonical.encode(started.body())) == started.hash
    with warden.saver.engine.connect() as conn:
        public = warden.ledger.public_keys(conn)[head.key_id].public_key
    sig = base64.urlsafe_b64decode(head.signature + "=" * (-len(head.signature) % 4))
    Ed25519PublicKey.from_public_bytes(public).verify(
        sig, head_signing_bytes(head.thread_id, head.seq, head.hash, head.key_id, head.key_store)
    )
    report = warden.verify(thread_id="chartered")
    assert report.ok and report.threads["chartered"].signatures_checked >= 1
    assert warden.charter("chartered") == RunCharter.from_dict(charter)

    g = build(warden, effects, [turn(call(*LOOKUP, "c1"), call(*REFUND, "r1")), turn(text="done")])
    g.invoke({"messages": [HumanMessage("x")]}, cfg)
    assert effects.count("issue_refund") == 1 and effects.count("lookup_customer") == 1
    assert len(rec.inputs) == 2
    for doc in rec.inputs:
        run = doc["run"]
        assert run["owner"] == OWNER and run["intent"] == "refund order o-1" and run["risk_tier"] == "low"
        assert sorted(run["allowed_tools"]) == ["issue_refund", "lookup_customer"] and run["profile"] == charter["profile"]
    trail = warden.audit("chartered")
    assert trail.owner == OWNER and trail.charter.purpose == {"ticket": "OPS-12"} and trail.verified

    # Changing the recorded charter afterwards is detected.
    with warden.saver.engine.begin() as conn:
        body = conn.execute(text("SELECT body FROM warden_events WHERE thread_id='chartered' AND seq=1")).scalar_one()
        forged = (body if isinstance(body, str) else bytes(body).decode()).replace(OWNER, "mallory@example.com")
        conn.execute(text("UPDATE warden_events SET body=:b WHERE thread_id='chartered' AND seq=1"),
                     {"b": forged if isinstance(body, str) else forged.encode()})
    assert not warden.verify(thread_id="chartered").ok


# ------------------------------------------------------------------------------ tier profiles
def test_low_tier_irreversible_call_runs_without_approval(warden, effects):
    g = build(warden, effects, one_call(*REFUND))
    out = g.invoke({"messages": [HumanMessage("x")]}, warden.start_run("low", owner=OWNER, intent="refund", risk_tier="low"))
    assert "__interrupt__" not in out and effects.count("issue_refund") == 1
    a = warden.audit("low").action("x1")
    assert (a.status, a.approver, a.decision["require_approval"]) == ("authorised+completed", None, False)
    issued = warden.ledger.events("low", kinds=[EventKind.CREDENTIAL_ISSUED])[0].payload
    assert issued["ttl_seconds"] <= TIER_PROFILES["low"].max_credential_ttl_seconds == 300


def test_medium_tier_irreversible_needs_approval_sensitive_data_does_not(warden, effects):
    g = build(warden, effects, [turn(call(*REFUND, "r1"), call(*LOOKUP, "c1")), turn(text="done")])
    cfg = warden.start_run("medium", owner=OWNER, intent="refund", risk_tier="medium")
    (intr,) = g.invoke({"messages": [HumanMessage("x")]}, cfg)["__interrupt__"]
    req = intr.value
    assert req["tool"] == "issue_refund" and req["reasons"] == ["irreversible"]
    assert req["separation_of_duties"] is False and req["requires_signature"] is False
    assert effects.count("issue_refund") == 0 and effects.count("lookup_customer") == 1
    g.invoke(Command(resume=approvals.approve(req, OWNER)), cfg)  # no separation of duties on medium
    assert effects.count("issue_refund") == 1
    assert warden.audit("medium").action("r1").approver == OWNER


def test_high_tier_sensitive_data_needs_signed_approval_with_separation_of_duties(warden, effects, keys):
    g = build(warden, effects, one_call(*LOOKUP))
    cfg = warden.start_run("high", owner=OWNER, intent="look up a customer", risk_tier="high")
    (intr,) = g.invoke({"messages": [HumanMessage("x")]}, cfg)["__interrupt__"]
    req = intr.value
    assert req["reasons"] == ["sensitive_data"] and req["separation_of_duties"] is True and req["requires_signature"] is True
    with pytest.raises(InvalidApprovalError) as exc:  # the owner may not approve their own high-risk run
        g.invoke(Command(resume=approvals.approve(req, OWNER, key=keys[OWNER])), cfg)
    assert exc.value.reason == "separation_of_duties"
    with pytest.raises(InvalidApprovalError) as exc:
        g.invoke(Command(resume=approvals.approve(req, "bob@example.com")), cfg)
    assert exc.value.reason == "unsigned"
    assert effects.count("lookup_customer") == 0
    g.invoke(Command(resume=approvals.approve(req, "bob@example.com", key=keys["bob@example.com"])), cfg)
    assert effects.count("lookup_customer") == 1
    trail = warden.audit("high")
    a = trail.action("x1")
    assert (a.status, a.approver) == ("authorised+completed", "bob@example.com")
    refused = [e.payload["reason"] for e in trail.events if e.kind == EventKind.APPROVAL_REFUSED]
    assert refused == ["separation_of_duties", "unsigned"]
    assert trail.charter.effective_profile.max_credential_ttl_seconds == 60

    # ...and credentials are shorter-lived than on lower tiers: a refund on this run gets <= 60 s.
    g = build(warden, effects, one_call(*REFUND, "r1"))
    (intr,) = g.invoke({"messages": [HumanMessage("x")]}, warden.start_run("high-2", owner=OWNER, intent="refund", risk_tier="high"))["__interrupt__"]
    g.invoke(Command(resume=approvals.approve(intr.value, "bob@example.com", key=keys["bob@example.com"])), {"configurable": {"thread_id": "high-2"}})
    (issued,) = warden.ledger.events("high-2", kinds=[EventKind.CREDENTIAL_ISSUED])
    assert 0 < issued.payload["ttl_seconds"] <= 60 and effects.count("issue_refund") == 1


# ------------------------------------------------------------------------------ overrides
def test_profile_overrides_via_start_run(warden, effects):
    g = build(warden, effects, one_call(*REFUND))
    cfg = warden.start_run("low-strict", owner=OWNER, intent="refund", risk_tier="low", require_approval_for=["irreversible"])
    assert "__interrupt__" in g.invoke({"messages": [HumanMessage("x")]}, cfg)
    profile = warden.ledger.events("low-strict", kinds=[EventKind.RUN_STARTED])[0].payload["charter"]["profile"]
    assert profile["require_approval_for"] == ["irreversible"] and profile["max_credential_ttl_seconds"] == 300

    g = build(warden, effects, one_call(*REFUND))
    cfg = warden.start_run("medium-lax", owner=OWNER, intent="refund", risk_tier="medium", require_approval_for=[])
    out = g.invoke({"messages": [HumanMessage("x")]}, cfg)
    assert "__interrupt__" not in out and effects.count("issue_refund") == 1

    g = build(warden, effects, one_call(*LOOKUP))
    cfg = warden.start_run("high-no-sod", owner=OWNER, intent="lookup", risk_tier="high",
                           separation_of_duties=False, authenticated_approvals=False)
    (intr,) = g.invoke({"messages": [HumanMessage("x")]}, cfg)["__interrupt__"]
    assert intr.value["separation_of_duties"] is False and intr.value["requires_signature"] is False
    g.invoke(Command(resume=approvals.approve(intr.value, OWNER)), cfg)  # now the owner may approve, unsigned
    assert effects.count("lookup_customer") == 1
    with pytest.raises(ConfigurationError, match="unknown trigger"):
        warden.start_run("bad", owner=OWNER, intent="x", require_approval_for=["everything"])


# ------------------------------------------------------------------------------ intent
def test_outside_allowed_tools_or_data_classes_is_outside_intent(warden, effects):
    g = build(warden, effects, [turn(call(*EMAIL, "e1"), call(*REFUND, "r1")), turn(text="done")])
    cfg = warden.start_run("tools", owner=OWNER, intent="refund only", risk_tier="low", allowed_tools=["issue_refund"])
    msgs = tool_messages(g.invoke({"messages": [HumanMessage("x")]}, cfg))
    assert "outside_intent" in msgs["e1"].content and msgs["r1"].content == "refunded 5 on o-1"
    assert effects.count("send_email") == 0 and effects.count("issue_refund") == 1

    g = build(warden, effects, one_call(*LOOKUP))
    cfg = warden.start_run("classes", owner=OWNER, intent="billing", risk_tier="low", allowed_data_classes=["financial"])
    msg = tool_messages(g.invoke({"messages": [HumanMessage("x")]}, cfg))["x1"]
    assert msg.status == "error" and "outside_intent" in msg.content and effects.count("lookup_customer") == 0
    a = warden.audit("classes").action("x1")
    assert (a.status, a.reasons) == ("denied", ["outside_intent"])
    assert warden.audit("classes").summary.denied == ["x1"]


# ------------------------------------------------------------------------------ monitor mode
def test_monitor_mode_records_would_deny_but_lets_the_call_run(db_url, effects):
    with Warden.open(db_url, ephemeral_keys=True, mode="monitor") as warden:
        g = build(warden, effects, [turn(call("delete_everything", {}, "d1"), call(*EMAIL, "e1")), turn(text="done")])
        cfg = warden.start_run("mon", owner=OWNER, intent="cleanup", allowed_tools=["send_email"])
        out = g.invoke({"messages": [HumanMessage("x")]}, cfg)
        assert "__interrupt__" not in out  # no pause in monitor mode, even for the external e-mail
        assert effects.count("delete_everything") == 1 and effects.count("send_email") == 1
        decided = {e.payload["tool_call_id"]: e.payload for e in warden.ledger.events("mon", kinds=[EventKind.POLICY_DECIDED])}
        assert decided["d1"]["enforced"] is False and decided["d1"]["decision"]["allow"] is False
        assert sorted(decided["d1"]["decision"]["reasons"]) == ["outside_intent", "unknown_tool"]
        assert decided["e1"]["decision"]["require_approval"] is True and decided["e1"]["enforced"] is False
        assert not warden.ledger.events("mon", kinds=[EventKind.TOOL_DENIED])
        trail = warden.audit("mon")
        d1, e1 = trail.action("d1"), trail.action("e1")
        assert d1.ran and d1.ran_without_authorisation and d1.status == "ran-unauthorised"
        assert e1.ran and e1.ran_without_authorisation  # would have needed an approval
        assert sorted(trail.summary.ran_without_authorisation) == ["d1", "e1"] and trail.verified
        # Monitor mode also lets an ownerless run through, and says so in the record.
        g = build(warden, effects, one_call(*LOOKUP))
        g.invoke({"messages": [HumanMessage("x")]}, {"configurable": {"thread_id": "mon-noowner"}})
        assert effects.count("lookup_customer") == 1
        (d,) = warden.ledger.events("mon-noowner", kinds=[EventKind.POLICY_DECIDED])
        assert d.payload["decision"]["reasons"] == ["no_owner"] and d.payload["enforced"] is False
    # `warden audit show` fails a run where something ran without authorisation.
    res = runner.invoke(app, ["audit", "show", "--db", db_url, "mon"], env={"COLUMNS": "200"})
    assert res.exit_code == 1 and "ran without authorisation 2" in res.output and "ran-unauthorised" in res.output
