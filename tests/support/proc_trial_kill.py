"""SIGKILL trials: a governed multi-tool agent killed at a seeded point, then resumed by another process.

    python -m tests.support.proc_trial_kill batch SPEC.json     # run many trials, print one JSON report
    python -m tests.support.proc_trial_kill crash URL THREAD DIR SEED
    python -m tests.support.proc_trial_kill resume URL THREAD DIR SEED

``batch`` imports LangGraph and the warden once, then runs every phase of every
trial in a *forked child process* (so a trial costs milliseconds of start-up,
not seconds): the ``crash`` child arms a kill plan chosen by the seed and dies
by SIGKILL; optionally a first ``resume`` child is killed too (crash during
recovery); a last ``resume`` child — a process that never saw the killed one's
memory — finishes the run (``graph.invoke(None, config)`` until done, approving
what is pending). The parent never opens the database itself.

Side effects go to ``DIR/THREAD.effects.jsonl`` (fsynced, so a SIGKILL cannot
hide one); the idempotent tool also logs every invocation to
``DIR/THREAD.calls.jsonl`` and performs its effect as an upsert (at most one
line per key, however often it runs).

Kill points (``kind``):

* ``before_effect`` — inside a tool, after ``tool.started`` was committed, before the side effect;
* ``after_effect`` — inside a tool, after the side effect, before returning (no ``tool.completed``);
* ``after_completed`` — right after the guard committed ``tool.completed`` (before the checkpoint);
* ``after_approval`` — right after ``approval.granted`` was committed;
* ``node`` — inside the (non-tool) agent node, at a given model turn;
* ``timer`` — anywhere: a timer thread SIGKILLs the process after a seeded delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.tools import InjectedToolCallId, tool
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command

from langgraph_warden.events import EventKind
from langgraph_warden.guards.approval import approve
from langgraph_warden.guards.policy import DEFAULT_REGO_POLICY
from langgraph_warden.guards.rego import RegoEngine
from langgraph_warden.guards.tools import ToolSpec
from langgraph_warden.warden import Warden

from .agents import ScriptedChatModel, SideEffects, call, turn

OWNER = "alice@example.com"
APPROVER = "bob@example.com"
INTENT = "close ticket 17: refund, CRM update, notify"

#: tool -> (idempotent, what the charter's medium tier makes of it)
TOOLS = ("upsert_contact", "create_ticket", "charge_card", "notify_team")
IDEMPOTENT = {"upsert_contact"}

SCRIPT = [
    turn(
        call("upsert_contact", {"contact_id": "k-1", "email": "ada@example.com"}, "u1"),
        call("create_ticket", {"title": "refund o-17"}, "t1"),
        call("charge_card", {"order_id": "o-17", "amount": 42}, "p1"),
    ),
    turn(
        call("notify_team", {"text": "o-17 refunded"}, "n1"),
        call("upsert_contact", {"contact_id": "k-2", "email": "bob@example.com"}, "u2"),
    ),
    turn(text="done"),
]
#: tool call id -> tool
CALLS = {c["id"]: c["name"] for t in SCRIPT for c in t.tool_calls}

#: The shipped default policy's text, read once by the batch parent (see ``_policy_source``).
_POLICY_SOURCE: str | None = None

KINDS = ("before_effect", "after_effect", "after_completed", "after_approval", "node", "timer", "completion_queued")
#: Upper bound of the timer delay (seconds after the process opened the database): a run takes ~0.25-0.4 s.
TIMER_MAX = 0.35


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


# ----------------------------------------------------------------------------- kill plans
def plan_for(seed: int) -> dict[str, Any]:
    """The seeded kill plan of a trial (kind cycles with the seed so every kind is covered)."""
    rng = random.Random(seed)
    kind = KINDS[seed % len(KINDS)]
    plan: dict[str, Any] = {"seed": seed, "kind": kind, "async": bool(rng.getrandbits(1))}
    if kind in ("before_effect", "after_effect", "after_completed", "completion_queued"):
        # Alternate idempotent and non-idempotent targets every round of kinds, so every batch of
        # seeds puts an in-doubt call of each sort in front of the guard.
        # A kill after the side effect of a non-idempotent call hits the approved, irreversible p1.
        idem = (seed // len(KINDS)) % 2 == 0
        if not idem and kind == "after_effect":
            plan["call"] = "p1"
        else:
            plan["call"] = rng.choice(sorted(c for c, t in CALLS.items() if (t in IDEMPOTENT) == idem))
    elif kind == "after_approval":
        plan["call"] = "p1"
    elif kind == "node":
        plan["turn"] = rng.randrange(len(SCRIPT))  # model turn (AI messages so far) at which the node dies
    else:
        plan["delay"] = round(rng.uniform(0.005, TIMER_MAX), 3)
    # Some trials also kill the first resuming process, at a random moment (a crash during recovery).
    if rng.random() < 0.4:
        plan["resume_delay"] = round(rng.uniform(0.005, 0.25), 3)
    return plan


class _Killer:
    def __init__(self, plan: dict[str, Any] | None, marker: Path) -> None:
        self.plan = plan or {}
        self.marker = marker
        self._lock = threading.Lock()
        self._disarmed = False

    def die(self, where: str) -> None:
        with self._lock:  # held until the kill: a timer firing as the run ends cannot race the exit
            if self._disarmed:
                return
            with open(self.marker, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"pid": os.getpid(), "where": where}) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(10)  # never reached: SIGKILL cannot be caught

    def disarm(self) -> None:
        with self._lock:
            self._disarmed = True

    def at(self, kind: str, call_id: str | None = None, turn_no: int | None = None) -> None:
        p = self.plan
        if p.get("kind") != kind:
            return
        if call_id is not None and p.get("call") != call_id:
            return
        if turn_no is not None and p.get("turn") != turn_no:
            return
        self.die(f"{kind}:{call_id if call_id is not None else turn_no}")

    def arm_timer(self, delay: float | None) -> None:
        if delay is None:
            return

        def fire() -> None:
            time.sleep(delay)
            self.die(f"timer:{delay}")

        threading.Thread(target=fire, daemon=True).start()


class _KillingSink:
    """The guard's event sink, killing the process right after a chosen event was committed."""

    def __init__(self, inner: Any, killer: _Killer) -> None:
        self._inner = inner
        self._killer = killer

    def append(self, thread_id: str, drafts: Any, **kw: Any) -> Any:
        out = self._inner.append(thread_id, drafts, **kw)
        for e in out:
            tcid = e.payload.get("tool_call_id")
            if e.kind == EventKind.TOOL_COMPLETED:
                self._killer.at("after_completed", tcid)
            elif e.kind == EventKind.APPROVAL_GRANTED:
                self._killer.at("after_approval", tcid)
        return out

    def append_soon(self, thread_id: str, drafts: Any, **kw: Any) -> None:
        """The guard records a call's outcome without waiting for the commit (Ledger.append_soon).

        ``completion_queued``: die with ``tool.completed`` queued but provably not committed (the
        database's write lock is held, so no flusher can commit it): the side effect happened and
        the history does not say so (on PostgreSQL it is committed: the same as ``after_completed``).
        ``after_completed``: die once it is committed.
        """
        completed = [d.payload.get("tool_call_id") for d in drafts if d.kind == EventKind.TOOL_COMPLETED]
        direct = self._inner._direct  # None on PostgreSQL, where append_soon commits before it returns
        with direct._lock if direct is not None else contextlib.nullcontext():
            self._inner.append_soon(thread_id, drafts, **kw)
            for tcid in completed:
                self._killer.at("completion_queued", tcid)
        if completed:
            self._inner.flush()
        for tcid in completed:
            self._killer.at("after_completed", tcid)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


# ----------------------------------------------------------------------------- the agent
def paths(directory: str | os.PathLike[str], thread: str) -> dict[str, Path]:
    d = Path(directory)
    return {
        "effects": d / f"{thread}.effects.jsonl",
        "calls": d / f"{thread}.calls.jsonl",
        "kills": d / f"{thread}.kills.jsonl",
        "result": d / f"{thread}.{{phase}}.json",
    }


def build(warden: Warden, directory: str, thread: str, killer: _Killer):
    p = paths(directory, thread)
    effects = SideEffects(p["effects"])
    calls = SideEffects(p["calls"])

    @tool
    def upsert_contact(contact_id: str, email: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Create or update a CRM contact (idempotent: keyed by the call)."""
        killer.at("before_effect", tool_call_id)
        calls.record("upsert_contact", call=tool_call_id)
        if not any(e["call"] == tool_call_id for e in effects.entries()):
            effects.record("upsert_contact", call=tool_call_id, contact_id=contact_id)
        killer.at("after_effect", tool_call_id)
        return f"contact {contact_id} = {email}"

    @tool
    def create_ticket(title: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Open a ticket (not idempotent: every run opens another one)."""
        killer.at("before_effect", tool_call_id)
        effects.record("create_ticket", call=tool_call_id, title=title)
        killer.at("after_effect", tool_call_id)
        return f"ticket opened: {title}"

    @tool
    def charge_card(order_id: str, amount: int, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Refund to the card (irreversible: needs an approval on a medium-risk run)."""
        killer.at("before_effect", tool_call_id)
        effects.record("charge_card", call=tool_call_id, order_id=order_id, amount=amount)
        killer.at("after_effect", tool_call_id)
        return f"charged back {amount} on {order_id}"

    @tool
    def notify_team(text: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Post to the team channel (not idempotent)."""
        killer.at("before_effect", tool_call_id)
        effects.record("notify_team", call=tool_call_id, text=text)
        killer.at("after_effect", tool_call_id)
        return "posted"

    warden.tools.register(ToolSpec("upsert_contact", idempotent=True, scopes=("crm:write",)))
    warden.tools.register(ToolSpec("create_ticket", scopes=("tickets:write",)))
    warden.tools.register(ToolSpec("charge_card", irreversible=True, scopes=("payments:charge",)))
    warden.tools.register(ToolSpec("notify_team"))
    warden.guard.sink = _KillingSink(warden.guard.sink, killer)
    model = ScriptedChatModel(script=SCRIPT)

    def agent(state: State) -> dict:
        n = sum(1 for m in state["messages"] if isinstance(m, AIMessage))
        killer.at("node", turn_no=n)
        return {"messages": [model.invoke(state["messages"])]}

    b = StateGraph(State)
    b.add_node("agent", agent)
    b.add_node(
        "tools",
        ToolNode(
            [upsert_contact, create_ticket, charge_card, notify_team],
            wrap_tool_call=warden.guard,
            awrap_tool_call=warden.guard.awrap,
            handle_tool_errors=False,
        ),
    )
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", tools_condition)
    b.add_edge("tools", "agent")
    return b.compile(checkpointer=warden.checkpointer)


def _next_input(graph: Any, cfg: dict[str, Any]) -> Any:
    """What to send next: the first input, an approval, ``None`` to resume, or ``...`` when done."""
    st = graph.get_state(cfg)
    if not st.values and not st.next:
        return {"messages": [HumanMessage("close ticket 17")]}
    interrupts = [i for t in st.tasks for i in t.interrupts]
    if interrupts:
        return Command(resume=approve(interrupts[0].value, APPROVER))
    if st.next or st.tasks:  # tasks: a step whose writes were saved but not yet applied (next may be empty)
        return None
    return ...


def drive(graph: Any, cfg: dict[str, Any], use_async: bool) -> dict[str, Any]:
    """Invoke until the run is finished (at most a few rounds), approving each pending request.

    The async variant keeps one event loop for the whole process, as a server would: LangGraph's
    async ToolNode returns on the first interrupt while sibling calls still run; the next round
    starts at once and the guard must wait for them (a fresh ``asyncio.run`` per round would
    cancel them mid-call instead).
    """

    async def arun() -> int:
        rounds = 0
        while (value := _next_input(graph, cfg)) is not ...:
            rounds += 1
            if rounds > 12:
                raise RuntimeError("the run did not finish in 12 rounds")
            await graph.ainvoke(value, cfg)
        return rounds

    if use_async:
        rounds = asyncio.run(arun())
    else:
        rounds = 0
        while (value := _next_input(graph, cfg)) is not ...:
            rounds += 1
            if rounds > 12:
                raise RuntimeError("the run did not finish in 12 rounds")
            graph.invoke(value, cfg)
    msgs = graph.get_state(cfg).values["messages"]
    return {
        "rounds": rounds,
        "final": msgs[-1].content if isinstance(msgs[-1], AIMessage) else None,
        "tool_messages": {m.tool_call_id: {"content": m.content, "status": m.status} for m in msgs if isinstance(m, ToolMessage)},
    }


def run_phase(url: str, thread: str, directory: str, seed: int, phase: str) -> None:
    """One process's part of a trial (``crash``: armed; ``resume1``: maybe armed; ``resume``: finishes)."""
    plan = plan_for(seed)
    p = paths(directory, thread)
    armed = plan if phase == "crash" else None
    killer = _Killer(armed, p["kills"])
    t0 = time.monotonic()
    policy = RegoEngine.from_source(_POLICY_SOURCE, filename=str(DEFAULT_REGO_POLICY)) if _POLICY_SOURCE else None
    with Warden.open(url, ephemeral_keys=True, policy=policy) as warden:
        before = [e.kind for e in warden.ledger.events(thread) if not e.kind.startswith(("checkpoint.", "writes."))]
        graph = build(warden, directory, thread, killer)
        if phase == "crash":
            killer.arm_timer(plan.get("delay"))
        elif phase == "resume1":
            killer.arm_timer(plan.get("resume_delay"))
        # Every process states the charter; on a thread with history this also revokes leases a dead
        # process left outstanding (Warden.recover).
        cfg = warden.start_run(thread, owner=OWNER, intent=INTENT, risk_tier="medium")
        t1 = time.monotonic()
        out = drive(graph, cfg, plan["async"])
        killer.disarm()
        out["run_seconds"] = round(time.monotonic() - t1, 3)
        out["phase"] = phase
        out["last_event_before"] = before[-1] if before else None
        out["pid"] = os.getpid()
        out["seconds"] = round(time.monotonic() - t0, 3)
        Path(str(p["result"]).format(phase=phase)).write_text(json.dumps(out))


# ----------------------------------------------------------------------------- batch (fork per phase)
def _fork(fn: Any, *args: Any, timeout: int = 60, errors: Path | None = None) -> int:
    """Run ``fn(*args)`` in a forked child; return its wait status (a traceback goes to ``errors``)."""
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            signal.alarm(timeout)
            fn(*args)
        except BaseException:
            traceback.print_exc()
            if errors is not None:
                with open(errors, "a", encoding="utf-8") as fh:
                    fh.write(traceback.format_exc())
            code = 3
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return signal.Signals(os.WTERMSIG(status)).name
    return f"exit {os.WEXITSTATUS(status)}"


def _migrate(url: str) -> None:
    Warden.open(url, ephemeral_keys=True).close()


def _json_lines(path: Path) -> list[Any]:
    """Records a process wrote before it was killed; a SIGKILL can cut the last line short."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _policy_source() -> str:
    """The default policy's text, read once: the working tree is shared with other people, and a
    child must not read the file in the instant an editor rewrites it (seen as 'Invalid file')."""
    for _ in range(50):
        text = DEFAULT_REGO_POLICY.read_text(encoding="utf-8")
        if text.strip():
            return text
        time.sleep(0.1)
    raise SystemExit(f"{DEFAULT_REGO_POLICY} stayed empty")


def batch(spec_path: str) -> None:
    global _POLICY_SOURCE
    _POLICY_SOURCE = _policy_source()
    spec = json.loads(Path(spec_path).read_text())
    url, directory = spec["url"], spec["dir"]
    report: dict[str, Any] = {"url": url, "trials": []}
    status = _fork(_migrate, url)
    if status != 0:
        raise SystemExit(f"migration failed: {_describe(status)}")
    for trial in spec["trials"]:
        seed, thread = int(trial["seed"]), trial["thread"]
        plan = plan_for(seed)
        t0 = time.monotonic()
        err = Path(directory) / f"{thread}.errors.txt"
        statuses = [_describe(_fork(run_phase, url, thread, directory, seed, "crash", errors=err))]
        if "resume_delay" in plan:
            statuses.append(_describe(_fork(run_phase, url, thread, directory, seed, "resume1", errors=err)))
        resumes = 0
        while True:  # resume until one process finishes the run cleanly
            resumes += 1
            st = _describe(_fork(run_phase, url, thread, directory, seed, "resume", errors=err))
            statuses.append(st)
            if st == "exit 0" or resumes >= 3:
                break
        p = paths(directory, thread)
        kills = _json_lines(p["kills"])
        results = {}
        for ph in ("crash", "resume1", "resume"):
            f = Path(str(p["result"]).format(phase=ph))
            parsed = _json_lines(f)
            if parsed:
                results[ph] = parsed[-1]
        report["trials"].append(
            {"seed": seed, "thread": thread, "plan": plan, "statuses": statuses, "kills": kills, "results": results,
             "errors": err.read_text()[-3000:] if err.exists() else "",
             "seconds": round(time.monotonic() - t0, 2)}
        )
    print(json.dumps(report))


def main(argv: list[str]) -> None:
    if argv[0] == "batch":
        batch(argv[1])
    else:
        phase, url, thread, directory, seed = argv[:5]
        run_phase(url, thread, directory, int(seed), phase)


if __name__ == "__main__":
    main(sys.argv[1:])
