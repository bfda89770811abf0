"""Decide tool calls with Cedar: ``Warden.open(..., policy=CedarEngine(DEFAULT_CEDAR_POLICY))``.

What it shows
-------------
The package ships its default governance policy twice — as Rego (the default
engine) and as Cedar (``langgraph_warden/guards/policies/default.cedar``); the
test suite checks that both decide alike. This example plugs in the Cedar one
(``cedarpy``, embedded, no server) and runs a guarded agent on a **high-risk**
run:

* ``lookup_customer`` — reads customer PII: on a high-risk run sensitive data
  needs approval, and the high tier requires a *signed* approval from someone
  other than the run's owner — bob signs it with his Ed25519 key, whose public
  half is registered with ``Warden.open(..., approver_keys={...})``;
* ``export_customers`` — not in the run's allowed tools: **denied** (outside_intent);
* ``drop_table`` — never declared with a ``ToolSpec`` (and not allowed): **denied** (unknown_tool);
* ``ping`` — harmless, declared, allowed: **allowed**.

Every decision is recorded with ``engine: cedar`` and the policy revision.

Run it (from the repository root)::

    python examples/cedar_policy.py                      # SQLite file in a temp dir
    python examples/cedar_policy.py --db sqlite:///x.db  # or any database URL / path

Exit code 0 when the calls were decided as described and verification passed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Annotated, TypedDict

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command
from rich.console import Console

from langgraph_warden.demo import ScriptedChatModel
from langgraph_warden.guards.approval import approve
from langgraph_warden.guards.cedar import CedarEngine
from langgraph_warden.guards.policy import DEFAULT_CEDAR_POLICY
from langgraph_warden.guards.tools import ToolSpec
from langgraph_warden.keys import SigningKey
from langgraph_warden.warden import Warden

THREAD = "audit-request-3"


def _call(name: str, args: dict, call_id: str) -> dict:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


SCRIPT = [
    AIMessage(content="", tool_calls=[
        _call("ping", {}, "c_ping"),
        _call("export_customers", {}, "c_export"),
        _call("drop_table", {"table": "customers"}, "c_drop"),
    ]),
    AIMessage(content="", tool_calls=[_call("lookup_customer", {"customer_id": "C-1"}, "c_lookup")]),
    AIMessage(content="Customer C-1 reviewed."),
]


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


@tool
def ping() -> str:
    """Check the service is up."""
    return "pong"


@tool
def lookup_customer(customer_id: str) -> str:
    """Read a customer record."""
    return f"{customer_id}: Ada Lovelace, ada@customer.example"


@tool
def export_customers() -> str:
    """Export all customers."""
    return "exported"


@tool
def drop_table(table: str) -> str:
    """Drop a table."""
    return f"dropped {table}"


def build(warden: Warden):
    model = ScriptedChatModel(script=SCRIPT)

    def agent(state: State) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    b = StateGraph(State)
    b.add_node("agent", agent)
    b.add_node("tools", ToolNode([ping, lookup_customer, export_customers, drop_table],
                                 wrap_tool_call=warden.guard, awrap_tool_call=warden.guard.awrap))
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", tools_condition)
    b.add_edge("tools", "agent")
    return b.compile(checkpointer=warden.checkpointer)


def db_url(db: str | None) -> str:
    if db is None:
        return f"sqlite:///{Path(tempfile.mkdtemp(prefix='warden-example-')) / 'warden.db'}"
    return db if "://" in db else f"sqlite:///{Path(db).expanduser().resolve()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", help="database URL or SQLite path (default: a new SQLite file in a temp dir)")
    url = db_url(ap.parse_args(argv).db)
    print(f"database: {url}")

    policy = CedarEngine(DEFAULT_CEDAR_POLICY)
    print(f"policy: {policy.name}, {Path(DEFAULT_CEDAR_POLICY).name}, revision {policy.revision[:23]}...")
    bob_key = SigningKey.from_private(Ed25519PrivateKey.generate(), "file")  # bob's own approver key
    approvers = {"bob@example.com": bob_key.public_key}
    with Warden.open(url, ephemeral_keys=True, policy=policy, approver_keys=approvers) as warden:
        warden.tools.register(ToolSpec("ping", idempotent=True))
        warden.tools.register(ToolSpec("lookup_customer", sensitivity="confidential",
                                       data_classes=frozenset({"customer_pii"}), target_arg="customer_id"))
        warden.tools.register(ToolSpec("export_customers", external=True, data_classes=frozenset({"customer_pii"})))
        graph = build(warden)
        cfg = warden.start_run(THREAD, owner="alice@example.com", intent="review customer C-1 for an audit",
                               risk_tier="high", allowed_tools=["ping", "lookup_customer"])

        out = graph.invoke({"messages": [HumanMessage("review C-1")]}, cfg)
        while out.get("__interrupt__"):
            resume = {}
            for i in out["__interrupt__"]:
                print(f"APPROVAL NEEDED {i.value['tool']} ({', '.join(i.value['reasons'])}) — bob approves, signed")
                resume[i.id] = approve(i.value, "bob@example.com", key=bob_key)
            out = graph.invoke(Command(resume=resume), cfg)
        results = {m.name: m for m in out["messages"] if isinstance(m, ToolMessage)}
        for m in results.values():
            print(f"  {m.name:17} [{m.status}] {m.content}")

        trail = warden.audit(THREAD)
        Console(width=140).print(trail.rich_table())
        engines = {a.decision["engine"] for a in trail.actions if a.decision}
        report = warden.verify()
        print(f"decided by: {sorted(engines)} · verify: {'OK' if report.ok else 'FAILED'} ({report.events} events)")

    ok = (
        results["ping"].status != "error"
        and "unknown_tool" in str(results["drop_table"].content)
        and "outside_intent" in str(results["export_customers"].content)
        and "Ada" in str(results["lookup_customer"].content)
        and engines == {"cedar"} and report.ok
    )
    print("RESULT: Cedar allowed, denied and gated the calls as expected" if ok else "RESULT: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
