"""A guarded agent for LangGraph Agent Server: ``langgraph dev`` in this folder.

Run it (from this folder, after ``pip install 'langgraph-warden[server]'``)::

    WARDEN_DATABASE_URL=sqlite:///warden.db WARDEN_EPHEMERAL_KEYS=1 langgraph dev --no-browser

The model is scripted (no API key): it looks order O-77 up and refunds it, which the shipped
policy sends to a person for approval (irreversible); a second message on the thread refunds O-78. Answer from the CLI (``warden approvals list/decide --server
http://127.0.0.1:2024``) or with any HTTP client in LangChain's HITL format (see the README).

``refund`` appends one line per refund to ``$WARDEN_EXAMPLE_OUTBOX`` (default ``refunds.log``),
so you can see that a refund runs once, however often the run is resumed;
``$WARDEN_EXAMPLE_REFUND_DELAY`` (seconds) keeps a refund running after its side effect, a window
to kill the server mid-call and watch the resume record it as aborted instead of repeating it.
"""

from __future__ import annotations

import os
import time

from langchain.agents import create_agent
from langchain_core.messages import AIMessage
from langchain_core.tools import tool

from langgraph_warden import ToolSpec, Warden, current_credential
from langgraph_warden.server import graph_factory
from langgraph_warden.testing import ScriptedChatModel, tool_call


@tool
def lookup_order(order_id: str) -> str:
    """Read an order."""
    return f"{order_id}: 2 x charged 40 EUR, customer C-311"


@tool
def issue_refund(order_id: str) -> str:
    """Refund an order. Irreversible."""
    token = current_credential().reveal()  # short-lived, this call only; never in state or logs
    with open(os.environ.get("WARDEN_EXAMPLE_OUTBOX", "refunds.log"), "a", encoding="utf-8") as out:
        out.write(f"refund {order_id}\n")
    time.sleep(float(os.environ.get("WARDEN_EXAMPLE_REFUND_DELAY") or 0))  # a window to kill the server mid-call
    return f"refunded {order_id} (credential of {len(token)} characters used)"


MODEL = ScriptedChatModel(script=[
    AIMessage("", tool_calls=[tool_call("lookup_order", {"order_id": "O-77"}, "call_lookup")]),
    AIMessage("", tool_calls=[tool_call("issue_refund", {"order_id": "O-77"}, "call_refund")]),
    AIMessage("Done: the duplicate charge on O-77 is handled."),
    # a second request on the same thread ("also refund O-78") asks again: a new approval
    AIMessage("", tool_calls=[tool_call("issue_refund", {"order_id": "O-78"}, "call_refund_2")]),
    AIMessage("Done: O-78 is handled too."),
])


@graph_factory
def agent(warden: Warden):
    """The refund agent, built once per server process with the server's Warden."""
    warden.tools.register(ToolSpec("lookup_order", sensitivity="internal", idempotent=True))
    warden.tools.register(ToolSpec("issue_refund", irreversible=True, scopes=("payments:refund",)))
    return create_agent(MODEL, [lookup_order, issue_refund], middleware=[warden.middleware()])
