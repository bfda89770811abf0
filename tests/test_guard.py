"""The guard on real graphs: allowed, denied and approval-gated calls, exactly-once, credentials.

A scripted chat model (the only fake: the LLM boundary) issues tool calls; a real
``ToolNode`` with ``wrap_tool_call``/``awrap_tool_call`` runs them through the
guard; a real WardenSaver on SQLite or PostgreSQL records everything.
"""

from __future__ import annotations

import operator
from typing import Annotated, TypedDict

import pytest
from langchain_core.messages import AnyMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command

from langgraph_warden.events import EventKind
from langgraph_warden.guards import approval as approvals
from langgraph_warden.guards.credentials import current_credential
from langgraph_warden.guards.tools import ToolSpec
from langgraph_warden.warden import Warden

from .support.agents import ScriptedChatModel, SideEffects, call, turn


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def build(warden: Warden, effects: SideEffects, script, *, fail_once: set[str] | None = None):
    failures = set(fail_once or ())

    @tool
    def lookup_customer(customer_id: str) -> str:
        """Read a customer record."""
        effects.record("lookup_customer", customer_id=customer_id)
        return f"customer {customer_id}: Ada, gold tier"

    @tool
    def send_email(to: str, body: str) -> str:
        """Send an e-mail outside the company."""
        effects.record("send_email", to=to)
        return f"sent to {to}"

    @tool
    def issue_refund(order_id: str, amount: int) -> str:
        """Refund an order."""
        lease = current_credential()
        if "refund" in failures:
            failures.discard("refund")
            raise RuntimeError(f"payment gateway timeout (token {lease.reveal()})")
        effects.record("issue_refund", order_id=order_id, amount=amount, lease=lease.lease_id, scopes=list(lease.scopes))
        return f"refunded {amount} on {order_id}"

    @tool
    def delete_everything() -> str:
        """Not declared to the warden: must never run."""
        effects.record("delete_everything")
        return "gone"

    warden.tools.register(ToolSpec("lookup_customer", sensitivity="confidential", data_classes=frozenset({"pii"}), idempotent=True))
    warden.tools.register(ToolSpec("send_email", external=True))
    warden.tools.register(ToolSpec("issue_refund", irreversible=True, scopes=("payments:refund",)))
    tools = [lookup_customer, send_email, issue_refund, delete_everything]
    model = ScriptedChatModel(script=script)

    def agent(state: State) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    b = StateGraph(State)
    b.add_node("agent", agent)
    b.add_node("tools", ToolNode(tools, wrap_tool_call=warden.guard, awrap_tool_call=warden.guard.awrap))
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", tools_condition)
    b.add_edge("tools", "agent")
    return b.compile(checkpointer=warden.checkpointer)


@pytest.fixture
def warden(db_url):
    with Warden.open(db_url, ephemeral_keys=True) as w:
        yield w


@pytest.fixture
def effects(tmp_path):
    return SideEffects(tmp_path / "effects.jsonl")


def kinds(warden: Warden, thread: str) -> list[str]:
    return [e.kind for e in warden.ledger.events(thread) if not e.kind.startswith(("checkpoint.", "writes."))]


def tool_messages(result) -> dict[str, ToolMessage]:
    return {m.tool_call_id: m for m in result["messages"] if isinstance(m, ToolMessage)}


def test_allowed_call_runs_once_and_is_recorded(warden, effects):
    g = build(warden, effects, [turn(call("lookup_customer", {"customer_id": "c-1"}, "c1")), turn(text="done")])
    cfg = warden.start_run("t-allow", owner="alice@example.com", intent="look up a customer", risk_tier="low")
    out = g.invoke({"messages": [HumanMessage("who is c-1?")]}, cfg)
    assert tool_messages(out)["c1"].content.startswith("customer c-1")
    assert effects.count("lookup_customer") == 1
    assert kinds(warden, "t-allow") == ["run.started", "policy.decided", "tool.started", "tool.completed"]
    decided = warden.ledger.events("t-allow", kinds=[EventKind.POLICY_DECIDED])[0].payload
    assert decided["decision"]["allow"] is True and decided["decision"]["engine"]
    assert decided["decision"]["input_digest"].startswith("sha256:")
    trail = warden.audit("t-allow")
    assert trail.verified and trail.action("c1").status == "authorised+completed"


def test_unknown_tool_denied_without_side_effect(warden, effects):
    g = build(warden, effects, [turn(call("delete_everything", {}, "d1")), turn(text="ok")])
    cfg = warden.start_run("t-deny", owner="alice@example.com", intent="cleanup")
    out = g.invoke({"messages": [HumanMessage("clean")]}, cfg)
    msg = tool_messages(out)["d1"]
    assert msg.status == "error" and "unknown_tool" in msg.content and "not run" in msg.content
    assert effects.count("delete_everything") == 0
    assert kinds(warden, "t-deny") == ["run.started", "policy.decided", "tool.denied"]
    assert warden.audit("t-deny").action("d1").status == "denied"


def test_run_without_owner_is_refused(warden, effects):
    g = build(warden, effects, [turn(call("lookup_customer", {"customer_id": "c-1"}, "c1")), turn(text="ok")])
    out = g.invoke({"messages": [HumanMessage("x")]}, {"configurable": {"thread_id": "t-noowner"}})
    assert "no_owner" in tool_messages(out)["c1"].content
    assert effects.count("lookup_customer") == 0


def test_outside_intent_denied(warden, effects):
    g = build(warden, effects, [turn(call("send_email", {"to": "x@y.z", "body": "hi"}, "e1")), turn(text="ok")])
    cfg = warden.start_run("t-intent", owner="alice@example.com", intent="read only", allowed_tools=["lookup_customer"])
    out = g.invoke({"messages": [HumanMessage("x")]}, cfg)
    assert "outside_intent" in tool_messages(out)["e1"].content
    assert effects.count("send_email") == 0


def test_approval_then_exactly_once_with_credential(warden, effects):
    script = [
        turn(
            call("lookup_customer", {"customer_id": "c-1"}, "c1"),
            call("issue_refund", {"order_id": "o-9", "amount": 10}, "r1"),
            call("lookup_customer", {"customer_id": "c-2"}, "c2"),
        ),
        turn(text="done"),
    ]
    g = build(warden, effects, script)
    cfg = warden.start_run("t-appr", owner="alice@example.com", intent="refund o-9", risk_tier="medium")
    first = g.invoke({"messages": [HumanMessage("refund")]}, cfg)
    (intr,) = first["__interrupt__"]
    req = intr.value
    assert req["tool"] == "issue_refund" and req["args"] == {"order_id": "o-9", "amount": 10}
    assert "irreversible" in req["reasons"] and req["owner"] == "alice@example.com"
    assert effects.count("issue_refund") == 0  # nothing before approval, and no credential either
    assert not warden.ledger.events("t-appr", kinds=[EventKind.CREDENTIAL_ISSUED])
    assert [p.request_id for p in warden.pending_approvals()] == [req["request_id"]]

    out = g.invoke(Command(resume=approvals.approve(req, "bob@example.com")), cfg)
    msgs = tool_messages(out)
    assert msgs["r1"].content == "refunded 10 on o-9"
    # Each side effect ran exactly once although the ToolNode task ran twice.
    assert effects.count("issue_refund") == 1 and effects.count("lookup_customer") == 2
    refund = [e for e in effects.entries() if e["tool"] == "issue_refund"][0]
    assert refund["scopes"] == ["payments:refund"]
    replayed = warden.ledger.events("t-appr", kinds=[EventKind.TOOL_REPLAYED])
    assert sorted(e.payload["tool_call_id"] for e in replayed) == ["c1", "c2"]
    issued = warden.ledger.events("t-appr", kinds=[EventKind.CREDENTIAL_ISSUED])
    revoked = warden.ledger.events("t-appr", kinds=[EventKind.CREDENTIAL_REVOKED])
    assert [e.payload["lease_id"] for e in issued] == [e.payload["lease_id"] for e in revoked] == [refund["lease"]]
    trail = warden.audit("t-appr")
    assert trail.verified
    assert trail.action("r1").status == "authorised+completed" and trail.action("r1").approver == "bob@example.com"
    assert sorted(trail.summary.replayed) == ["c1", "c2"]
    assert trail.summary.ran_without_authorisation == [] and trail.summary.side_effects_executed_twice == []
    assert trail.summary.credentials_outstanding == []
    assert warden.pending_approvals() == []


def test_rejected_call_does_not_run(warden, effects):
    g = build(warden, effects, [turn(call("send_email", {"to": "press@news.com", "body": "leak"}, "e1")), turn(text="ok")])
    cfg = warden.start_run("t-rej", owner="alice@example.com", intent="reply to customer")
    req = g.invoke({"messages": [HumanMessage("x")]}, cfg)["__interrupt__"][0].value
    out = g.invoke(Command(resume=approvals.reject(req, "bob", message="not to the press")), cfg)
    msg = tool_messages(out)["e1"]
    assert msg.status == "error" and "not to the press" in msg.content
    assert effects.count("send_email") == 0
    assert warden.audit("t-rej").action("e1").status == "rejected"


def test_failed_call_recorded_and_retry_is_new_attempt(warden, effects):
    script = [turn(call("issue_refund", {"order_id": "o-1", "amount": 5}, "r1")), turn(text="ok")]
    g = build(warden, effects, script, fail_once={"refund"})
    cfg = warden.start_run("t-fail", owner="alice@example.com", intent="refund", risk_tier="low")
    with pytest.raises(RuntimeError, match="payment gateway timeout"):
        g.invoke({"messages": [HumanMessage("x")]}, cfg)
    failed = warden.ledger.events("t-fail", kinds=[EventKind.TOOL_FAILED])
    assert len(failed) == 1 and failed[0].payload["error_type"] == "RuntimeError"
    assert "[REDACTED]" in failed[0].payload["error"]  # the token never reaches the history
    out = g.invoke(None, cfg)  # retry the failed step
    assert tool_messages(out)["r1"].content == "refunded 5 on o-1"
    started = warden.ledger.events("t-fail", kinds=[EventKind.TOOL_STARTED])
    assert [e.payload["attempt"] for e in started] == [1, 2]
    assert effects.count("issue_refund") == 1


async def test_async_guard_allows_denies_and_pauses(warden, effects):
    script = [
        turn(call("lookup_customer", {"customer_id": "c-1"}, "c1"), call("delete_everything", {}, "d1"), call("issue_refund", {"order_id": "o-2", "amount": 3}, "r1")),
        turn(text="done"),
    ]
    g = build(warden, effects, script)
    cfg = warden.start_run("t-async", owner="alice@example.com", intent="refund o-2")
    first = await g.ainvoke({"messages": [HumanMessage("x")]}, cfg)
    req = first["__interrupt__"][0].value
    out = await g.ainvoke(Command(resume=approvals.approve(req, "bob")), cfg)
    msgs = tool_messages(out)
    assert msgs["r1"].content == "refunded 3 on o-2" and msgs["d1"].status == "error"
    assert effects.count("issue_refund") == 1 and effects.count("lookup_customer") == 1
    assert effects.count("delete_everything") == 0
    assert warden.audit("t-async").verified


# --------------------------------------------------------------------------- cancellation (async)
async def _cancel_while(warden: Warden, g, cfg, part: str, method: str) -> None:
    """Run ``g`` as a task, cancel it while the guard's ``part`` runs ``method`` in its worker thread, then let it finish."""
    import asyncio
    import threading

    entered, release = threading.Event(), threading.Event()
    target = getattr(warden.guard, part)
    original = getattr(target, method)

    def held(*args):
        entered.set()
        release.wait(10)
        return original(*args)

    setattr(target, method, held)
    try:
        task = asyncio.create_task(g.ainvoke({"messages": [HumanMessage("who is c-9?")]}, cfg))
        assert await asyncio.to_thread(entered.wait, 10)
        task.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        delattr(target, method)  # back to the class's method


async def test_cancelled_while_recording_the_start_records_that_the_tool_never_ran(warden, effects):
    """tool.started commits in its thread even though the task was cancelled; the tool never runs.

    The guard then records the attempt as failed (cancelled before the tool ran), so the call is
    not left in doubt: running the thread again retries it as a normal new attempt.
    """
    script = [turn(call("lookup_customer", {"customer_id": "c-9"}, "c9")), turn(text="done")]
    cfg = warden.start_run("t-cancel-start", owner="alice@example.com", intent="look up a customer", risk_tier="low")
    await _cancel_while(warden, build(warden, effects, script), cfg, "outcomes", "started")
    assert effects.count("lookup_customer") == 0
    assert kinds(warden, "t-cancel-start")[-2:] == ["tool.started", "tool.failed"]
    failed = warden.ledger.events("t-cancel-start", kinds=[EventKind.TOOL_FAILED])[0].payload
    assert failed["error_type"] == "CancelledError" and failed["attempt"] == 1

    out = await build(warden, effects, script[1:]).ainvoke(None, cfg)  # the interrupted step again
    assert tool_messages(out)["c9"].content.startswith("customer c-9")
    assert effects.count("lookup_customer") == 1
    started = warden.ledger.events("t-cancel-start", kinds=[EventKind.TOOL_STARTED])
    assert [e.payload["attempt"] for e in started] == [1, 2]
    assert EventKind.TOOL_ABORTED not in kinds(warden, "t-cancel-start")  # never in doubt
    assert warden.verify().ok


async def test_cancelled_while_deciding_releases_the_call(warden, effects):
    """A call claimed by a cancelled task is released: running it again does not wait for it."""
    import asyncio

    script = [turn(call("lookup_customer", {"customer_id": "c-9"}, "c9")), turn(text="done")]
    cfg = warden.start_run("t-cancel-prep", owner="alice@example.com", intent="look up a customer", risk_tier="low")
    await _cancel_while(warden, build(warden, effects, script), cfg, "decision", "prepare_call")
    assert warden.guard.in_flight.calls == {}
    assert effects.count("lookup_customer") == 0
    # The decision made for the cancelled task is on record; the run continues normally.
    out = await asyncio.wait_for(build(warden, effects, script[1:]).ainvoke(None, cfg), 30)
    assert tool_messages(out)["c9"].content.startswith("customer c-9")
    assert effects.count("lookup_customer") == 1
    assert warden.verify().ok
