"""The run charter on real graphs: ownership, signed run.started, tier profiles, intent bounds, monitor mode, HTML audit."""

from __future__ import annotations

import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langgraph.types import Command

from langgraph_warden.charter import TIER_PROFILES, RunCharter
from langgraph_warden.events import EventKind
from langgraph_warden.guards import approval as approvals
from langgraph_warden.guards.approval import InvalidApprovalError
from langgraph_warden.warden import Warden

from .support.agents import SideEffects, call, turn
from .test_guard import build

OWNER = "alice@example.com"
REFUND = call("issue_refund", {"order_id": "o-1", "amount": 5}, "r1")
LOOKUP = call("lookup_customer", {"customer_id": "c-1"}, "c1")
EMAIL = call("send_email", {"to": "x@y.z", "body": "hi"}, "e1")


@pytest.fixture
def warden(db_url):
    with Warden.open(db_url, ephemeral_keys=True) as w:
        yield w


@pytest.fixture
def effects(tmp_path):
    return SideEffects(tmp_path / "effects.jsonl")


def msgs(out) -> dict[str, ToolMessage]:
    return {m.tool_call_id: m for m in out["messages"] if isinstance(m, ToolMessage)}


def denied_reasons(warden: Warden, thread: str) -> dict[str, list[str]]:
    return {e.payload["tool_call_id"]: e.payload["reasons"] for e in warden.ledger.events(thread, kinds=[EventKind.TOOL_DENIED])}


def test_no_owner_is_denied(warden, effects):
    g = build(warden, effects, [turn(REFUND), turn(text="ok")])
    out = g.invoke({"messages": [HumanMessage("x")]}, {"configurable": {"thread_id": "t-noowner"}})
    m = msgs(out)["r1"]
    assert m.status == "error" and "no_owner" in m.content
    assert denied_reasons(warden, "t-noowner") == {"r1": ["no_owner"]}
    assert warden.ledger.events("t-noowner", kinds=[EventKind.RUN_STARTED]) == []
    assert warden.ledger.events("t-noowner", kinds=[EventKind.TOOL_STARTED]) == []
    assert effects.count("issue_refund") == 0
    trail = warden.audit("t-noowner")
    assert trail.owner is None and trail.charter is None
    assert trail.action("r1").status == "denied" and trail.summary.denied == ["r1"] and trail.summary.ran == []


def test_start_run_without_owner_is_a_configuration_error(warden):
    from langgraph_warden.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        warden.start_run("t-x", intent="something")
    with pytest.raises(ConfigurationError, match="owner"):
        RunCharter(owner="  ", intent="something")


def test_charter_recorded_as_signed_run_started(warden):
    cfg = warden.start_run(
        "t-charter", owner=OWNER, intent="refund order o-1", risk_tier="high", purpose={"ticket": "OPS-1"},
        allowed_tools=["issue_refund", "lookup_customer"], allowed_data_classes=["pii"],
    )
    assert cfg == {"configurable": {"thread_id": "t-charter"}}
    (started,) = warden.ledger.events("t-charter")
    assert started.kind == EventKind.RUN_STARTED and started.seq == 1
    p = started.payload
    assert p["source"] == "api" and p["workload_id"] == warden.ledger.workload_id
    c = p["charter"]
    assert c["owner"] == OWNER and c["intent"] == "refund order o-1" and c["risk_tier"] == "high"
    assert c["purpose"] == {"ticket": "OPS-1"}
    assert c["allowed_tools"] == ["issue_refund", "lookup_customer"] and c["allowed_data_classes"] == ["pii"]
    assert c["profile"] == TIER_PROFILES["high"].to_dict()
    assert c["profile"]["separation_of_duties"] is True and c["profile"]["authenticated_approvals"] is True
    assert warden.charter("t-charter") == RunCharter.from_dict(c)
    head = warden.ledger.head("t-charter")
    assert head is not None and head.seq == 1 and head.hash == started.hash and head.signature and head.key_id
    assert warden.verify(thread_id="t-charter", signatures="all").ok
    # Starting again with the same charter records nothing new.
    warden.start_run(
        "t-charter", owner=OWNER, intent="refund order o-1", risk_tier="high", purpose={"ticket": "OPS-1"},
        allowed_tools=["issue_refund", "lookup_customer"], allowed_data_classes=["pii"],
    )
    assert len(warden.ledger.events("t-charter")) == 1


def test_low_tier_irreversible_tool_runs_without_approval(warden, effects):
    g = build(warden, effects, [turn(REFUND), turn(text="ok")])
    cfg = warden.start_run("t-low", owner=OWNER, intent="refund o-1", risk_tier="low")
    out = g.invoke({"messages": [HumanMessage("x")]}, cfg)
    assert "__interrupt__" not in out
    assert msgs(out)["r1"].content == "refunded 5 on o-1"
    assert effects.count("issue_refund") == 1
    assert warden.ledger.events("t-low", kinds=[EventKind.APPROVAL_REQUESTED]) == []
    trail = warden.audit("t-low")
    assert trail.action("r1").status == "authorised+completed" and trail.action("r1").approver is None
    assert len(trail.action("r1").leases) == 1  # a just-in-time credential, revoked after the step
    assert trail.summary.credentials_issued == trail.summary.credentials_revoked == 1


def test_medium_tier_irreversible_tool_needs_approval(warden, effects):
    g = build(warden, effects, [turn(REFUND), turn(text="ok")])
    cfg = warden.start_run("t-med", owner=OWNER, intent="refund o-1", risk_tier="medium")
    out = g.invoke({"messages": [HumanMessage("x")]}, cfg)
    (intr,) = out["__interrupt__"]
    req = intr.value
    assert req["tool"] == "issue_refund" and "irreversible" in req["reasons"] and req["risk_tier"] == "medium"
    assert req["separation_of_duties"] is False and req["requires_signature"] is False
    assert effects.count("issue_refund") == 0
    assert warden.audit("t-med").summary.pending == ["r1"]
    # At medium tier the owner may approve their own run.
    out = g.invoke(Command(resume=approvals.approve(req, OWNER)), cfg)
    assert msgs(out)["r1"].content == "refunded 5 on o-1" and effects.count("issue_refund") == 1
    assert warden.audit("t-med").action("r1").approver == OWNER


def test_high_tier_data_class_needs_approval_with_separation_of_duties(warden, effects):
    g = build(warden, effects, [turn(LOOKUP), turn(text="ok")])
    cfg = warden.start_run("t-high", owner=OWNER, intent="look up c-1", risk_tier="high")
    out = g.invoke({"messages": [HumanMessage("x")]}, cfg)
    (intr,) = out["__interrupt__"]
    req = intr.value
    assert req["tool"] == "lookup_customer" and "sensitive_data" in req["reasons"]
    assert req["separation_of_duties"] is True and req["requires_signature"] is True
    assert req["owner"] == OWNER and req["risk_tier"] == "high"
    request = approvals.ApprovalRequest.from_dict(req)
    assert request.separation_of_duties is True
    assert effects.count("lookup_customer") == 0
    # The owner cannot approve their own high-risk action.
    with pytest.raises(InvalidApprovalError) as info:
        g.invoke(Command(resume=approvals.approve(req, OWNER)), cfg)
    assert info.value.reason == "separation_of_duties"
    assert effects.count("lookup_customer") == 0
    refused = warden.ledger.events("t-high", kinds=[EventKind.APPROVAL_REFUSED])
    assert [e.payload["reason"] for e in refused] == ["separation_of_duties"]


def test_profile_override_require_approval_for(warden, effects):
    g = build(warden, effects, [turn(REFUND), turn(text="ok")])
    cfg = warden.start_run("t-ovr", owner=OWNER, intent="refund o-1", risk_tier="low", require_approval_for=["irreversible"])
    charter = warden.charter("t-ovr")
    assert charter.risk_tier == "low" and charter.effective_profile.require_approval_for == frozenset({"irreversible"})
    recorded = warden.ledger.events("t-ovr", kinds=[EventKind.RUN_STARTED])[0].payload["charter"]
    assert recorded["profile"]["require_approval_for"] == ["irreversible"]
    out = g.invoke({"messages": [HumanMessage("x")]}, cfg)
    (intr,) = out["__interrupt__"]
    assert intr.value["tool"] == "issue_refund" and "irreversible" in intr.value["reasons"]
    assert effects.count("issue_refund") == 0


def test_outside_allowed_tools_and_data_classes(warden, effects):
    g = build(warden, effects, [turn(EMAIL, LOOKUP), turn(text="ok")])
    cfg = warden.start_run(
        "t-intent", owner=OWNER, intent="billing only", risk_tier="low",
        allowed_tools=["lookup_customer", "issue_refund"], allowed_data_classes=["billing"],
    )
    out = g.invoke({"messages": [HumanMessage("x")]}, cfg)
    m = msgs(out)
    assert "outside_intent" in m["e1"].content and m["e1"].status == "error"  # tool not in allowed_tools
    assert "outside_intent" in m["c1"].content and m["c1"].status == "error"  # pii not in allowed_data_classes
    reasons = denied_reasons(warden, "t-intent")
    assert "outside_intent" in reasons["e1"] and "outside_intent" in reasons["c1"]
    assert effects.count("send_email") == 0 and effects.count("lookup_customer") == 0
    s = warden.audit("t-intent").summary
    assert sorted(s.denied) == ["c1", "e1"] and s.ran == [] and s.authorised == []


def test_monitor_mode_records_would_deny_but_runs(db_url, effects):
    with Warden.open(db_url, ephemeral_keys=True, mode="monitor") as warden:
        g = build(warden, effects, [turn(call("delete_everything", {}, "d1")), turn(text="ok")])
        cfg = warden.start_run("t-mon", owner=OWNER, intent="cleanup", risk_tier="low")
        out = g.invoke({"messages": [HumanMessage("x")]}, cfg)
        assert msgs(out)["d1"].content == "gone"
        assert effects.count("delete_everything") == 1
        (decided,) = warden.ledger.events("t-mon", kinds=[EventKind.POLICY_DECIDED])
        assert decided.payload["decision"]["allow"] is False and decided.payload["enforced"] is False
        assert "unknown_tool" in decided.payload["decision"]["reasons"]
        assert warden.ledger.events("t-mon", kinds=[EventKind.TOOL_DENIED]) == []
        assert [e.payload["tool_call_id"] for e in warden.ledger.events("t-mon", kinds=[EventKind.TOOL_COMPLETED])] == ["d1"]
        trail = warden.audit("t-mon")
        # It ran although the policy would have denied it: the trail says so.
        assert trail.summary.ran == ["d1"] and trail.summary.ran_without_authorisation == ["d1"]
        assert trail.action("d1").status == "ran-unauthorised"


def test_audit_trail_html(warden, effects):
    g = build(warden, effects, [turn(LOOKUP, call("delete_everything", {}, "d1")), turn(text="ok")])
    cfg = warden.start_run("t-html", owner=OWNER, intent="look <up> c-1", risk_tier="low")
    g.invoke({"messages": [HumanMessage("x")]}, cfg)
    trail = warden.audit("t-html")
    html = trail._repr_html_()
    assert "authorised+completed" in html and "denied" in html
    assert "signatures and hash chain verified" in html and "VERIFICATION FAILED" not in html
    assert OWNER in html and "look &lt;up&gt; c-1" in html  # escaped
    assert "<code>c1</code>" in html and "<code>d1</code>" in html
    assert "1 authorised" in html and "1 denied" in html and "0 ran without authorisation" in html
