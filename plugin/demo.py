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

The agent itself (script, tools, world) is :mod:`langgraph_warden.demo_agent`; this module
stages the show and runs its crash step in a worker process.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

from langchain_core.messages import HumanMessage, ToolMessage
from langgraph.types import Command
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from .demo_agent import CRASH_ENV, PaymentsAPI, World, build_graph, new_thread_id
from .event_payloads import CredentialIssued
from .events import EventKind
from .guards import approval as approvals
from .testing import (
    ScriptedChatModel,  # re-exported: `from langgraph_warden.demo import ScriptedChatModel` keeps working
)
from .warden import Warden

__all__ = ["run_demo", "build_graph", "ScriptedChatModel"]

OWNER = "alice@ops.example"
REVIEWER = "bob@finance.example"


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
        warden, graph, payments = self.open()  # first: a database that cannot be opened is one error line
        self.console.rule("[bold]langgraph-warden demo[/] — governed operations assistant")
        self.say(f"database: {self.db}  ·  keys: ephemeral (demo only; production reads them through keyring)")
        self.say(f"run: thread {self.thread} (a new thread each run; earlier runs in the database are kept)")
        seen: set[str] = set()
        with warden:
            self.start_run(warden)
            self.agent_steps(warden, graph, payments, seen)
        # 2. crash in the middle of a step, then resume in this (different) process
        self.say("\n[bold]2. Crash[/]: the next step runs in a worker process that is killed with SIGKILL mid-step")
        code = self.crash_step()
        self.say(f"    worker exited with {code} ({'SIGKILL' if code == -signal.SIGKILL else 'unexpected'})")
        self.say("[bold]3. Resume[/] in a new process from the durable checkpoint and history")
        warden, graph, payments = self.open()
        with warden:
            final = self.resume(warden, graph, seen)
            ran_without_authorisation, effects = self.show_audit(warden)
            return self.verify(warden, final, ran_without_authorisation, effects)

    def start_run(self, warden: Warden) -> None:
        """Start the run with its charter, and show the charter."""
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
        self.console.print(
            Panel.fit(
                f"owner [bold]{charter.owner}[/]\nintent {charter.intent}\nrisk tier [bold]{charter.risk_tier}[/] — "
                f"approvals for: {', '.join(sorted(charter.effective_profile.require_approval_for))}\n"
                f"allowed tools: {', '.join(charter.allowed_tools or ())}",
                title="run charter (signed as run.started)",
            )
        )

    def agent_steps(self, warden: Warden, graph: Any, payments: PaymentsAPI, seen: set[str]) -> None:
        """1. The steps up to the crash, then the credentials they were issued and the replayed-token check."""
        self.say("\n[bold]1. Agent steps[/] (each tool call: policy → approval → credential → record)")
        self.run_until_crash_step(warden, graph, {"messages": [HumanMessage("Customer C-311 says order O-77 was charged twice.")]}, seen)
        issued = warden.ledger.events(self.thread, kinds=[EventKind.CREDENTIAL_ISSUED])
        revoked = warden.ledger.events(self.thread, kinds=[EventKind.CREDENTIAL_REVOKED])
        for e in issued:
            p = cast(CredentialIssued, e.payload)
            self.say(
                f"    [magenta]🔑 credential[/] {p['lease_id'][:8]} for {p['audience']} scope {' '.join(p['scopes'])}, "
                f"expires {p['expires_at']}, token digest {p.get('token_digest')}"
            )
        if revoked:
            self.say(f"    [magenta]🔒 revoked[/] at step end ({len(revoked)} lease(s)); the same token replayed at the payments API: {payments.try_replayed_token()}")

    def resume(self, warden: Warden, graph: Any, seen: set[str]) -> Any:
        """3. Resume after the crash, answering approvals, to the assistant's last message."""
        state = graph.invoke(None, self.config)
        while state.get("__interrupt__"):
            resume = {i.id: self.decide(i.value) for i in state["__interrupt__"]}
            state = graph.invoke(Command(resume=resume), self.config)
        self.show_tool_results(warden, state, seen)
        final = state["messages"][-1]
        self.say(f"    assistant: {final.content}")
        return final

    def show_audit(self, warden: Warden) -> tuple[int, dict[str, int]]:
        """4. The audit trail and the side effects counted outside the processes.

        Returns how many calls ran without authorisation, and how often each effect happened."""
        c = self.console
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
        return len(s.ran_without_authorisation), effects

    def verify(self, warden: Warden, final: Any, ran_without_authorisation: int, effects: dict[str, int]) -> int:
        """5. Verify every signature; the exit code says whether the story held."""
        c = self.console
        report = warden.verify(signatures="all")
        twice = [k for k, n in effects.items() if n > 1]
        truthful = ("refund" in effects) == final.content.startswith("Done")  # the answer matches the world
        ok = (report.ok and not ran_without_authorisation and not twice and "export_all_customers" not in effects
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
