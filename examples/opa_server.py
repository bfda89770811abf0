"""Decide tool calls with an OPA server: ``Warden.open(..., policy=OpaServerEngine(url))``.

What it shows
-------------
The policy moves out of the process into an OPA server; the guard asks it
``POST /v1/data/warden/decision`` for every tool call. Here the server is
``examples/_opa_stub.py`` — a small OPA-v1-REST-compatible ``http.server`` on
127.0.0.1 that evaluates the shipped default Rego policy. **It stands in for
``opa run --server``** (no OPA binary is needed to run the example); against a
real OPA only the URL changes::

    opa run --server --addr 127.0.0.1:8181 langgraph_warden/guards/policies/default.rego
    policy = OpaServerEngine("http://127.0.0.1:8181")

1. server up: ``lookup_order`` is allowed, ``issue_refund`` needs approval
   (approved from Python);
2. server stopped: the next run's calls are **denied, fail closed** (reasons
   ``policy_unavailable`` / ``opa_connection_error``) — nothing runs without a
   policy decision.

Run it (from the repository root)::

    python examples/opa_server.py                      # SQLite file in a temp dir
    python examples/opa_server.py --db sqlite:///x.db  # or any database URL / path

Exit code 0 when the calls were decided as described and verification passed.
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

from langgraph_warden import DEFAULT_REGO_POLICY, OpaServerEngine, ToolSpec, Warden, approve
from langgraph_warden.testing import ScriptedChatModel

try:
    from ._opa_stub import OpaStub  # imported as examples.opa_server
except ImportError:
    from _opa_stub import OpaStub  # run as a script

SCRIPT = [
    AIMessage(content="", tool_calls=[
        {"name": "lookup_order", "args": {"order_id": "O-5"}, "id": "c_lookup", "type": "tool_call"},
        {"name": "issue_refund", "args": {"order_id": "O-5", "amount_cents": 700}, "id": "c_refund", "type": "tool_call"},
    ]),
    AIMessage(content="Done."),
]


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


@tool
def lookup_order(order_id: str) -> str:
    """Read an order."""
    return f"{order_id}: 7.00 EUR"


@tool
def issue_refund(order_id: str, amount_cents: int) -> str:
    """Refund an order."""
    return f"refunded {amount_cents} cents on {order_id}"


def build(warden: Warden):
    model = ScriptedChatModel(script=SCRIPT)

    def agent(state: State) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    b = StateGraph(State)
    b.add_node("agent", agent)
    b.add_node("tools", ToolNode([lookup_order, issue_refund], wrap_tool_call=warden.guard, awrap_tool_call=warden.guard.awrap))
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", tools_condition)
    b.add_edge("tools", "agent")
    return b.compile(checkpointer=warden.checkpointer)


def db_url(db: str | None) -> str:
    if db is None:
        return f"sqlite:///{Path(tempfile.mkdtemp(prefix='warden-example-')) / 'warden.db'}"
    return db if "://" in db else f"sqlite:///{Path(db).expanduser().resolve()}"


def tool_messages(result: dict) -> dict[str, ToolMessage]:
    return {m.name: m for m in result["messages"] if isinstance(m, ToolMessage)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", help="database URL or SQLite path (default: a new SQLite file in a temp dir)")
    url = db_url(ap.parse_args(argv).db)
    print(f"database: {url}")

    stub = OpaStub(DEFAULT_REGO_POLICY).start()
    print(f"OPA stand-in (for `opa run --server`) serving the default Rego policy on {stub.url}")
    # 2 s, not the 0.5 s a local OPA would warrant: the first query of a busy machine (CI) must not read
    # as a dead server. A stopped server is refused at once either way (step 2).
    engine = OpaServerEngine(stub.url, deadline_seconds=2.0)
    try:
        with Warden.open(url, ephemeral_keys=True, policy=engine) as warden:
            warden.tools.register(ToolSpec("lookup_order", idempotent=True))
            warden.tools.register(ToolSpec("issue_refund", irreversible=True))
            graph = build(warden)

            print("1. server up")
            cfg = warden.start_run("opa-up", owner="alice@example.com", intent="refund O-5")
            out = graph.invoke({"messages": [HumanMessage("refund O-5")]}, cfg)
            (i,) = out["__interrupt__"]
            print(f"   APPROVAL NEEDED {i.value['tool']} ({', '.join(i.value['reasons'])}) — approving as bob")
            out = graph.invoke(Command(resume=approve(i.value, "bob@example.com")), cfg)
            up = tool_messages(out)
            for m in up.values():
                print(f"   {m.name:13} [{m.status}] {m.content}")
            print(f"   requests answered by the server: {stub.requests}")

            print("2. server stopped")
            stub.stop()
            cfg = warden.start_run("opa-down", owner="alice@example.com", intent="refund O-5")
            out = graph.invoke({"messages": [HumanMessage("refund O-5")]}, cfg)
            down = tool_messages(out)
            for m in down.values():
                print(f"   {m.name:13} [{m.status}] {m.content}")
            denied = [e.payload["reasons"] for e in warden.ledger.events("opa-down", kinds=["tool.denied"])]
            print(f"   recorded deny reasons: {denied}")
            print(f"   circuit breaker: {engine.breaker.state}")

            report = warden.verify()
            print(f"3. verify: {'OK' if report.ok else 'FAILED'} ({report.events} events)")
    finally:
        engine.close()
        stub.__exit__()

    ok = (
        up["lookup_order"].status != "error"
        and "refunded" in str(up["issue_refund"].content)
        and all(m.status == "error" for m in down.values()) and len(down) == 2
        and all("policy_unavailable" in r for r in denied)
        and report.ok
    )
    print("RESULT: OPA decided while up; fail-closed deny while down" if ok else "RESULT: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
