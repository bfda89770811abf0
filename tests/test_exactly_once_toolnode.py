"""Scenario A: one AI message, three tool calls, a real ToolNode — each side effect runs exactly once.

LangGraph re-runs a whole ToolNode task on resume. Two cases, sync and async:

* one call of three needs an approval (irreversible): the first run completes the other two and
  pauses; after approve + resume the task runs again, the two are *replayed* from the record and
  the approved one runs — every side effect once, counted in a file;
* one call raises once (``handle_tool_errors=False``, so the task fails): after re-invoking, the
  other two are replayed and the failing one is a new attempt.

The audit trail is asserted field by field.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AnyMessage, HumanMessage, ToolMessage
from langchain_core.tools import InjectedToolCallId, tool
from langgraph.graph import START, StateGraph
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


SCRIPT = [
    turn(
        call("lookup_customer", {"customer_id": "c-1"}, "c1"),
        call("create_ticket", {"title": "refund o-9"}, "t1"),
        call("issue_refund", {"order_id": "o-9", "amount": 10}, "r1"),
    ),
    turn(text="done"),
]


def build(warden: Warden, effects: SideEffects, *, fail_once: set[str] = frozenset()):
    failures = set(fail_once)

    @tool
    def lookup_customer(customer_id: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Read a customer record."""
        effects.record("lookup_customer", call=tool_call_id)
        return f"customer {customer_id}: Ada"

    @tool
    def create_ticket(title: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Open a ticket (not idempotent)."""
        effects.record("create_ticket", call=tool_call_id)
        return f"ticket: {title}"

    @tool
    def issue_refund(order_id: str, amount: int, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Refund an order (irreversible)."""
        lease = current_credential()
        if "issue_refund" in failures:
            failures.discard("issue_refund")
            time.sleep(0.2)  # let the sibling calls finish first: the outcome is then deterministic
            raise RuntimeError("payment gateway timeout")
        effects.record("issue_refund", call=tool_call_id, lease=lease.lease_id)
        return f"refunded {amount} on {order_id}"

    warden.tools.register(ToolSpec("lookup_customer", sensitivity="confidential", data_classes=frozenset({"pii"}), idempotent=True))
    warden.tools.register(ToolSpec("create_ticket"))
    warden.tools.register(ToolSpec("issue_refund", irreversible=True, scopes=("payments:refund",)))
    model = ScriptedChatModel(script=SCRIPT)

    def agent(state: State) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    b = StateGraph(State)
    b.add_node("agent", agent)
    b.add_node(
        "tools",
        ToolNode(
            [lookup_customer, create_ticket, issue_refund],
            wrap_tool_call=warden.guard,
            awrap_tool_call=warden.guard.awrap,
            handle_tool_errors=False,
        ),
    )
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


def per_call(effects: SideEffects) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in effects.entries():
        out[e["call"]] = out.get(e["call"], 0) + 1
    return out


def tool_messages(values: dict[str, Any]) -> dict[str, ToolMessage]:
    return {m.tool_call_id: m for m in values["messages"] if isinstance(m, ToolMessage)}


async def _drain() -> None:
    """Wait for sibling tool calls LangGraph left running when ainvoke returned on an interrupt."""
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    if others:
        await asyncio.wait(others)


# ------------------------------------------------------------------------------ approval
def _assert_approval_trail(warden: Warden, thread: str, effects: SideEffects, request_id: str) -> None:
    assert per_call(effects) == {"c1": 1, "t1": 1, "r1": 1}  # counted outside the process
    refund = next(e for e in effects.entries() if e["call"] == "r1")
    trail = warden.audit(thread)
    assert trail.verified and trail.owner == "alice@example.com" and trail.charter.risk_tier == "medium"
    c1, t1, r1 = trail.action("c1"), trail.action("t1"), trail.action("r1")
    for a in (c1, t1):
        assert a.status == "authorised+completed"
        assert (a.attempts, a.replays, a.aborted_attempts) == (1, 1, 0)
        assert a.authorised and a.ran and not a.ran_without_authorisation
        assert a.approver is None and a.approval_request_id is None and a.leases == []
        assert a.decision["allow"] and not a.decision["require_approval"] and a.verified
    assert r1.status == "authorised+completed"
    assert (r1.attempts, r1.replays, r1.aborted_attempts) == (1, 0, 0)
    assert r1.approver == "bob@example.com" and r1.approval_request_id == request_id
    assert r1.decision["require_approval"] and r1.reasons == ["irreversible"]
    assert r1.leases == [refund["lease"]] and r1.authorised and r1.ran and not r1.ran_without_authorisation
    s = trail.summary
    assert sorted(s.authorised) == sorted(s.ran) == ["c1", "r1", "t1"]
    assert sorted(s.replayed) == ["c1", "t1"]
    assert s.denied == s.rejected == s.aborted == s.failed == s.pending == []
    assert s.ran_without_authorisation == [] and s.side_effects_executed_twice == []
    assert (s.credentials_issued, s.credentials_revoked, s.credentials_outstanding) == (1, 1, [])
    assert s.verified is True
    # The record behind it: one started + completed per call, replays for the two siblings.
    ev = warden.ledger.events(thread)
    started = sorted(e.payload["tool_call_id"] for e in ev if e.kind == EventKind.TOOL_STARTED)
    assert started == ["c1", "r1", "t1"]
    assert sorted(e.payload["tool_call_id"] for e in ev if e.kind == EventKind.TOOL_REPLAYED) == ["c1", "t1"]


def test_three_calls_one_needs_approval_sync(warden, effects):
    g = build(warden, effects)
    cfg = warden.start_run("a-sync", owner="alice@example.com", intent="refund o-9", risk_tier="medium")
    first = g.invoke({"messages": [HumanMessage("refund o-9")]}, cfg)
    (intr,) = first["__interrupt__"]
    assert intr.value["tool_call_id"] == "r1" and "irreversible" in intr.value["reasons"]
    assert per_call(effects) == {"c1": 1, "t1": 1}  # the siblings ran; the refund waits
    assert warden.audit("a-sync").action("r1").status == "approval-pending"
    assert warden.audit("a-sync").summary.pending == ["r1"]
    out = g.invoke(Command(resume=approvals.approve(intr.value, "bob@example.com")), cfg)
    assert "__interrupt__" not in out and out["messages"][-1].content == "done"
    assert tool_messages(out)["r1"].content == "refunded 10 on o-9"
    _assert_approval_trail(warden, "a-sync", effects, intr.value["request_id"])


async def test_three_calls_one_needs_approval_async(warden, effects):
    g = build(warden, effects)
    cfg = warden.start_run("a-async", owner="alice@example.com", intent="refund o-9", risk_tier="medium")
    first = await g.ainvoke({"messages": [HumanMessage("refund o-9")]}, cfg)
    (intr,) = first["__interrupt__"]
    await _drain()
    out = await g.ainvoke(Command(resume=approvals.approve(intr.value, "bob@example.com")), cfg)
    assert "__interrupt__" not in out and out["messages"][-1].content == "done"
    _assert_approval_trail(warden, "a-async", effects, intr.value["request_id"])


# ------------------------------------------------------------------------------ one call raises once
def _assert_failure_trail(warden: Warden, thread: str, effects: SideEffects) -> None:
    assert per_call(effects) == {"c1": 1, "t1": 1, "r1": 1}
    refund = next(e for e in effects.entries() if e["call"] == "r1")
    trail = warden.audit(thread)
    assert trail.verified and trail.charter.risk_tier == "low"
    for cid in ("c1", "t1"):
        a = trail.action(cid)
        assert (a.status, a.attempts, a.replays, a.aborted_attempts) == ("authorised+completed", 1, 1, 0)
        assert a.approver is None and a.leases == [] and not a.ran_without_authorisation
    r1 = trail.action("r1")
    assert (r1.status, r1.attempts, r1.replays, r1.aborted_attempts) == ("authorised+completed", 2, 0, 0)
    assert r1.approver is None and r1.approval_request_id is None  # low risk: irreversible runs without approval
    assert len(r1.leases) == 2 and r1.leases[-1] == refund["lease"]  # one credential per attempt
    assert r1.authorised and r1.ran and not r1.ran_without_authorisation
    ev = warden.ledger.events(thread)
    failed = [e.payload for e in ev if e.kind == EventKind.TOOL_FAILED]
    assert [(f["tool_call_id"], f["attempt"], f["error_type"]) for f in failed] == [("r1", 1, "RuntimeError")]
    assert [e.payload["attempt"] for e in ev if e.kind == EventKind.TOOL_STARTED and e.payload["tool_call_id"] == "r1"] == [1, 2]
    s = trail.summary
    assert sorted(s.authorised) == sorted(s.ran) == ["c1", "r1", "t1"]
    assert sorted(s.replayed) == ["c1", "t1"]
    assert s.denied == s.rejected == s.aborted == s.failed == s.pending == []
    assert s.ran_without_authorisation == [] and s.side_effects_executed_twice == []
    assert (s.credentials_issued, s.credentials_revoked, s.credentials_outstanding) == (2, 2, [])
    assert s.verified is True


def test_three_calls_one_raises_once_sync(warden, effects):
    g = build(warden, effects, fail_once={"issue_refund"})
    cfg = warden.start_run("f-sync", owner="alice@example.com", intent="refund o-9", risk_tier="low")
    with pytest.raises(RuntimeError, match="payment gateway timeout"):
        g.invoke({"messages": [HumanMessage("refund o-9")]}, cfg)
    assert per_call(effects) == {"c1": 1, "t1": 1}
    assert warden.audit("f-sync").action("r1").status == "failed"
    assert warden.audit("f-sync").summary.failed == ["r1"]
    out = g.invoke(None, cfg)  # re-invoke: the task runs again
    assert out["messages"][-1].content == "done"
    assert tool_messages(out)["r1"].content == "refunded 10 on o-9"
    _assert_failure_trail(warden, "f-sync", effects)


async def test_three_calls_one_raises_once_async(warden, effects):
    g = build(warden, effects, fail_once={"issue_refund"})
    cfg = warden.start_run("f-async", owner="alice@example.com", intent="refund o-9", risk_tier="low")
    with pytest.raises(RuntimeError, match="payment gateway timeout"):
        await g.ainvoke({"messages": [HumanMessage("refund o-9")]}, cfg)
    await _drain()
    out = await g.ainvoke(None, cfg)
    assert out["messages"][-1].content == "done"
    _assert_failure_trail(warden, "f-async", effects)


# ------------------------------------------------------------------------------ known bug
class _SlowFirstDecision:
    """Policy proxy: the first decision for ``tool`` takes a while (a slow policy server, say)."""

    def __init__(self, inner: Any, tool: str, delay: float) -> None:
        self._inner, self._tool, self._delay = inner, tool, delay
        self._slow = threading.Event()

    def decide(self, policy_input: Any) -> Any:
        if policy_input["tool"]["name"] == self._tool and not self._slow.is_set():
            self._slow.set()
            time.sleep(self._delay)
        return self._inner.decide(policy_input)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_async_resume_while_sibling_is_still_being_prepared_runs_it_once(db_url, effects):
    with Warden.open(db_url, ephemeral_keys=True) as warden:
        g = build(warden, effects)
        warden.guard.policy = _SlowFirstDecision(warden.guard.policy, "create_ticket", 0.5)
        cfg = warden.start_run("race", owner="alice@example.com", intent="refund o-9", risk_tier="medium")
        first = await g.ainvoke({"messages": [HumanMessage("refund o-9")]}, cfg)
        (intr,) = first["__interrupt__"]
        # Resume at once (an approver who is quick, or an API that answers immediately).
        await g.ainvoke(Command(resume=approvals.approve(intr.value, "bob@example.com")), cfg)
        await _drain()
        assert per_call(effects).get("t1") == 1
