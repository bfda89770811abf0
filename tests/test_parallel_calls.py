"""Parallel tool calls of one step: each decision sees the decisions made before it on the thread.

An agent's step can issue several tool calls at once; ToolNode runs them concurrently (threads,
or tasks under ``ainvoke``). If each were decided on the history as it stood before the step,
a per-run rate limit could be overrun by as many calls as the step holds. The guard decides the
calls of one thread one after another (the engine evaluations, not the tools), and a decision
made here counts in the history of the next one from the moment it is made, before its record
commits.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from langgraph_warden import canonical
from langgraph_warden.charter import RunCharter
from langgraph_warden.events import EventKind
from langgraph_warden.guards.cedar import CedarEngine
from langgraph_warden.guards.policy import DEFAULT_CEDAR_POLICY, DEFAULT_REGO_POLICY
from langgraph_warden.guards.rego import RegoEngine
from langgraph_warden.guards.tools import ToolSpec
from langgraph_warden.warden import Warden

from .support.agents import ScriptedChatModel, call, turn
from .support.guard_probe import RecordingPolicy
from .support.tools import recording_echo

CHARTER = RunCharter(owner="alice@example.com", intent="parallel calls", risk_tier="low")
echo, RAN = recording_echo()


def graph(warden: Warden, tools: list[Any] = (echo,)):  # type: ignore[assignment]
    b = StateGraph(MessagesState)
    b.add_node("tools", ToolNode(list(tools), wrap_tool_call=warden.guard, awrap_tool_call=warden.guard.awrap))
    b.add_edge(START, "tools")
    b.add_edge("tools", END)
    return b.compile()


def step(tool_name: str, *tcids: str) -> dict[str, Any]:
    calls = [{"name": tool_name, "args": {"text": t}, "id": t, "type": "tool_call"} for t in tcids]
    return {"messages": [AIMessage(content="", tool_calls=calls)]}


def engines() -> dict[str, Any]:
    return {
        "rego": lambda: RegoEngine(DEFAULT_REGO_POLICY, data={"warden_config": {"limits": {"per_tool": 3}}}),
        "cedar": lambda: CedarEngine(DEFAULT_CEDAR_POLICY, limits={"per_tool": 3}),
    }


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("engine", sorted(engines()))
def test_a_rate_limit_holds_when_one_step_issues_several_calls(db_url, engine, mode):
    """Per-tool limit 3, one call made: of four parallel calls two run and two are rate limited."""
    policy = RecordingPolicy(engines()[engine]())
    with Warden.open(db_url, ephemeral_keys=True, policy=policy) as warden:
        warden.tools.register(ToolSpec("echo", sensitivity="public"))
        g = graph(warden)
        thread = f"t-{uuid.uuid4().hex[:8]}"
        warden.start_run(thread, CHARTER)
        cfg = {"configurable": {"thread_id": thread}}
        g.invoke(step("echo", "first"), cfg)
        RAN.clear()
        batch = step("echo", "p1", "p2", "p3", "p4")
        out = g.invoke(batch, cfg) if mode == "sync" else asyncio.run(g.ainvoke(batch, cfg))

        replies = [m for m in out["messages"] if isinstance(m, ToolMessage)]
        refused = sorted(m.tool_call_id for m in replies if m.status == "error")
        assert len(RAN) == 2 and len(refused) == 2, (RAN, [m.content for m in replies])
        assert sorted(RAN + refused) == ["p1", "p2", "p3", "p4"]
        assert all("rate_limited" in m.content for m in replies if m.status == "error")
        for tcid in refused:
            (decided,) = warden.ledger.events(thread, kinds=[EventKind.POLICY_DECIDED], subject=tcid)
            assert decided.payload["decision"]["reasons"] == ["rate_limited"]

        # Once the calls are over, the history is what was recorded: outcomes included.
        g.invoke(step("echo", "after"), cfg)
        last = policy.inputs[-1]["history"]
        recent = {(h["decision"], h["outcome"]) for h in last["recent"][1:]}
        assert len(last["recent"]) == 5
        assert recent == {("allow", "completed"), ("deny", "denied")}
        echo_counts = last["tools"]["echo"]
        assert (echo_counts["allowed"], echo_counts["denied"], echo_counts["completed"]) == (3, 2, 3)
        assert warden.verify(thread_id=thread).ok


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_limit_holds_through_create_agent_where_each_call_is_a_task_of_its_own(db_url, mode):
    script = [
        turn(call("echo", {"text": "first"}, "first")),
        turn(*(call("echo", {"text": t}, t) for t in ("p1", "p2", "p3", "p4"))),
        turn(text="done"),
    ]
    with Warden.open(db_url, ephemeral_keys=True, policy=engines()["rego"]()) as warden:
        warden.tools.register(ToolSpec("echo", sensitivity="public"))
        agent = create_agent(ScriptedChatModel(script=script), [echo], middleware=[warden.middleware()],
                             checkpointer=warden.checkpointer)
        thread = f"t-{uuid.uuid4().hex[:8]}"
        warden.start_run(thread, CHARTER)
        RAN.clear()
        inputs, cfg = {"messages": [HumanMessage("go")]}, {"configurable": {"thread_id": thread}}
        out = agent.invoke(inputs, cfg) if mode == "sync" else asyncio.run(agent.ainvoke(inputs, cfg))

        replies = [m for m in out["messages"] if isinstance(m, ToolMessage) and m.tool_call_id != "first"]
        refused = [m for m in replies if m.status == "error"]
        assert sorted(RAN) == ["first", *sorted(m.tool_call_id for m in replies if m.status != "error")]
        assert len(RAN) == 3 and len(refused) == 2 and all("rate_limited" in m.content for m in refused)
        assert warden.verify(thread_id=thread).ok


def test_a_sibling_decided_after_a_call_sees_that_call_before_its_record_commits(db_url, monkeypatch):
    """Forced order: b reaches the guard while a is being decided. b waits for a's decision and
    decides on a history that holds a (not yet recorded); each is decided once."""
    with Warden.open(db_url, ephemeral_keys=True) as warden:
        guard = warden.guard
        policy = guard.policy = RecordingPolicy(guard.policy)
        thread = f"t-{uuid.uuid4().hex[:8]}"
        warden.start_run(thread, CHARTER)
        b_arrived = threading.Event()
        prepare = guard._prepare

        def prepare_noting_b(request, trust=False):
            if request.tool_call["id"] == "b":
                b_arrived.set()
            return prepare(request, trust)

        class AWaitsForB(RecordingPolicy):
            def decide(self, policy_input):
                if policy_input["args"]["text"] == "a":
                    assert b_arrived.wait(10)
                    threading.Event().wait(0.05)  # b is at the guard's door meanwhile
                return super().decide(policy_input)

        @tool
        def signal(text: str) -> str:
            """Return the text."""
            return text

        policy = guard.policy = AWaitsForB(policy.inner)
        monkeypatch.setattr(guard, "_prepare", prepare_noting_b)
        warden.tools.register(ToolSpec("signal", sensitivity="public"))
        out = graph(warden, [signal]).invoke(step("signal", "a", "b"), {"configurable": {"thread_id": thread}})

        assert [m.content for m in out["messages"][1:]] == ["a", "b"]
        a_input, b_input = policy.inputs
        assert a_input["args"]["text"] == "a" and b_input["args"]["text"] == "b"
        assert a_input["history"]["recent"] == [] and a_input["history"]["run"]["allowed"] == 0
        assert [(h["tool"], h["decision"]) for h in b_input["history"]["recent"]] == [("signal", "allow")]
        assert b_input["history"]["tools"]["signal"]["allowed"] == 1
        for tcid, inp in (("a", a_input), ("b", b_input)):
            (decided,) = warden.ledger.events(thread, kinds=[EventKind.POLICY_DECIDED], subject=tcid)
            assert decided.payload["decision"]["input_digest"] == canonical.digest(inp)
        assert warden.verify(thread_id=thread).ok
