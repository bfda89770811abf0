"""The demo's agent: a scripted assistant, the tools it calls and the world they change.

Why its own module: ``warden demo`` (:mod:`langgraph_warden.demo`) stages the story, and its
crash step runs this same graph in a worker process; both build it from here. The script is
fixed, the last answer is built from what the tools returned, and every side effect is
appended to a file so it can be counted across processes.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, ToolMessage
from langchain_core.tools import BaseTool, tool
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition

from .events import EventKind
from .guards.credentials import CredentialRejected, LocalTokenProvider, current_credential
from .guards.tools import ToolRegistry, ToolSpec
from .testing import ScriptedChatModel
from .warden import Warden

__all__ = ["THREAD", "CRASH_ENV", "SCRIPT", "SCRIPT_NOT_REFUNDED", "World", "PaymentsAPI", "build_graph", "new_thread_id",
           "final_answer"]

THREAD = "ops-1042"  # the prefix of each run's thread id (see new_thread_id)
CRASH_ENV = "WARDEN_DEMO_CRASH_AFTER"


def _call(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


SCRIPT = [
    AIMessage(
        content="Let me look at the customer first.",
        tool_calls=[
            _call("lookup_customer", {"customer_id": "C-311"}, "call_lookup"),
            _call("export_all_customers", {"format": "csv"}, "call_export"),
            _call("drop_orders_table", {}, "call_drop"),
        ],
    ),
    AIMessage(
        content="The charge on order O-77 was duplicated. Refunding it and telling finance.",
        tool_calls=[
            _call("issue_refund", {"order_id": "O-77", "amount_cents": 4200}, "call_refund"),
            _call("notify_finance", {"note": "Refund O-77 (duplicate charge, 42.00 EUR)"}, "call_finance"),
        ],
    ),
    AIMessage(
        content="Letting the customer know.",
        tool_calls=[
            _call(
                "send_email",
                {"to": "ada@customer.example", "subject": "Your refund", "body": "We refunded 42.00 EUR for order O-77."},
                "call_email",
            )
        ],
    ),
    AIMessage(
        content="Recording the outcome.",
        tool_calls=[
            _call("post_status_update", {"ticket": "OPS-1042", "status": "refunded"}, "call_status"),
            _call("update_crm_record", {"customer_id": "C-311", "field": "last_refund", "value": "O-77"}, "call_crm"),
        ],
    ),
    # The last answer is not scripted: final_answer() builds it from the tool results.
]

#: The same turns after a refund that did not happen: the e-mail and the ticket tell the truth.
SCRIPT_NOT_REFUNDED = [
    *SCRIPT[:2],
    AIMessage(
        content="The refund was not made. Letting the customer know.",
        tool_calls=[
            _call(
                "send_email",
                {"to": "ada@customer.example", "subject": "Your refund request",
                 "body": "We could not refund order O-77 yet; we will contact you again."},
                "call_email",
            )
        ],
    ),
    AIMessage(
        content="Recording the outcome.",
        tool_calls=[
            _call("post_status_update", {"ticket": "OPS-1042", "status": "refund not approved"}, "call_status"),
            _call("update_crm_record", {"customer_id": "C-311", "field": "last_refund", "value": "O-77 not approved"},
                  "call_crm"),
        ],
    ),
]


def new_thread_id() -> str:
    """A fresh thread per run: a rerun on the same database never continues (or deletes) an earlier one."""
    return f"{THREAD}-{secrets.token_hex(3)}"


def _result(messages: Sequence[Any], call_id: str) -> ToolMessage | None:
    return next((m for m in messages if isinstance(m, ToolMessage) and m.tool_call_id == call_id), None)


def _done(result: ToolMessage | None) -> bool:
    return result is not None and result.status != "error"


def _why(result: ToolMessage | None) -> str:
    """Who refused a call, from its refusal ("Rejected by bob@…: not approved in the demo. …")."""
    if result is None:
        return "it never ran"
    who = str(result.content).split(":")[0].split(". ")[0]
    return who[:1].lower() + who[1:]


def final_answer(messages: Sequence[Any]) -> AIMessage:
    """The assistant's last message, from what the tools returned: it claims nothing that did not happen."""
    refund, email = _result(messages, "call_refund"), _result(messages, "call_email")
    if _done(refund):
        text = "Done: the duplicate charge on O-77 was refunded"
        text += " and the customer informed." if _done(email) else f"; the customer was not e-mailed ({_why(email)})."
    else:
        text = f"Not refunded: the refund of O-77 was refused ({_why(refund)})"
        text += "; the customer was told." if _done(email) else f"; the customer was not e-mailed ({_why(email)})."
    return AIMessage(content=text)


class World:
    """The outside world the tools change, as an append-only file (counted across processes)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, effect: str, **data: Any) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"effect": effect, "pid": os.getpid(), **data}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def effects(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


class PaymentsAPI:
    """A payments service that accepts only a valid, unrevoked, in-scope refund token."""

    def __init__(self, warden: Warden) -> None:
        self.warden = warden
        self.last_token: str | None = None  # kept only to show that a replayed token is refused

    def refund(self, token: str, order_id: str, amount_cents: int) -> str:
        broker = self.warden.broker
        assert broker is not None, "the demo's warden has a credential broker"
        provider = broker.providers["local"]
        assert isinstance(provider, LocalTokenProvider)
        claims = provider.verify(token, audience="issue_refund", scope="payments:refund")
        self.last_token = token
        return f"refund {order_id}/{amount_cents} accepted for {claims['sub']}"

    def try_replayed_token(self) -> str:
        if self.last_token is None:
            return "no token captured"
        try:
            self.refund(self.last_token, "O-77", 4200)
        except CredentialRejected as exc:
            return f"refused ({exc.reason})"
        return "ACCEPTED (this must not happen)"



def build_graph(warden: Warden, world: World, payments: PaymentsAPI, thread: str = THREAD):
    """The assistant: a model node and a guarded ToolNode, checkpointed by the warden (``thread``: the
    run the simulated crash watches)."""
    tools = _tools(warden, world, payments, thread)
    _declare_tools(warden.tools)
    model = ScriptedChatModel(script=SCRIPT)
    model_not_refunded = ScriptedChatModel(script=SCRIPT_NOT_REFUNDED)

    class State(TypedDict):
        messages: Annotated[list[AnyMessage], add_messages]

    def assistant(state: State) -> dict:
        messages = state["messages"]
        if sum(isinstance(m, AIMessage) for m in messages) >= len(SCRIPT):
            return {"messages": [final_answer(messages)]}
        refused = _result(messages, "call_refund") is not None and not _done(_result(messages, "call_refund"))
        return {"messages": [(model_not_refunded if refused else model).invoke(messages)]}

    builder = StateGraph(State)
    builder.add_node("assistant", assistant)
    builder.add_node("tools", ToolNode(tools, wrap_tool_call=warden.guard, awrap_tool_call=warden.guard.awrap))
    builder.add_edge(START, "assistant")
    builder.add_conditional_edges("assistant", tools_condition)
    builder.add_edge("tools", "assistant")
    return builder.compile(checkpointer=warden.checkpointer)


def _declare_tools(reg: ToolRegistry) -> None:
    """What the guard knows of each tool (declared once per registry)."""
    if "lookup_customer" not in reg:
        reg.register(ToolSpec("lookup_customer", sensitivity="confidential", data_classes=frozenset({"customer_pii"}), idempotent=True, target_arg="customer_id"))
        reg.register(ToolSpec("export_all_customers", sensitivity="restricted", data_classes=frozenset({"customer_pii"}), external=True))
        reg.register(ToolSpec("issue_refund", irreversible=True, scopes=("payments:refund",), target_arg="order_id"))
        reg.register(ToolSpec("notify_finance", idempotent=True))
        reg.register(ToolSpec("send_email", external=True, data_classes=frozenset({"customer_pii"}), target_arg="to"))
        reg.register(ToolSpec("post_status_update"))
        reg.register(ToolSpec("update_crm_record", data_classes=frozenset({"customer_pii"}), idempotent=True))
        # drop_orders_table is deliberately not declared: unknown tools are denied.


def _crash_after_status_update(warden: Warden, thread: str) -> None:
    """Simulated worker crash: wait until the status update is durably completed, then die."""
    deadline = time.time() + 10
    while time.time() < deadline:
        done = warden.ledger.events(thread, kinds=[EventKind.TOOL_COMPLETED], subject="call_status")
        if done:
            break
        time.sleep(0.02)
    os.kill(os.getpid(), signal.SIGKILL)


def _tools(warden: Warden, world: World, payments: PaymentsAPI, thread: str) -> list[BaseTool]:
    """The assistant's tools; each records its side effect in ``world`` (the CRM update can crash the worker)."""

    @tool
    def lookup_customer(customer_id: str) -> str:
        """Read a customer's record."""
        return f"{customer_id}: Ada Lovelace, ada@customer.example, order O-77 charged twice (42.00 EUR)"

    @tool
    def export_all_customers(format: str) -> str:
        """Export every customer record."""
        world.record("export_all_customers")
        return "exported"

    @tool
    def drop_orders_table() -> str:
        """Drop the orders table."""
        world.record("drop_orders_table")
        return "dropped"

    @tool
    def issue_refund(order_id: str, amount_cents: int) -> str:
        """Refund an order through the payments API."""
        token = current_credential().reveal()
        receipt = payments.refund(token, order_id, amount_cents)
        world.record("refund", order_id=order_id, amount_cents=amount_cents)
        return receipt

    @tool
    def notify_finance(note: str) -> str:
        """Post a note to the finance channel."""
        world.record("finance_note", note=note)
        return "finance notified"

    @tool
    def send_email(to: str, subject: str, body: str) -> str:
        """Send an e-mail to a customer."""
        world.record("email", to=to)
        return f"e-mail sent to {to}"

    @tool
    def post_status_update(ticket: str, status: str) -> str:
        """Post a status update on the ticket (visible to the customer)."""
        world.record("status_update", ticket=ticket, status=status)
        return f"{ticket} marked {status}"

    @tool
    def update_crm_record(customer_id: str, field: str, value: str) -> str:
        """Set a field on the CRM record (idempotent)."""
        if os.environ.get(CRASH_ENV) == "crm":
            _crash_after_status_update(warden, thread)
        world.record("crm_update", customer_id=customer_id, field=field, value=value)
        return f"{customer_id}.{field} = {value}"

    return [lookup_customer, export_all_customers, drop_orders_table, issue_refund, notify_finance, send_email, post_status_update, update_crm_record]
