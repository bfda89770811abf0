"""Real graphs for the approval tests, the approval CLI and the crash subprocess.

``build(warden, effects_path, script)`` compiles a ToolNode agent whose tools
record their side effects in a file (counted outside the process). ``graph`` is
the ``module:attribute`` factory the CLI tests pass to ``warden approvals decide
--graph tests.support.graphs_approval:graph``: it takes the ``Warden`` the CLI
opened and reads the side-effect file from ``WARDEN_TEST_EFFECTS``.

``WARDEN_TEST_CRASH_IN=issue_refund`` makes that tool SIGKILL its own process at
the start of its body — after the guard committed ``approval.granted`` and
``tool.started``, before the side effect.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AnyMessage
from langchain_core.tools import tool
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition

from langgraph_warden.guards.policy import DEFAULT_REGO_POLICY
from langgraph_warden.guards.rego import RegoEngine
from langgraph_warden.guards.tools import ToolSpec

from .agents import ScriptedChatModel, SideEffects, call, turn

CRASH_ENV = "WARDEN_TEST_CRASH_IN"
EFFECTS_ENV = "WARDEN_TEST_EFFECTS"

#: The default policy plus one argument rule, so an edit can be denied by policy.
REFUND_LIMIT_REGO = """package warden

import rego.v1

deny contains "amount_over_limit" if {
	input.tool.name == "issue_refund"
	input.args.amount > 100
}
"""


def policy(tmp_dir: str | os.PathLike[str]) -> RegoEngine:
    extra = Path(tmp_dir) / "refund_limit.rego"
    extra.write_text(REFUND_LIMIT_REGO)
    return RegoEngine([DEFAULT_REGO_POLICY, extra])


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def tools(effects: SideEffects) -> list[Any]:
    def crash_point(name: str) -> None:
        if os.environ.get(CRASH_ENV) == name:
            os.kill(os.getpid(), signal.SIGKILL)

    @tool
    def issue_refund(order_id: str, amount: int) -> str:
        """Refund an order (irreversible)."""
        crash_point("issue_refund")
        effects.record("issue_refund", order_id=order_id, amount=amount)
        return f"refunded {amount} on {order_id}"

    @tool
    def send_email(to: str, body: str) -> str:
        """Send an e-mail outside the company."""
        crash_point("send_email")
        effects.record("send_email", to=to, body=body)
        return f"sent to {to}"

    return [issue_refund, send_email]


def register(warden: Any) -> None:
    warden.tools.register(ToolSpec("issue_refund", irreversible=True))
    warden.tools.register(ToolSpec("send_email", external=True))


def build(warden: Any, effects_path: str | os.PathLike[str], script: list[Any]):
    register(warden)
    model = ScriptedChatModel(script=script)

    def agent(state: State) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    b = StateGraph(State)
    b.add_node("agent", agent)
    b.add_node(
        "tools",
        ToolNode(tools(SideEffects(effects_path)), wrap_tool_call=warden.guard, awrap_tool_call=warden.guard.awrap),
    )
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", tools_condition)
    b.add_edge("tools", "agent")
    return b.compile(checkpointer=warden.checkpointer)


#: One refund, then (after its result) one e-mail, then done.
DEFAULT_SCRIPT = [
    turn(call("issue_refund", {"order_id": "o-1", "amount": 10}, "r1")),
    turn(call("send_email", {"to": "ada@example.com", "body": "refunded"}, "e1")),
    turn(text="done"),
]

#: Two gated calls in one model turn (one ToolNode task).
PARALLEL_SCRIPT = [
    turn(
        call("issue_refund", {"order_id": "o-1", "amount": 10}, "r1"),
        call("send_email", {"to": "ada@example.com", "body": "refunded"}, "e1"),
    ),
    turn(text="done"),
]


def graph(warden: Any):
    """CLI factory (``--graph tests.support.graphs_approval:graph``)."""
    script = PARALLEL_SCRIPT if os.environ.get("WARDEN_TEST_SCRIPT") == "parallel" else DEFAULT_SCRIPT
    return build(warden, os.environ[EFFECTS_ENV], script)
