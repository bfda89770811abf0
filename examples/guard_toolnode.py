"""Guard an existing LangGraph graph: ``ToolNode(tools, wrap_tool_call=warden.guard)``.

What it shows
-------------
An ordinary model -> ToolNode -> model loop (the model is scripted, so no LLM or
API key is needed). The only warden-specific lines are ``Warden.open(...)``, the
``ToolSpec`` declarations, ``wrap_tool_call=warden.guard`` on the ToolNode,
``checkpointer=warden.checkpointer`` and ``warden.start_run(...)``. With the
shipped default Rego policy the run then has:

* an **allowed** call   (``lookup_order``: declared, in the charter, harmless);
* a **denied** call     (``delete_order``: not in the charter's allowed tools);
* an **approval-gated** call (``issue_refund``: irreversible) — the run pauses
  with an interrupt and is resumed from Python with
  ``Command(resume=approve(interrupt.value, "bob@example.com"))``.

Finally the audit trail is printed and the signed history verified.

Run it (from the repository root)::

    python examples/guard_toolnode.py                      # SQLite file in a temp dir
    python examples/guard_toolnode.py --db sqlite:///x.db  # or any database URL / path

Exit code 0 when the three outcomes happened as described and verification passed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Annotated, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command
from rich.console import Console

from langgraph_warden import ToolSpec, Warden, approve
from langgraph_warden.testing import ScriptedChatModel

THREAD = "ticket-42"

SCRIPT = [
    AIMessage(content="", tool_calls=[
        {"name": "lookup_order", "args": {"order_id": "O-1"}, "id": "c_lookup", "type": "tool_call"},
        {"name": "delete_order", "args": {"order_id": "O-1"}, "id": "c_delete", "type": "tool_call"},
    ]),
    AIMessage(content="", tool_calls=[
        {"name": "issue_refund", "args": {"order_id": "O-1", "amount_cents": 1999}, "id": "c_refund", "type": "tool_call"},
    ]),
    AIMessage(content="Refunded 19.99 EUR on O-1."),
]


def db_url(db: str | None) -> str:
    if db is None:
        return f"sqlite:///{Path(tempfile.mkdtemp(prefix='warden-example-')) / 'warden.db'}"
    return db if "://" in db else f"sqlite:///{Path(db).expanduser().resolve()}"


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


@tool
def lookup_order(order_id: str) -> str:
    """Read an order."""
    return f"{order_id}: 19.99 EUR, charged twice"


@tool
def delete_order(order_id: str) -> str:
    """Delete an order."""
    return f"deleted {order_id}"


@tool
def issue_refund(order_id: str, amount_cents: int) -> str:
    """Refund an order."""
    return f"refunded {amount_cents} cents on {order_id}"


def build_graph(warden: Warden):
    """Your existing graph; the guard is one keyword argument on the ToolNode."""
    model = ScriptedChatModel(script=SCRIPT)

    def agent(state: State) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    builder = StateGraph(State)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([lookup_order, delete_order, issue_refund],
                                       wrap_tool_call=warden.guard, awrap_tool_call=warden.guard.awrap))
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition)
    builder.add_edge("tools", "agent")
    return builder.compile(checkpointer=warden.checkpointer)


def show(messages: list[AnyMessage], seen: set[str]) -> dict[str, ToolMessage]:
    out = {}
    for m in messages:
        if isinstance(m, ToolMessage) and m.tool_call_id not in seen:
            seen.add(m.tool_call_id)
            out[m.name] = m
            label = "DENIED " if m.status == "error" else "ALLOWED"
            print(f"  {label} {m.name}: {m.content}")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", help="database URL or SQLite path (default: a new SQLite file in a temp dir)")
    url = db_url(ap.parse_args(argv).db)
    print(f"database: {url}")

    with Warden.open(url, ephemeral_keys=True) as warden:  # ephemeral keys: demo only
        warden.tools.register(ToolSpec("lookup_order", target_arg="order_id", idempotent=True))
        warden.tools.register(ToolSpec("delete_order", irreversible=True))
        warden.tools.register(ToolSpec("issue_refund", irreversible=True))
        graph = build_graph(warden)

        config = warden.start_run(THREAD, owner="alice@example.com", intent="refund a duplicate charge on O-1",
                                  allowed_tools=["lookup_order", "issue_refund"])
        seen: set[str] = set()
        print("1. run the agent")
        result = graph.invoke({"messages": [HumanMessage("O-1 was charged twice")]}, config)
        outcomes = show(result["messages"], seen)

        interrupts = result.get("__interrupt__", [])
        print(f"2. paused: {len(interrupts)} approval request(s)")
        for i in interrupts:
            print(f"  APPROVAL NEEDED {i.value['tool']} {i.value['args']} reasons={i.value['reasons']}")
        print(f"   warden.pending_approvals(): {[r.tool for r in warden.pending_approvals(THREAD)]}")

        print("3. resume from Python: Command(resume=approve(interrupt.value, 'bob@example.com'))")
        (pending,) = interrupts
        result = graph.invoke(Command(resume=approve(pending.value, "bob@example.com")), config)
        outcomes.update(show(result["messages"], seen))
        print(f"  assistant: {result['messages'][-1].content}")

        trail = warden.audit(THREAD)
        print("4. audit trail (warden.audit(thread); in a notebook it renders as HTML)")
        Console(width=140).print(trail.rich_table())
        report = warden.verify()
        print(f"5. verify: {'OK' if report.ok else 'FAILED'} ({report.events} events)")

    ok = (
        outcomes["lookup_order"].status != "error"
        and outcomes["delete_order"].status == "error"
        and "refunded" in str(outcomes["issue_refund"].content)
        and report.ok
    )
    print("RESULT: allowed, denied and approval-gated calls behaved as expected" if ok else "RESULT: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
