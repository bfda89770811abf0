"""``warden demo``: a governed operations assistant, end to end, with no LLM, key or server.

The story (ticket OPS-1042, a customer was charged twice):

1. the run starts with a charter — owner, intent, medium risk, allowed tools;
2. the assistant reads the customer record (allowed), tries to export the whole
   customer list (denied: outside the declared intent) and an undeclared tool
   (denied: unknown tool);
3. it issues a refund (irreversible → a person approves) while notifying finance
   in the same step; on resume the finance note is *replayed* from the record,
   the refund runs with a just-in-time credential the payments API verifies —
   and the same token is refused right after the step;
4. it e-mails the customer (external → approval);
5. the worker process is killed with SIGKILL in the middle of the next step; a
   new process resumes: the status update that completed is replayed, not sent
   twice, and the idempotent CRM update that was cut off is retried;
6. the audit trail and the offline verification of the signed history.

Every run is a new thread (``ops-1042-<random>``), so running it again on the same
database (``--db``) starts afresh and keeps the earlier runs, which still verify.
The assistant's last answer is built from what the tools returned: after a rejected
refund it says so, and the e-mail and the ticket say so too.

The chat model is scripted (langchain-core's fake chat model); everything else —
LangGraph, the SQLite/PostgreSQL checkpointer, the ledger, embedded Rego,
credentials, interrupts — is the real thing.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from .events import EventKind
from .guards import approval as approvals
from .guards.credentials import CredentialRejected, LocalTokenProvider, current_credential
from .guards.tools import ToolSpec
from .testing import (
    ScriptedChatModel,  # re-exported: `from langgraph_warden.demo import ScriptedChatModel` keeps working
)
from .warden import Warden

__all__ = ["run_demo", "build_graph", "ScriptedChatModel"]

THREAD = "ops-1042"  # the prefix of each run's thread id (see new_thread_id)
OWNER = "alice@ops.example"
REVIEWER = "bob@finance.example"
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
            # Simulated worker crash: wait until the status update is durably completed, then die.
            deadline = time.time() + 10
            while time.time() < deadline:
                done = warden.ledger.events(thread, kinds=[EventKind.TOOL_COMPLETED], subject="call_status")
                if done:
                    break
                time.sleep(0.02)
            os.kill(os.getpid(), signal.SIGKILL)
        world.record("crm_update", customer_id=customer_id, field=field, value=value)
        return f"{customer_id}.{field} = {value}"

    reg = warden.tools
    if "lookup_customer" not in reg:
        reg.register(ToolSpec("lookup_customer", sensitivity="confidential", data_classes=frozenset({"customer_pii"}), idempotent=True, target_arg="customer_id"))
        reg.register(ToolSpec("export_all_customers", sensitivity="restricted", data_classes=frozenset({"customer_pii"}), external=True))
        reg.register(ToolSpec("issue_refund", irreversible=True, scopes=("payments:refund",), target_arg="order_id"))
        reg.register(ToolSpec("notify_finance", idempotent=True))
        reg.register(ToolSpec("send_email", external=True, data_classes=frozenset({"customer_pii"}), target_arg="to"))
        reg.register(ToolSpec("post_status_update"))
        reg.register(ToolSpec("update_crm_record", data_classes=frozenset({"customer_pii"}), idempotent=True))
        # drop_orders_table is deliberately not declared: unknown tools are denied.

    tools = [lookup_customer, export_all_customers, drop_orders_table, issue_refund, notify_finance, send_email, post_status_update, update_crm_record]
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


# --------------------------------------------------------------------------- the show


class _Demo:
    def __init__(self, db: str, workdir: Path, console: Console, decide: str, thread: str) -> None:
        self.db = db
        self.thread = thread
        self.workdir = workdir
        self.console = console
        self.decide_mode = decide  # "prompt" | "approve" | "reject"
        self.world = World(workdir / "world.jsonl")
        self.config = {"configurable": {"thread_id": thread}}

    def open(self) -> tuple[Warden, Any, PaymentsAPI]:
        warden = Warden.open(self.db, ephemeral_keys=True)
        payments = PaymentsAPI(warden)
        return warden, build_graph(warden, self.world, payments, self.thread), payments

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def show_tool_results(self, warden: Warden, result: dict[str, Any], seen: set[str]) -> None:
        for m in result.get("messages", []):
            if not isinstance(m, ToolMessage) or m.tool_call_id in seen:
                continue
            seen.add(m.tool_call_id)
            kinds = {e.kind for e in warden.ledger.events(self.thread, subject=m.tool_call_id)}
            if m.status == "error":
                mark = "[red]✘ refused[/]"
            elif EventKind.TOOL_ABORTED in kinds:
                mark = "[yellow]⚠ in doubt → retried (idempotent)[/]"
            elif EventKind.TOOL_REPLAYED in kinds:
                mark = "[cyan]↺ ran once, replayed on resume[/]"
            else:
                mark = "[green]✔ ran[/]"
            self.say(f"    {mark}  [bold]{m.name}[/]: {m.content}")

    def decide(self, request: dict[str, Any]) -> dict[str, Any]:
        args = json.dumps(request["args"])
        self.say(
            f"\n  [yellow]⏸  approval needed[/] for [bold]{request['tool']}[/] {args}\n"
            f"     why: {', '.join(request['reasons'])} · owner {request['owner']} · risk {request['risk_tier']}\n"
            f"     request {request['request_id']} · action digest {request['action_digest'][:23]}…"
        )
        if self.decide_mode == "prompt":
            answer = self.console.input(f"     approve as {REVIEWER}? {escape('[y/N]')} ").strip().lower()
            approve = answer in ("y", "yes")
        else:
            approve = self.decide_mode == "approve"
        if approve:
            self.say(f"     [green]→ approved by {REVIEWER}[/]")
            return approvals.approve(request, REVIEWER)
        self.say(f"     [red]→ rejected by {REVIEWER}[/]")
        return approvals.reject(request, REVIEWER, message="not approved in the demo")

    def run_until_crash_step(self, warden: Warden, graph: Any, first_input: Any, seen: set[str]) -> None:
        """Step the run (breaking before each tool step), answering approvals, until the step the worker will run."""
        inp = first_input
        while True:
            result = graph.invoke(inp, self.config, interrupt_before=["tools"])
            self.show_tool_results(warden, result, seen)
            if result.get("__interrupt__"):
                inp = Command(resume={i.id: self.decide(i.value) for i in result["__interrupt__"]})
                continue
            snapshot = graph.get_state(self.config)
            if not snapshot.next:
                return
            pending = snapshot.values["messages"][-1]
            if any(tc["id"] == "call_status" for tc in getattr(pending, "tool_calls", [])):
                return
            inp = None

    def crash_step(self) -> int:
        """Run the next step in a worker process that is killed mid-step."""
        env = {**os.environ, CRASH_ENV: "crm"}
        proc = subprocess.run(
            [sys.executable, "-m", "langgraph_warden.demo", "--worker", "--db", self.db, "--workdir", str(self.workdir),
             "--thread", self.thread],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return proc.returncode

    def run(self) -> int:
        """The show; Ctrl-C (or end of input) at an approval prompt leaves the run paused and says so."""
        try:
            return self._run()
        except (KeyboardInterrupt, EOFError):
            self.say(f"\n[yellow]interrupted[/]: run {self.thread} stays paused where it was; a pending approval "
                     "is not an approval, so nothing it waits for was done. `warden demo` starts a new run.")
            self.console.print(f"    look at it: warden audit show --db {shlex.quote(self.db)} {self.thread}",
                               soft_wrap=True, highlight=False)
            return 130

    def _run(self) -> int:
        c = self.console
        warden, graph, payments = self.open()  # first: a database that cannot be opened is one error line
        c.rule("[bold]langgraph-warden demo[/] — governed operations assistant")
        self.say(f"database: {self.db}  ·  keys: ephemeral (demo only; production reads them through keyring)")
        self.say(f"run: thread {self.thread} (a new thread each run; earlier runs in the database are kept)")
        with warden:
            warden.start_run(
                self.thread,
                owner=OWNER,
                intent="Resolve ticket OPS-1042: refund a duplicate charge and inform the customer",
                risk_tier="medium",
                purpose={"ticket": "OPS-1042"},
                allowed_tools=["lookup_customer", "issue_refund", "notify_finance", "send_email", "post_status_update", "update_crm_record"],
            )
            charter = warden.charter(self.thread)
            assert charter is not None
            c.print(
                Panel.fit(
                    f"owner [bold]{charter.owner}[/]\nintent {charter.intent}\nrisk tier [bold]{charter.risk_tier}[/] — "
                    f"approvals for: {', '.join(sorted(charter.effective_profile.require_approval_for))}\n"
                    f"allowed tools: {', '.join(charter.allowed_tools or ())}",
                    title="run charter (signed as run.started)",
                )
            )
            seen: set[str] = set()
            self.say("\n[bold]1. Agent steps[/] (each tool call: policy → approval → credential → record)")
            self.run_until_crash_step(warden, graph, {"messages": [HumanMessage("Customer C-311 says order O-77 was charged twice.")]}, seen)
            issued = warden.ledger.events(self.thread, kinds=[EventKind.CREDENTIAL_ISSUED])
            revoked = warden.ledger.events(self.thread, kinds=[EventKind.CREDENTIAL_REVOKED])
            for e in issued:
                p = e.payload
                self.say(
                    f"    [magenta]🔑 credential[/] {p['lease_id'][:8]} for {p['audience']} scope {' '.join(p['scopes'])}, "
                    f"expires {p['expires_at']}, token digest {p.get('token_digest')}"
                )
            if revoked:
                self.say(f"    [magenta]🔒 revoked[/] at step end ({len(revoked)} lease(s)); the same token replayed at the payments API: {payments.try_replayed_token()}")
        # 2. crash in the middle of a step, then resume in this (different) process
        self.say("\n[bold]2. Crash[/]: the next step runs in a worker process that is killed with SIGKILL mid-step")
        code = self.crash_step()
        self.say(f"    worker exited with {code} ({'SIGKILL' if code == -signal.SIGKILL else 'unexpected'})")
        self.say("[bold]3. Resume[/] in a new process from the durable checkpoint and history")
        warden, graph, payments = self.open()
        with warden:
            state = graph.invoke(None, self.config)
            while state.get("__interrupt__"):
                resume = {i.id: self.decide(i.value) for i in state["__interrupt__"]}
                state = graph.invoke(Command(resume=resume), self.config)
            self.show_tool_results(warden, state, seen)
            final = state["messages"][-1]
            self.say(f"    assistant: {final.content}")

            # 4. audit
            self.say("\n[bold]4. Audit trail[/] (reconstructed from the signed history)")
            trail = warden.audit(self.thread)
            c.print(trail.rich_table())
            s = trail.summary
            self.say(
                f"authorised {len(s.authorised)} · ran {len(s.ran)} · replayed {len(s.replayed)} · denied {len(s.denied)} · "
                f"rejected {len(s.rejected)} · aborted {len(s.aborted)} · ran without authorisation "
                f"[bold]{len(s.ran_without_authorisation)}[/] · credentials {s.credentials_issued} issued / {s.credentials_revoked} revoked"
            )
            effects: dict[str, int] = {}
            for effect in self.world.effects():
                effects[effect["effect"]] = effects.get(effect["effect"], 0) + 1
            self.say("side effects that happened (counted outside the processes):")
            table = Table()
            table.add_column("effect")
            table.add_column("times")
            for name, n in sorted(effects.items()):
                table.add_row(name, str(n))
            c.print(table)
            report = warden.verify(signatures="all")
            twice = [k for k, n in effects.items() if n > 1]
            truthful = ("refund" in effects) == final.content.startswith("Done")  # the answer matches the world
            ok = (report.ok and not s.ran_without_authorisation and not twice and "export_all_customers" not in effects
                  and truthful)
            self.say(
                f"\n[bold]5. Verify[/]: {report.events} events in {len(report.threads)} thread(s), every signature checked — "
                + ("[green]OK[/]" if report.ok else f"[red]FAILED[/] {[str(f) for f in report.findings]}")
            )
            self.say("    check it yourself:")
            db = shlex.quote(self.db)
            for command in (f"warden audit verify --db {db}", f"warden audit show --db {db} {self.thread}"):
                c.print(f"      {command}", soft_wrap=True, highlight=False)  # one line each: copy and paste
            c.rule("[green]demo complete[/]" if ok else "[red]demo found a problem[/]")
            return 0 if ok else 1


def run_demo(db: str | None = None, *, decide: str = "prompt", console: Console | None = None) -> int:
    """Run the demo on a new thread; ``decide`` is "prompt", "approve" or "reject". Returns the exit code.

    ``db``: a database URL or a SQLite file path (default: a new file in a temporary directory).
    Earlier runs in the database are left as they are.
    """
    if decide not in ("prompt", "approve", "reject"):
        raise ValueError(f"decide={decide!r} is not one of 'prompt', 'approve', 'reject'")
    workdir = Path(tempfile.mkdtemp(prefix="warden-demo-"))
    if db is None:
        url = f"sqlite:///{workdir / 'warden-demo.db'}"
    else:
        url = db if "://" in db else f"sqlite:///{Path(db).expanduser().resolve()}"
    return _Demo(url, workdir, console or Console(), decide, new_thread_id()).run()


def _worker(db: str, workdir: Path, thread: str) -> int:
    """The crash step, in its own process (killed by SIGKILL inside update_crm_record)."""
    world = World(workdir / "world.jsonl")
    with Warden.open(db, ephemeral_keys=True) as warden:
        graph = build_graph(warden, world, PaymentsAPI(warden), thread)
        graph.invoke(None, {"configurable": {"thread_id": thread}})
    return 0


if __name__ == "__main__":  # the worker entry point used by the crash step
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--db", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--thread", required=True)
    ns = parser.parse_args()
    sys.exit(_worker(ns.db, Path(ns.workdir), ns.thread))
