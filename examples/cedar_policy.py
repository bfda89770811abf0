"""Decide tool calls with Cedar: ``Warden.open(..., policy=CedarEngine(...))``.

What it shows
-------------
**1. The shipped default policy in Cedar.** The package ships its default
governance policy twice — as Rego (the default engine) and as Cedar
(``langgraph_warden/guards/policies/default.cedar``); the test suite checks that
both decide alike. ``CedarEngine(DEFAULT_CEDAR_POLICY)`` plugs in the Cedar one
(``cedarpy``, embedded, no server) for a guarded agent on a **high-risk** run:

* ``lookup_customer`` — reads customer PII: on a high-risk run sensitive data
  needs approval, and the high tier requires a *signed* approval from someone
  other than the run's owner — bob signs it with his Ed25519 key, whose public
  half is registered with ``Warden.open(..., approver_keys={...})``;
* ``export_customers`` — not in the run's allowed tools: **denied** (outside_intent);
* ``drop_table`` — never declared with a ``ToolSpec`` (and not allowed): **denied** (unknown_tool);
* ``ping`` — harmless, declared, allowed: **allowed**.

Every decision is recorded with ``engine: cedar`` and the policy revision.

**2. A custom policy** (``PAYMENTS_POLICY`` below, loaded with
``CedarEngine.from_source``) that replaces the default one with a payments
team's own rules. The engine asks Cedar two questions per call —
``Action::"call"`` (allowed at all?) and ``Action::"call_without_approval"``
(allowed without a human?) — and the ``@id`` of each matching ``forbid`` becomes
the deny or approval reason. On a *low*-risk run (where the default policy asks
no human for an irreversible call):

* ``issue_refund`` on ``EU-1001`` — **approval** ``four_eyes`` (every irreversible call);
* ``issue_refund`` on ``US-2002`` — **denied** ``non_eu_order`` (the ``ToolSpec``'s
  ``target_arg="order_id"`` puts the order id in ``context.target``);
* ``lookup_customer`` — **allowed** for a run owned by ``…@support.example``, and
  **denied** ``pii_outside_support`` for a run owned by someone in sales.

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

from langgraph_warden import DEFAULT_CEDAR_POLICY, CedarEngine, ToolSpec, Warden, approve
from langgraph_warden.keys import SigningKey
from langgraph_warden.testing import ScriptedChatModel

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


@tool
def issue_refund(order_id: str, amount_cents: int) -> str:
    """Refund an order."""
    return f"refunded {amount_cents} cents on {order_id}"


#: A payments team's own policy: it replaces the default one entirely (see ``default.cedar`` for the
#: full mapping of the run, the tool and the context onto Cedar's principal, resource and context).
PAYMENTS_POLICY = """
@id("baseline")
permit (principal, action in [Action::"call", Action::"call_without_approval"], resource);

@id("unknown_tool")
forbid (principal, action, resource) when { !resource.known };

// Customer data only for runs owned by the support team.
@id("pii_outside_support")
forbid (principal, action, resource)
when {
  resource.data_classes.contains("customer_pii") &&
  !(principal has owner && principal.owner like "*@support.example")
};

// Refunds only on EU orders: context.target is the value of the ToolSpec's target_arg.
@id("non_eu_order")
forbid (principal, action, resource)
when { resource.name == "issue_refund" && !(context has target && context.target like "EU-*") };

// A second person for every irreversible call, whatever the run's risk tier.
@id("four_eyes")
forbid (principal, action == Action::"call_without_approval", resource)
when { resource.irreversible };
"""

SUPPORT_SCRIPT = [
    AIMessage(content="", tool_calls=[
        _call("issue_refund", {"order_id": "EU-1001", "amount_cents": 2500}, "c_refund_eu"),
        _call("issue_refund", {"order_id": "US-2002", "amount_cents": 2500}, "c_refund_us"),
        _call("lookup_customer", {"customer_id": "C-1"}, "c_lookup"),
    ]),
    AIMessage(content="EU-1001 refunded; US-2002 is not ours to refund."),
]
SALES_SCRIPT = [
    AIMessage(content="", tool_calls=[_call("lookup_customer", {"customer_id": "C-1"}, "c_lookup")]),
    AIMessage(content="I may not read customer records."),
]


def run(graph, cfg: dict, inputs: dict, key: SigningKey | None = None) -> dict[str, ToolMessage]:
    """Invoke until done; bob answers every approval request (signed when ``key`` is given)."""
    out = graph.invoke(inputs, cfg)
    while out.get("__interrupt__"):
        resume = {}
        for i in out["__interrupt__"]:
            print(f"   APPROVAL NEEDED {i.value['tool']} {i.value['args']} ({', '.join(i.value['reasons'])})"
                  f" — bob approves{', signed' if key else ''}")
            resume[i.id] = approve(i.value, "bob@example.com", key=key)
        out = graph.invoke(Command(resume=resume), cfg)
    results = {m.tool_call_id: m for m in out["messages"] if isinstance(m, ToolMessage)}
    for m in results.values():
        print(f"     {m.name:17} [{m.status}] {m.content}")
    return results


def build(warden: Warden, tools: list, script: list[AIMessage]):
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


def db_url(db: str | None) -> str:
    if db is None:
        return f"sqlite:///{Path(tempfile.mkdtemp(prefix='warden-example-')) / 'warden.db'}"
    return db if "://" in db else f"sqlite:///{Path(db).expanduser().resolve()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", help="database URL or SQLite path (default: a new SQLite file in a temp dir)")
    url = db_url(ap.parse_args(argv).db)
    print(f"database: {url}")

    print("1. the shipped default policy, in Cedar (high-risk run)")
    policy = CedarEngine(DEFAULT_CEDAR_POLICY)
    print(f"   policy: {policy.name}, {Path(DEFAULT_CEDAR_POLICY).name}, revision {policy.revision[:23]}...")
    bob_key = SigningKey.from_private(Ed25519PrivateKey.generate(), "file")  # bob's own approver key
    approvers = {"bob@example.com": bob_key.public_key}
    with Warden.open(url, ephemeral_keys=True, policy=policy, approver_keys=approvers) as warden:
        warden.tools.register(ToolSpec("ping", idempotent=True))
        warden.tools.register(ToolSpec("lookup_customer", sensitivity="confidential",
                                       data_classes=frozenset({"customer_pii"}), target_arg="customer_id"))
        warden.tools.register(ToolSpec("export_customers", external=True, data_classes=frozenset({"customer_pii"})))
        graph = build(warden, [ping, lookup_customer, export_customers, drop_table], SCRIPT)
        cfg = warden.start_run(THREAD, owner="alice@example.com", intent="review customer C-1 for an audit",
                               risk_tier="high", allowed_tools=["ping", "lookup_customer"])

        results = run(graph, cfg, {"messages": [HumanMessage("review C-1")]}, key=bob_key)

        trail = warden.audit(THREAD)
        Console(width=140).print(trail.rich_table())
        engines = {a.decision["engine"] for a in trail.actions if a.decision}
        report = warden.verify()
        print(f"   decided by: {sorted(engines)} · verify: {'OK' if report.ok else 'FAILED'} ({report.events} events)")

    custom = CedarEngine.from_source(PAYMENTS_POLICY, filename="payments.cedar")
    print(f"2. a custom policy: {custom!r}")
    with Warden.open(url, ephemeral_keys=True, policy=custom) as warden:
        warden.tools.register(ToolSpec("issue_refund", irreversible=True, target_arg="order_id"))
        warden.tools.register(ToolSpec("lookup_customer", sensitivity="confidential",
                                       data_classes=frozenset({"customer_pii"}), target_arg="customer_id"))
        tools = [issue_refund, lookup_customer]
        support = build(warden, tools, SUPPORT_SCRIPT)
        cfg = warden.start_run("refunds-7", owner="alice@support.example", intent="refund EU-1001", risk_tier="low")
        print("   run refunds-7, owner alice@support.example, low risk")
        support_results = run(support, cfg, {"messages": [HumanMessage("refund EU-1001 and US-2002")]})
        sales = build(warden, tools, SALES_SCRIPT)
        cfg = warden.start_run("leads-3", owner="mallory@sales.example", intent="find leads", risk_tier="low")
        print("   run leads-3, owner mallory@sales.example, low risk")
        sales_results = run(sales, cfg, {"messages": [HumanMessage("who is C-1?")]})
        gated = [a.reasons for a in warden.audit("refunds-7").actions if a.approver]
        custom_report = warden.verify()
        print(f"   approval reasons: {gated} · verify: {'OK' if custom_report.ok else 'FAILED'}")

    ok = (
        results["c_ping"].status != "error"
        and "unknown_tool" in str(results["c_drop"].content)
        and "outside_intent" in str(results["c_export"].content)
        and "Ada" in str(results["c_lookup"].content)
        and engines == {"cedar"} and report.ok
        and "refunded" in str(support_results["c_refund_eu"].content) and gated == [["four_eyes"]]
        and "non_eu_order" in str(support_results["c_refund_us"].content)
        and "Ada" in str(support_results["c_lookup"].content)
        and "pii_outside_support" in str(sales_results["c_lookup"].content)
        and custom_report.ok
    )
    print("RESULT: Cedar allowed, denied and gated the calls as expected" if ok else "RESULT: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
