"""LangChain's HITL format for warden approvals, in process: the interrupt reads as an ``HITLRequest``,
its ``{"decisions": [...]}`` answers resume the run, and every warden check still applies (digest,
used once, separation of duties, edits decided again, the authenticated user as approver).
The same paths on a real Agent Server: tests/test_server.py."""

from __future__ import annotations

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware.human_in_the_loop import HITLRequest
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.types import Command
from pydantic import TypeAdapter

from langgraph_warden import ToolSpec, Warden
from langgraph_warden.charter import RunCharter
from langgraph_warden.errors import ConfigurationError
from langgraph_warden.events import EventKind
from langgraph_warden.guards.approval import ApprovalRequest, InvalidApprovalError
from langgraph_warden.guards.hitl import bind_resume, hitl_request
from langgraph_warden.guards.run_charter import charter_from_run
from langgraph_warden.testing import ScriptedChatModel, tool_call

RUNS: list[str] = []


@tool
def issue_refund(order_id: str) -> str:
    """Refund an order. Irreversible."""
    RUNS.append(order_id)
    return f"refunded {order_id}"


@pytest.fixture
def agent(tmp_path):
    RUNS.clear()
    warden = Warden.open(f"sqlite:///{tmp_path / 'w.db'}", ephemeral_keys=True)
    warden.tools.register(ToolSpec("issue_refund", irreversible=True))
    model = ScriptedChatModel(script=[
        AIMessage("", tool_calls=[tool_call("issue_refund", {"order_id": "O-1"}, "call_1")]),
        AIMessage("done"),
    ])
    graph = create_agent(model, [issue_refund], middleware=[warden.middleware()], checkpointer=warden.checkpointer)
    yield warden, graph
    warden.close()


def _pause(warden, graph, thread, **charter):
    config = warden.start_run(thread, owner="alice", intent="refund", **charter)
    out = graph.invoke({"messages": [("user", "refund O-1")]}, config)
    (pending,) = out["__interrupt__"]
    return config, pending


def test_interrupt_is_a_valid_hitl_request(agent):
    warden, graph = agent
    _, pending = _pause(warden, graph, "t-shape")
    TypeAdapter(HITLRequest).validate_python(pending.value)  # LangChain's own type accepts it
    assert pending.value["action_requests"][0]["name"] == "issue_refund"
    assert pending.value["action_requests"][0]["args"] == {"order_id": "O-1"}
    assert pending.value["review_configs"][0]["allowed_decisions"] == ["approve", "edit", "reject"]
    assert ApprovalRequest.from_dict(pending.value).request_id == pending.value["request_id"]  # warden's fields ride along


def test_hitl_approve_runs_once(agent):
    warden, graph = agent
    config, pending = _pause(warden, graph, "t-approve")
    out = graph.invoke(Command(resume={pending.id: {"decisions": [{"type": "approve", "approver": "bob"}]}}), config)
    assert out["messages"][-1].content == "done" and RUNS == ["O-1"]
    (granted,) = warden.ledger.events("t-approve", kinds=[EventKind.APPROVAL_GRANTED])
    assert granted.payload["approver"] == "bob" and granted.payload["answer"]["action_digest"] == pending.value["action_digest"]


def test_hitl_edit_is_decided_again_and_reject_does_not_run(agent):
    warden, graph = agent
    config, _ = _pause(warden, graph, "t-edit")
    graph.invoke(Command(resume={"decisions": [
        {"type": "edit", "approver": "bob", "edited_action": {"name": "issue_refund", "args": {"order_id": "O-2"}}}]}), config)
    assert RUNS == ["O-2"]
    decided = warden.ledger.events("t-edit", kinds=[EventKind.POLICY_DECIDED])
    assert any(e.payload.get("edited_args_digest") for e in decided)  # the edited call went through the policy

    config, _ = _pause(warden, graph, "t-reject")
    out = graph.invoke(Command(resume={"type": "reject", "approver": "bob", "message": "no"}), config)
    assert RUNS == ["O-2"] and "Rejected by bob: no" in out["messages"][-2].content


def test_hitl_answers_keep_separation_of_duties(agent):
    warden, graph = agent
    config, pending = _pause(warden, graph, "t-sod", separation_of_duties=True)
    with pytest.raises(InvalidApprovalError, match="separation of duties"):
        graph.invoke(Command(resume={"decisions": [{"type": "approve", "approver": "ALICE"}]}), config)
    assert RUNS == [] and [r.request_id for r in warden.pending_approvals("t-sod")] == [pending.value["request_id"]]


REQ = ApprovalRequest(
    request_id="apr_1", thread_id="t", tool_call_id="c", tool="issue_refund", args={"order_id": "O-1"},
    reasons=("irreversible",), owner="alice", intent="refund", risk_tier="medium", action_digest="sha256:abc",
    expires_at="2999-01-01T00:00:00+00:00",
)


@pytest.mark.parametrize(("answer", "field", "reason"), [
    ({"decisions": []}, "decisions", "invalid_payload"),
    ({"decisions": [{"type": "approve"}, {"type": "approve"}]}, "decisions", "invalid_payload"),
    ({"decisions": [{"type": "respond", "message": "x"}]}, "type", "invalid_payload"),
    ({"decisions": [{"type": "approve"}]}, "approver", "invalid_payload"),  # no auth: name who answers
    ({"type": "approve", "approver": "bob", "extra": 1}, "extra", "invalid_payload"),
    ({"type": "edit", "approver": "bob"}, "edited_action", "invalid_payload"),
    ({"type": "edit", "approver": "bob", "edited_action": {"name": "other", "args": {}}}, "edited_action", "invalid_payload"),
])
def test_malformed_hitl_answers_are_refused_naming_the_field(answer, field, reason):
    with pytest.raises(InvalidApprovalError) as err:
        bind_resume(answer, REQ, None)
    assert err.value.field == field and err.value.reason == reason


def test_with_auth_the_authenticated_user_is_the_approver():
    assert bind_resume({"decisions": [{"type": "approve"}]}, REQ, "bob")["approver"] == "bob"
    assert bind_resume({"type": "approve", "approver": "BOB"}, REQ, "bob")["approver"] == "bob"
    with pytest.raises(InvalidApprovalError) as err:
        bind_resume({"type": "approve", "approver": "carol"}, REQ, "bob")
    assert err.value.reason == "approver_mismatch"
    native = {"request_id": "apr_1", "action_digest": "sha256:abc", "decision": "approve", "approver": "carol"}
    with pytest.raises(InvalidApprovalError):
        bind_resume(native, REQ, "bob")  # warden's own format too
    assert bind_resume({k: v for k, v in native.items() if k != "approver"}, REQ, "bob")["approver"] == "bob"
    assert bind_resume(native, REQ, None) is native  # no auth: unchanged
    with pytest.raises(InvalidApprovalError) as stale:  # recorded by an earlier run that died before the guard did
        bind_resume({"decisions": [{"type": "approve"}]}, REQ, "alice", sent_now=False)
    assert stale.value.reason == "unattributable"


def test_request_fields_carried_by_a_hitl_answer_bind_it():
    doc = bind_resume({"type": "approve", "approver": "b", "request_id": "apr_other", "action_digest": "sha256:x"}, REQ, None)
    assert (doc["request_id"], doc["action_digest"]) == ("apr_other", "sha256:x")  # then refused by the guard's checks
    assert "approve" in hitl_request(REQ)["review_configs"][0]["allowed_decisions"]


def test_charter_from_run():
    auth = {"configurable": {"langgraph_auth_user_id": "alice", "intent": "refund", "risk_tier": "high"},
            "metadata": {"owner": "mallory"}}
    c = charter_from_run(auth)
    assert isinstance(c, RunCharter) and (c.owner, c.intent, c.risk_tier) == ("alice", "refund", "high")
    plain = charter_from_run({"configurable": {"langgraph_auth_user_id": "", "intent": "x"}, "metadata": {"owner": "bob"}})
    assert plain is not None and plain.owner == "bob" and plain.risk_tier == "medium"
    assert charter_from_run({"configurable": {"intent": "x"}}) is None  # no owner: the guard refuses (no_owner)
    with pytest.raises(ConfigurationError, match="intent"):
        charter_from_run({"metadata": {"owner": "bob"}})
    with pytest.raises(ConfigurationError, match="risk_tier"):
        charter_from_run({"metadata": {"owner": "bob", "intent": "x", "risk_tier": "extreme"}})


def test_high_tier_hitl_answers_need_a_valid_signature(tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from langgraph_warden.cli_server import hitl_decision
    from langgraph_warden.guards.approval import approve
    from langgraph_warden.keys import SigningKey

    RUNS.clear()
    bob = SigningKey.from_private(Ed25519PrivateKey.generate(), "file")
    warden = Warden.open(f"sqlite:///{tmp_path / 'w.db'}", ephemeral_keys=True, approver_keys={"bob": bob.public_key})
    try:
        warden.tools.register(ToolSpec("issue_refund", irreversible=True))
        model = ScriptedChatModel(script=[
            AIMessage("", tool_calls=[tool_call("issue_refund", {"order_id": "O-1"}, "call_1")]), AIMessage("done")])
        graph = create_agent(model, [issue_refund], middleware=[warden.middleware()], checkpointer=warden.checkpointer)
        config, pending = _pause(warden, graph, "t-high", risk_tier="high")
        assert pending.value["requires_signature"] and pending.value["separation_of_duties"]
        with pytest.raises(InvalidApprovalError) as unsigned:
            graph.invoke(Command(resume={"decisions": [{"type": "approve", "approver": "bob"}]}), config)
        assert unsigned.value.reason == "unsigned"
        signed = hitl_decision(approve(pending.value, "bob", key=bob), ApprovalRequest.from_dict(pending.value))
        forged = {**signed, "message": "changed after signing"}
        with pytest.raises(InvalidApprovalError) as bad:
            graph.invoke(Command(resume={"decisions": [forged]}), config)
        assert bad.value.reason == "bad_signature" and RUNS == []
        graph.invoke(Command(resume={"decisions": [signed]}), config)
        assert RUNS == ["O-1"]
        (granted,) = warden.ledger.events("t-high", kinds=[EventKind.APPROVAL_GRANTED])
        assert granted.payload["authenticated"] is True
    finally:
        warden.close()
