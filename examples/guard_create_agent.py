"""Guard a ``langchain.agents.create_agent`` agent: ``middleware=[warden.middleware()]``.

What it shows
-------------
The same governance as ``guard_toolnode.py``, for agents built with LangChain's
``create_agent`` (the model is scripted, so no LLM or API key is needed):

* an **allowed** call (``lookup_order``) and a **denied** call (``delete_order``,
  outside the run charter's allowed tools) in the first model turn;
* **two approval-gated calls in one turn** (``issue_refund`` is irreversible,
  ``send_email`` is external): ``create_agent`` runs one task per tool call, so
  the run pauses with *two* interrupts at once, each with its own id;
* both are answered in one resume:
  ``Command(resume={interrupt.id: approve(interrupt.value, "bob"), ...})`` —
  here the refund is approved and the e-mail rejected.

Run it (from the repository root)::

    python examples/guard_create_agent.py                      # SQLite file in a temp dir
    python examples/guard_create_agent.py --db sqlite:///x.db  # or any database URL / path

Exit code 0 when every call ended as described and the signed history verified.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.types import Command
from rich.console import Console

from langgraph_warden import ToolSpec, Warden, approve, reject
from langgraph_warden.testing import ScriptedChatModel

THREAD = "ticket-77"


def _call(name: str, args: dict, call_id: str) -> dict:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


SCRIPT = [
    AIMessage(content="", tool_calls=[
        _call("lookup_order", {"order_id": "O-7"}, "c_lookup"),
        _call("delete_order", {"order_id": "O-7"}, "c_delete"),
    ]),
    AIMessage(content="", tool_calls=[
        _call("issue_refund", {"order_id": "O-7", "amount_cents": 4200}, "c_refund"),
        _call("send_email", {"to": "ada@customer.example", "body": "Refunded 42.00 EUR"}, "c_email"),
    ]),
    AIMessage(content="Refund issued; the e-mail was not approved."),
]


def db_url(db: str | None) -> str:
    if db is None:
        return f"sqlite:///{Path(tempfile.mkdtemp(prefix='warden-example-')) / 'warden.db'}"
    return db if "://" in db else f"sqlite:///{Path(db).expanduser().resolve()}"


@tool
def lookup_order(order_id: str) -> str:
    """Read an order."""
    return f"{order_id}: 42.00 EUR, charged twice"


@tool
def delete_order(order_id: str) -> str:
    """Delete an order."""
    return f"deleted {order_id}"


@tool
def issue_refund(order_id: str, amount_cents: int) -> str:
    """Refund an order."""
    return f"refunded {amount_cents} cents on {order_id}"


@tool
def send_email(to: str, body: str) -> str:
    """Send an e-mail to a customer."""
    return f"e-mail sent to {to}"


def build_agent(warden: Warden):
    return create_agent(
        ScriptedChatModel(script=SCRIPT),
        tools=[lookup_order, delete_order, issue_refund, send_email],
        middleware=[warden.middleware()],          # <- the guard
        checkpointer=warden.checkpointer,          # <- the signed, durable checkpointer
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", help="database URL or SQLite path (default: a new SQLite file in a temp dir)")
    url = db_url(ap.parse_args(argv).db)
    print(f"database: {url}")

    with Warden.open(url, ephemeral_keys=True) as warden:  # ephemeral keys: demo only
        warden.tools.register(ToolSpec("lookup_order", idempotent=True))
        warden.tools.register(ToolSpec("delete_order", irreversible=True))
        warden.tools.register(ToolSpec("issue_refund", irreversible=True))
        warden.tools.register(ToolSpec("send_email", external=True))
        agent = build_agent(warden)
        config = warden.start_run(
            THREAD, owner="alice@example.com", intent="refund O-7 and tell the customer",
            allowed_tools=["lookup_order", "issue_refund", "send_email"],
        )

        print("1. run the agent")
        result = agent.invoke({"messages": [HumanMessage("O-7 was charged twice")]}, config)
        interrupts = result.get("__interrupt__", [])
        print(f"2. paused with {len(interrupts)} interrupts at once:")
        for i in interrupts:
            print(f"  APPROVAL NEEDED {i.value['tool']} {i.value['args']} reasons={i.value['reasons']}"
                  f" (interrupt id {i.id[:12]}...)")

        print("3. resume both in one Command(resume={interrupt.id: decision, ...})")
        decisions = {}
        for i in interrupts:
            if i.value["tool"] == "issue_refund":
                decisions[i.id] = approve(i.value, "bob@example.com")
                print(f"  bob approves {i.value['tool']}")
            else:
                decisions[i.id] = reject(i.value, "bob@example.com", message="do not e-mail the customer yet")
                print(f"  bob rejects  {i.value['tool']}")
        result = agent.invoke(Command(resume=decisions), config)

        print("4. tool results")
        results = {}
        for m in result["messages"]:
            if isinstance(m, ToolMessage):
                results[m.name] = m
                print(f"  {m.name:13} [{m.status}] {m.content}")
        print(f"  assistant: {result['messages'][-1].content}")

        trail = warden.audit(THREAD)
        Console(width=140).print(trail.rich_table())
        report = warden.verify()
        left = warden.pending_approvals(THREAD)
        print(f"5. verify: {'OK' if report.ok else 'FAILED'} ({report.events} events)")

    ok = (
        len(interrupts) == 2
        and results["lookup_order"].status != "error"
        and results["delete_order"].status == "error"
        and "refunded" in str(results["issue_refund"].content)
        and "not e-mail" in str(results["send_email"].content)
        and not left
        and report.ok
    )
    print("RESULT: two approvals paused at once and were resumed together" if ok else "RESULT: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
