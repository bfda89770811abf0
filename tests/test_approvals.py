"""Human approval on real graphs (issue 6): each decision, expiry, reuse, wrong request/digest,
separation of duties, signed approvals, bad payloads, parallel interrupts, and a crash between
approval and execution. SQLite always; PostgreSQL too when WARDEN_TEST_POSTGRES_URL is set.

The only fake is the LLM (a scripted chat model). Side effects are counted in a file.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from langchain.agents import create_agent
from langchain_core.messages import HumanMessage, ToolMessage
from langgraph.types import Command

from langgraph_warden import canonical
from langgraph_warden.events import EventKind
from langgraph_warden.guards import approval as approvals
from langgraph_warden.guards.approval import InvalidApprovalError, action_digest
from langgraph_warden.keys import EphemeralKeyStore
from langgraph_warden.warden import Warden

from .support.agents import ScriptedChatModel, SideEffects, call, turn
from .support.forker import Launcher
from .support.proc_approval_crash import SCRIPT as CRASH_SCRIPT
from .support.schedules import every_call_starts, later_calls_never_start, tool_node
from .support.graphs_approval import CRASH_ENV, DEFAULT_SCRIPT, PARALLEL_SCRIPT, build, policy, register, tools


@pytest.fixture
def effects_path(tmp_path):
    return tmp_path / "effects.jsonl"


@pytest.fixture
def effects(effects_path):
    return SideEffects(effects_path)


@pytest.fixture
def keys():
    """Approver signing keys (Ed25519), one per person."""
    return {name: EphemeralKeyStore().signing_key() for name in ("alice@example.com", "bob@example.com", "carol@example.com")}


@pytest.fixture
def warden(db_url, tmp_path, keys):
    with Warden.open(
        db_url,
        ephemeral_keys=True,
        policy=policy(tmp_path),
        approver_keys={name: k.public_key for name, k in keys.items() if name != "carol@example.com"},
    ) as w:
        yield w


def kinds(warden: Warden, thread: str) -> list[str]:
    return [e.kind for e in warden.ledger.events(thread) if not e.kind.startswith(("checkpoint.", "writes."))]


def events(warden: Warden, thread: str, kind: str) -> list[dict]:
    return [e.payload for e in warden.ledger.events(thread, kinds=[kind])]


def tool_messages(result) -> dict[str, ToolMessage]:
    return {m.tool_call_id: m for m in result["messages"] if isinstance(m, ToolMessage)}


def start(warden, effects_path, thread, script=DEFAULT_SCRIPT, **run):
    g = build(warden, effects_path, script)
    run.setdefault("owner", "alice@example.com")
    run.setdefault("intent", "refund order o-1 and tell the customer")
    cfg = warden.start_run(thread, **run)
    out = g.invoke({"messages": [HumanMessage("please refund o-1")]}, cfg)
    (intr,) = out["__interrupt__"]
    return g, cfg, intr


def assert_still_paused(g, cfg, intr) -> None:
    state = g.get_state(cfg)
    assert state.next == ("tools",)
    assert [i.id for i in state.interrupts] == [intr.id]
    assert [i.value["request_id"] for i in state.interrupts] == [intr.value["request_id"]]


# ---------------------------------------------------------------------------------------- decisions


def test_approve_runs_once_and_records_approver(warden, effects_path, effects):
    g, cfg, intr = start(warden, effects_path, "t-approve")
    req = intr.value
    assert req["kind"] == approvals.APPROVAL_REQUEST_KIND and req["tool"] == "issue_refund"
    assert req["action_digest"] == action_digest("issue_refund", {"order_id": "o-1", "amount": 10}, "t-approve", "r1")
    assert intr.response_schema and intr.response_schema["title"].startswith("langgraph-warden")
    assert effects.count("issue_refund") == 0

    out = g.invoke(Command(resume=approvals.approve(req, "bob@example.com", message="ok")), cfg)
    assert tool_messages(out)["r1"].content == "refunded 10 on o-1"
    assert effects.count("issue_refund") == 1
    (granted,) = events(warden, "t-approve", EventKind.APPROVAL_GRANTED)
    assert granted["approver"] == "bob@example.com" and granted["request_id"] == req["request_id"]
    assert granted["original_action_digest"] == req["action_digest"] and granted["authenticated"] is False
    started = events(warden, "t-approve", EventKind.TOOL_STARTED)
    assert [s["approval_request_id"] for s in started] == [req["request_id"]]
    # The run goes on to the next gated call (the e-mail): a new request, not the old approval.
    (intr2,) = out["__interrupt__"]
    assert intr2.value["tool"] == "send_email" and intr2.value["request_id"] != req["request_id"]


def test_reject_stops_the_call_and_the_agent_sees_the_message(warden, effects_path, effects):
    g, cfg, intr = start(warden, effects_path, "t-reject")
    out = g.invoke(Command(resume=approvals.reject(intr.value, "bob@example.com", message="refund needs a ticket")), cfg)
    msg = tool_messages(out)["r1"]
    assert msg.status == "error" and "refund needs a ticket" in msg.content and "bob@example.com" in msg.content
    # The message is in the conversation the model answers next (its next turn was produced after it).
    msgs = out["messages"]
    assert msgs.index(msg) < len(msgs) - 1
    assert effects.count("issue_refund") == 0
    (rejected,) = events(warden, "t-reject", EventKind.APPROVAL_REJECTED)
    assert rejected["approver"] == "bob@example.com" and rejected["message"] == "refund needs a ticket"
    assert not events(warden, "t-reject", EventKind.TOOL_STARTED)
    assert warden.audit("t-reject").action("r1").status == "rejected"


def test_edit_allowed_runs_with_edited_args_and_keeps_both_digests(warden, effects_path, effects):
    g, cfg, intr = start(warden, effects_path, "t-edit")
    req = intr.value
    out = g.invoke(Command(resume=approvals.edit(req, "bob@example.com", {"order_id": "o-1", "amount": 5})), cfg)
    assert tool_messages(out)["r1"].content == "refunded 5 on o-1"
    assert [(e["tool"], e["amount"]) for e in effects.entries()] == [("issue_refund", 5)]
    (edited,) = events(warden, "t-edit", EventKind.APPROVAL_EDITED)
    assert edited["original_action_digest"] == req["action_digest"]
    assert edited["edited_action_digest"] == action_digest("issue_refund", {"order_id": "o-1", "amount": 5}, "t-edit", "r1")
    assert edited["edited_args"] == {"order_id": "o-1", "amount": 5}
    # The edited action went through the policy again, and the executed arguments are the edited ones.
    decided = [p for p in events(warden, "t-edit", EventKind.POLICY_DECIDED) if p["tool_call_id"] == "r1"]
    assert len(decided) == 2 and decided[1]["edited_args_digest"] == canonical.digest({"order_id": "o-1", "amount": 5})
    (started,) = events(warden, "t-edit", EventKind.TOOL_STARTED)
    assert started["executed_args_digest"] == canonical.digest({"order_id": "o-1", "amount": 5})


def test_edit_denied_by_policy_does_not_run(warden, effects_path, effects):
    g, cfg, intr = start(warden, effects_path, "t-edit-deny")
    out = g.invoke(Command(resume=approvals.edit(intr.value, "bob@example.com", {"order_id": "o-1", "amount": 500})), cfg)
    msg = tool_messages(out)["r1"]
    assert msg.status == "error" and "amount_over_limit" in msg.content and "not run" in msg.content
    assert effects.count("issue_refund") == 0
    assert not events(warden, "t-edit-deny", EventKind.TOOL_STARTED)
    (edited,) = events(warden, "t-edit-deny", EventKind.APPROVAL_EDITED)
    assert edited["edited_args"]["amount"] == 500 and edited["original_action_digest"] == intr.value["action_digest"]
    (denied,) = events(warden, "t-edit-deny", EventKind.TOOL_DENIED)
    assert denied["reasons"] == ["amount_over_limit"]
    assert warden.audit("t-edit-deny").action("r1").status == "denied"


def test_expired_approval_does_not_run(warden, effects_path, effects):
    g, cfg, intr = start(warden, effects_path, "t-expire", approval_ttl_seconds=1)
    req = intr.value
    time.sleep(1.1)
    out = g.invoke(Command(resume=approvals.approve(req, "bob@example.com")), cfg)
    msg = tool_messages(out)["r1"]
    assert msg.status == "error" and "expired" in msg.content
    assert effects.count("issue_refund") == 0
    (expired,) = events(warden, "t-expire", EventKind.APPROVAL_EXPIRED)
    assert expired["request_id"] == req["request_id"] and expired["approver"] == "bob@example.com"
    assert not events(warden, "t-expire", EventKind.APPROVAL_GRANTED)
    assert not events(warden, "t-expire", EventKind.TOOL_STARTED)
    assert warden.audit("t-expire").action("r1").reasons == ["approval_expired"]
    assert req["request_id"] not in [p.request_id for p in warden.pending_approvals("t-expire")]


# ------------------------------------------------------------------------------------------ refusals


def test_reuse_after_completion_is_a_noop(warden, effects_path, effects):
    """LangGraph itself drops a resume sent to a finished thread: no task runs, so nothing executes again."""
    script = [turn(call("issue_refund", {"order_id": "o-1", "amount": 10}, "r1")), turn(text="done")]
    g, cfg, intr = start(warden, effects_path, "t-reuse-done", script=script)
    payload = approvals.approve(intr.value, "bob@example.com")
    g.invoke(Command(resume=payload), cfg)
    before = kinds(warden, "t-reuse-done")
    for again in (payload, {intr.id: payload}):
        out = g.invoke(Command(resume=again), cfg)
        assert "__interrupt__" not in out
    assert effects.count("issue_refund") == 1
    assert kinds(warden, "t-reuse-done") == before  # no tool or approval event at all


def test_reuse_on_a_later_request_is_refused(warden, effects_path, effects):
    g, cfg, intr = start(warden, effects_path, "t-reuse")
    first = approvals.approve(intr.value, "bob@example.com")
    out = g.invoke(Command(resume=first), cfg)
    (intr2,) = out["__interrupt__"]
    # The refund's approval, sent again while the run waits on the e-mail's request.
    with pytest.raises(InvalidApprovalError, match="already decided") as err:
        g.invoke(Command(resume=first), cfg)
    assert err.value.reason == "reused" and err.value.field == "request_id"
    (refused,) = events(warden, "t-reuse", EventKind.APPROVAL_REFUSED)
    assert refused["reason"] == "reused" and refused["request_id"] == intr2.value["request_id"]
    assert refused["approver"] == "bob@example.com"
    assert_still_paused(g, cfg, intr2)
    assert effects.count("issue_refund") == 1 and effects.count("send_email") == 0

    out = g.invoke(Command(resume=approvals.approve(intr2.value, "bob@example.com")), cfg)
    assert tool_messages(out)["e1"].content == "sent to ada@example.com"
    assert effects.count("issue_refund") == 1 and effects.count("send_email") == 1


@pytest.mark.parametrize(
    "tamper, field, reason",
    [
        (lambda p: {**p, "request_id": "apr_000000000000000000000000"}, "request_id", "unknown_request"),
        (lambda p: {**p, "action_digest": action_digest("issue_refund", {"order_id": "o-1", "amount": 9999}, "t", "r1")},
         "action_digest", "wrong_digest"),
    ],
    ids=["wrong-request-id", "wrong-digest"],
)
def test_wrong_request_or_digest_refused_then_approved(warden, effects_path, effects, tamper, field, reason):
    g, cfg, intr = start(warden, effects_path, "t-wrong")
    good = approvals.approve(intr.value, "bob@example.com")
    with pytest.raises(InvalidApprovalError) as err:
        g.invoke(Command(resume=tamper(good)), cfg)
    assert err.value.field == field and err.value.reason == reason
    (refused,) = events(warden, "t-wrong", EventKind.APPROVAL_REFUSED)
    assert refused["reason"] == reason and refused["field"] == field
    assert_still_paused(g, cfg, intr)
    assert effects.count("issue_refund") == 0 and not events(warden, "t-wrong", EventKind.TOOL_STARTED)

    out = g.invoke(Command(resume=good), cfg)
    assert tool_messages(out)["r1"].content == "refunded 10 on o-1"
    assert effects.count("issue_refund") == 1


def test_separation_of_duties_on_high_tier(warden, effects_path, effects, keys):
    g, cfg, intr = start(warden, effects_path, "t-sod", risk_tier="high")
    req = intr.value
    assert req["separation_of_duties"] is True and req["requires_signature"] is True
    owner = "alice@example.com"
    with pytest.raises(InvalidApprovalError, match="separation of duties") as err:
        g.invoke(Command(resume=approvals.approve(req, owner, key=keys[owner])), cfg)
    assert err.value.field == "approver" and err.value.reason == "separation_of_duties"
    (refused,) = events(warden, "t-sod", EventKind.APPROVAL_REFUSED)
    assert refused["approver"] == owner and refused["reason"] == "separation_of_duties"
    # The workload itself cannot approve either.
    with pytest.raises(InvalidApprovalError, match="separation of duties"):
        g.invoke(Command(resume=approvals.approve(req, warden.ledger.workload_id)), cfg)
    assert_still_paused(g, cfg, intr)
    assert effects.count("issue_refund") == 0

    out = g.invoke(Command(resume=approvals.approve(req, "bob@example.com", key=keys["bob@example.com"])), cfg)
    assert tool_messages(out)["r1"].content == "refunded 10 on o-1"
    (granted,) = events(warden, "t-sod", EventKind.APPROVAL_GRANTED)
    assert granted["approver"] == "bob@example.com" and granted["authenticated"] is True
    assert effects.count("issue_refund") == 1


def test_authenticated_approvals_on_high_tier(warden, effects_path, effects, keys):
    g, cfg, intr = start(warden, effects_path, "t-signed", risk_tier="high")
    req = intr.value
    bob = "bob@example.com"
    forged = approvals.approve(req, bob, key=keys["carol@example.com"])  # carol's key, bob's name
    tampered = {**approvals.approve(req, bob, key=keys[bob]), "message": "changed after signing"}
    unregistered = approvals.approve(req, "carol@example.com", key=keys["carol@example.com"])
    for payload, reason in (
        (approvals.approve(req, bob), "unsigned"),
        (forged, "bad_signature"),
        (tampered, "bad_signature"),
        (unregistered, "bad_signature"),
    ):
        with pytest.raises(InvalidApprovalError) as err:
            g.invoke(Command(resume=payload), cfg)
        assert err.value.field == "signature" and err.value.reason == reason, payload
        assert_still_paused(g, cfg, intr)
    assert [p["reason"] for p in events(warden, "t-signed", EventKind.APPROVAL_REFUSED)] == [
        "unsigned", "bad_signature", "bad_signature", "bad_signature"
    ]
    assert effects.count("issue_refund") == 0

    out = g.invoke(Command(resume=approvals.approve(req, bob, key=keys[bob])), cfg)
    assert tool_messages(out)["r1"].content == "refunded 10 on o-1"
    (granted,) = events(warden, "t-signed", EventKind.APPROVAL_GRANTED)
    assert granted["authenticated"] is True and granted["answer"]["key_id"] == keys[bob].key_id
    assert effects.count("issue_refund") == 1


def test_bad_resume_payloads_are_refused_and_change_nothing(warden, effects_path, effects):
    g, cfg, intr = start(warden, effects_path, "t-bad")
    good = approvals.approve(intr.value, "bob@example.com")
    checkpoint_before = g.get_state(cfg).config["configurable"]["checkpoint_id"]
    cases = [
        ("yes", "$"),
        (["approve"], "$"),
        (42, "$"),
        ({k: v for k, v in good.items() if k != "request_id"}, "request_id"),
        ({k: v for k, v in good.items() if k != "action_digest"}, "action_digest"),
        ({k: v for k, v in good.items() if k != "decision"}, "decision"),
        ({k: v for k, v in good.items() if k != "approver"}, "approver"),
        ({**good, "approver": ""}, "approver"),
        ({**good, "approver": 7}, "approver"),
        ({**good, "decision": "maybe"}, "decision"),
        ({**good, "decision": 1}, "decision"),
        ({**good, "message": 3}, "message"),
        ({**good, "args": {"amount": 1}}, "args"),
        ({**good, "decision": "edit"}, "args"),
        ({**good, "decision": "edit", "args": "amount=1"}, "args"),
        ({**good, "key_id": "k1"}, "signature"),
        ({**good, "approved": True}, "approved"),
        ({**good, "request_id": "apr_ffffffffffffffffffffffff"}, "request_id"),
        ({"apr_ffffffffffffffffffffffff": good}, "request_id"),
    ]
    for payload, field in cases:
        with pytest.raises(InvalidApprovalError) as err:
            g.invoke(Command(resume=payload), cfg)
        assert err.value.field == field, (payload, str(err.value))
        assert field in str(err.value) or field == "$", str(err.value)
        assert_still_paused(g, cfg, intr)
    assert g.get_state(cfg).config["configurable"]["checkpoint_id"] == checkpoint_before
    assert len(events(warden, "t-bad", EventKind.APPROVAL_REFUSED)) == len(cases)
    for kind in (EventKind.TOOL_STARTED, EventKind.APPROVAL_GRANTED, EventKind.CREDENTIAL_ISSUED, EventKind.TOOL_DENIED):
        assert not events(warden, "t-bad", kind)
    assert effects.count("issue_refund") == 0

    out = g.invoke(Command(resume=good), cfg)  # the same interrupt, answered correctly
    assert tool_messages(out)["r1"].content == "refunded 10 on o-1"
    assert effects.count("issue_refund") == 1
    assert warden.audit("t-bad").verified


# -------------------------------------------------------------------------------- parallel interrupts


def test_create_agent_parallel_interrupts_resume_by_interrupt_id(warden, effects_path, effects):
    register(warden)
    script = [
        turn(
            call("issue_refund", {"order_id": "o-1", "amount": 10}, "r1"),
            call("send_email", {"to": "ada@example.com", "body": "refunded"}, "e1"),
        ),
        turn(text="done"),
    ]
    agent = create_agent(
        ScriptedChatModel(script=script), tools(effects), middleware=[warden.middleware()], checkpointer=warden.checkpointer
    )
    cfg = warden.start_run("t-agent", owner="alice@example.com", intent="refund and notify")
    out = agent.invoke({"messages": [HumanMessage("go")]}, cfg)
    interrupts = out["__interrupt__"]
    assert sorted(i.value["tool_call_id"] for i in interrupts) == ["e1", "r1"]
    assert len({i.id for i in interrupts}) == 2
    assert effects.entries() == []

    out = agent.invoke(Command(resume={i.id: approvals.approve(i.value, "bob@example.com") for i in interrupts}), cfg)
    msgs = tool_messages(out)
    assert msgs["r1"].content == "refunded 10 on o-1" and msgs["e1"].content == "sent to ada@example.com"
    assert effects.count("issue_refund") == 1 and effects.count("send_email") == 1
    assert len(events(warden, "t-agent", EventKind.APPROVAL_GRANTED)) == 2
    assert warden.pending_approvals("t-agent") == []


def test_toolnode_parallel_gated_calls_resume_by_request_id(warden, effects_path, effects, monkeypatch):
    """One ToolNode task, two gated calls: LangGraph surfaces one interrupt, the ledger lists both;
    a {request_id: payload} resume answers both at once, whichever order the threads run in."""
    monkeypatch.setattr(tool_node, "get_executor_for_config", every_call_starts)  # both calls ask (see schedules)
    g, cfg, intr = start(warden, effects_path, "t-tn-map", script=PARALLEL_SCRIPT)
    pending = warden.pending_approvals("t-tn-map")
    assert sorted(p.tool_call_id for p in pending) == ["e1", "r1"]
    assert intr.value["request_id"] in {p.request_id for p in pending}

    out = g.invoke(Command(resume={p.request_id: approvals.approve(p, "bob@example.com") for p in pending}), cfg)
    assert "__interrupt__" not in out
    msgs = tool_messages(out)
    assert msgs["r1"].content == "refunded 10 on o-1" and msgs["e1"].content == "sent to ada@example.com"
    assert effects.count("issue_refund") == 1 and effects.count("send_email") == 1
    assert sorted(p["tool_call_id"] for p in events(warden, "t-tn-map", EventKind.APPROVAL_GRANTED)) == ["e1", "r1"]


@pytest.mark.parametrize("order", [["e1", "r1"], ["r1", "e1"]])
def test_toolnode_parallel_gated_calls_answered_one_by_one(warden, effects_path, effects, order, monkeypatch):
    monkeypatch.setattr(tool_node, "get_executor_for_config", every_call_starts)  # both calls ask (see schedules)
    g, cfg, intr = start(warden, effects_path, f"t-tn-{order[0]}", script=PARALLEL_SCRIPT)
    thread = cfg["configurable"]["thread_id"]
    by_call = {p.tool_call_id: p for p in warden.pending_approvals(thread)}
    surfaced = intr
    for n, tcid in enumerate(order):
        out = g.invoke(Command(resume=approvals.approve(by_call[tcid], "bob@example.com")), cfg)
        if n == 0:
            (nxt,) = out["__interrupt__"]
            assert nxt.value["tool_call_id"] == order[1] and nxt.id != surfaced.id
    assert "__interrupt__" not in out
    assert effects.count("issue_refund") == 1 and effects.count("send_email") == 1
    assert not events(warden, thread, EventKind.APPROVAL_REFUSED)
    assert warden.audit(thread).summary.side_effects_executed_twice == []


@pytest.mark.parametrize("answer", ["approve", "reject"])
def test_toolnode_sibling_answer_is_recorded_even_when_its_call_does_not_run(
    warden, effects_path, effects, answer, monkeypatch
):
    """A sync ToolNode runs a step's calls through ``Executor.map``: when the first call pauses
    again, calls the pool has not started yet are cancelled (seen under CPU load; pinned here, see
    ``tests/support/schedules.py``). An answer to
    such a sibling was taken from LangGraph by the call that did run: it is recorded in the
    ledger then, so the request is no longer pending, and the sibling uses the recorded answer
    when its task runs again (once, no second record)."""
    monkeypatch.setattr(tool_node, "get_executor_for_config", every_call_starts)  # both calls ask first
    g, cfg, intr = start(warden, effects_path, "t-tn-sib-" + answer, script=PARALLEL_SCRIPT)
    thread = cfg["configurable"]["thread_id"]
    by_call = {p.tool_call_id: p for p in warden.pending_approvals(thread)}
    assert intr.value["tool_call_id"] == "r1" and set(by_call) == {"r1", "e1"}
    e1 = by_call["e1"]
    payload = (approvals.approve(e1, "bob@example.com") if answer == "approve"
               else approvals.reject(e1, "bob@example.com", message="not now"))

    with monkeypatch.context() as m:
        m.setattr(tool_node, "get_executor_for_config", later_calls_never_start)
        out = g.invoke(Command(resume={e1.request_id: payload}), cfg)
    (again,) = out["__interrupt__"]
    assert again.value["tool_call_id"] == "r1"
    assert effects.count("send_email") == 0  # e1's call was cancelled before it started
    assert [p.tool_call_id for p in warden.pending_approvals(thread)] == ["r1"]
    final = EventKind.APPROVAL_GRANTED if answer == "approve" else EventKind.APPROVAL_REJECTED
    (recorded,) = events(warden, thread, final)
    assert recorded["tool_call_id"] == "e1" and recorded["request_id"] == e1.request_id
    assert recorded["approver"] == "bob@example.com"

    out = g.invoke(Command(resume=approvals.approve(by_call["r1"], "bob@example.com")), cfg)
    assert "__interrupt__" not in out
    msgs = tool_messages(out)
    assert msgs["r1"].content == "refunded 10 on o-1"
    if answer == "approve":
        assert msgs["e1"].content == "sent to ada@example.com"
        assert effects.count("send_email") == 1
    else:
        assert "Rejected by bob@example.com: not now" in msgs["e1"].content
        assert effects.count("send_email") == 0
        assert [p["tool_call_id"] for p in events(warden, thread, EventKind.TOOL_DENIED)] == ["e1"]
    assert effects.count("issue_refund") == 1
    assert sorted(p["tool_call_id"] for p in events(warden, thread, final)) == sorted(
        ["e1", "r1"] if answer == "approve" else ["e1"])
    assert not events(warden, thread, EventKind.APPROVAL_REFUSED)
    assert warden.pending_approvals(thread) == []
    audit = warden.audit(thread)
    assert audit.verified and audit.summary.side_effects_executed_twice == []


# ------------------------------------------------------------------------- crash between approve and run


def _proc(
    launcher: Launcher, db_url: str, effects_path: Path, thread: str, phase: str, crash: bool = False,
    crash_after_approval: bool = False,
) -> subprocess.CompletedProcess:
    env = {CRASH_ENV: "issue_refund" if crash else None,
           "WARDEN_TEST_CRASH_AFTER_APPROVAL": "1" if crash_after_approval else None}
    return launcher.run("tests.support.proc_approval_crash", db_url, str(effects_path), thread, phase, env=env)


def _start_paused(db_url: str, effects_path: Path, thread: str) -> None:
    with Warden.open(db_url, ephemeral_keys=True) as w:
        g = build(w, effects_path, CRASH_SCRIPT)
        cfg = w.start_run(thread, owner="alice@example.com", intent="refund o-7")
        assert len(g.invoke({"messages": [HumanMessage("refund o-7")]}, cfg)["__interrupt__"]) == 1


def test_crash_between_approval_and_execution_runs_once_after_restart(db_url, tmp_path, forked):
    """Process A (another process) resumes with the approval and is SIGKILLed right after ``approval.granted``
    is committed, before ``tool.started``. Process B (this one) resumes: the approved call runs exactly
    once, without a second approval."""
    effects_path = tmp_path / "effects.jsonl"
    effects = SideEffects(effects_path)
    thread = "t-crash-approved"
    _start_paused(db_url, effects_path, thread)
    crashed = _proc(forked, db_url, effects_path, thread, "approve", crash_after_approval=True)
    assert crashed.returncode == -9, crashed.stderr
    assert effects.count("issue_refund") == 0

    with Warden.open(db_url, ephemeral_keys=True) as w:
        tail = [e.kind for e in w.ledger.events(thread) if e.kind.startswith(("approval.", "tool."))]
        assert tail[-1] == EventKind.APPROVAL_GRANTED
        assert w.pending_approvals(thread) == []
        g = build(w, effects_path, CRASH_SCRIPT)
        out = g.invoke(None, {"configurable": {"thread_id": thread}})
        assert "__interrupt__" not in out
        assert tool_messages(out)["r1"].content == "refunded 7 on o-7"
        assert effects.count("issue_refund") == 1
        assert {e["pid"] for e in effects.entries()} == {os.getpid()}
        trail = w.ledger.events(thread)
        assert len([e for e in trail if e.kind == EventKind.APPROVAL_GRANTED]) == 1  # approved once, not re-asked
        assert len([e for e in trail if e.kind == EventKind.APPROVAL_REQUESTED]) == 1
        assert [e.payload["attempt"] for e in trail if e.kind == EventKind.TOOL_COMPLETED] == [1]
        assert not [e for e in trail if e.kind == EventKind.TOOL_ABORTED]
        audit = w.audit(thread)
        assert audit.verified and audit.summary.side_effects_executed_twice == []
        assert audit.summary.ran_without_authorisation == []


def test_crash_inside_an_approved_call_is_not_retried_without_a_new_approval(db_url, tmp_path, forked):
    """Killed inside the tool (after ``tool.started``): the outcome is unknown, the approval covered that
    attempt only, so the non-idempotent call is recorded aborted and not retried."""
    effects_path = tmp_path / "effects.jsonl"
    effects = SideEffects(effects_path)
    thread = "t-crash-inside"
    _start_paused(db_url, effects_path, thread)
    crashed = _proc(forked, db_url, effects_path, thread, "approve", crash=True)
    assert crashed.returncode == -9, crashed.stderr  # SIGKILL, inside the tool, before its side effect
    assert effects.count("issue_refund") == 0

    with Warden.open(db_url, ephemeral_keys=True) as w:
        tail = [e.kind for e in w.ledger.events(thread) if e.kind.startswith(("approval.", "tool."))]
        assert tail[-2:] == [EventKind.APPROVAL_GRANTED, EventKind.TOOL_STARTED]
        g = build(w, effects_path, CRASH_SCRIPT)
        out = g.invoke(None, {"configurable": {"thread_id": thread}})
        msg = tool_messages(out)["r1"]
        assert msg.status == "error" and "outcome is unknown" in msg.content
        assert effects.count("issue_refund") == 0
        trail = w.ledger.events(thread)
        assert [e.payload["attempt"] for e in trail if e.kind == EventKind.TOOL_ABORTED] == [1]
        assert not [e for e in trail if e.kind == EventKind.TOOL_COMPLETED]
        audit = w.audit(thread)
        assert audit.verified and audit.summary.side_effects_executed_twice == []
        assert audit.summary.ran_without_authorisation == []
