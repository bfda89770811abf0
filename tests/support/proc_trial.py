"""One crash trial of a governed agent: run it in a subprocess that SIGKILLs itself, resume it elsewhere.

    python -m tests.support.proc_trial DB_URL THREAD EFFECTS KILLS KILL_SPEC
    python -m tests.support.proc_trial batch SPEC.json   # many trials, one JSON line of statuses

``batch`` imports LangGraph and the warden once, then runs each trial of the spec (``{"trials":
[{"seed", "url", "thread", "effects", "kills", "kill", "log"}]}``) in a *forked child process* that
dies exactly as the single-trial form does; its stdout and stderr go to the trial's ``log``.

(Used by ``tests/test_exactly_once.py``.) The agent is a real ``StateGraph`` with a
``ToolNode(wrap_tool_call=warden.guard)``; a scripted chat model issues two turns of three calls:

* ``charge_card``   — side-effecting, irreversible, **not** idempotent (and leased a credential);
* ``upsert_record`` — side-effecting, idempotent;
* ``read_balance``  — read only (declared idempotent).

Every side effect is appended, with its tool call id, to the ``EFFECTS`` file (fsync'ed, so a
SIGKILLed process cannot hide it). ``KILL_SPEC`` says where the process dies:

* ``before:TOOL:CALL_ID``  — inside the tool, after ``tool.started`` was committed, before the side effect;
* ``after:TOOL:CALL_ID``   — inside the tool, after the side effect, before returning;
* ``turn:N``               — at the start of model turn N (N >= 1: the previous tool step returned);
* ``timer:SECONDS``        — a timer thread kills the process that long after ``graph.invoke`` began.

Just before dying the process appends one JSON line to ``KILLS`` saying where it was.
:func:`resume` (used by the test process) finishes the run: ``graph.invoke(None, config)`` until
the graph has nothing left to run.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langchain_core.tools import InjectedToolCallId, tool
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition

from langgraph_warden.guards.tools import ToolSpec
from langgraph_warden.warden import Warden

from .agents import ScriptedChatModel, SideEffects, call, turn
from .forker import exit_status, fork_child

NON_IDEMPOTENT = "charge_card"
IDEMPOTENT = "upsert_record"
READ_ONLY = "read_balance"
OWNER = "ops@example.com"
INTENT = "settle two invoices"

SCRIPT = [
    turn(
        call(NON_IDEMPOTENT, {"invoice": "inv-1", "amount": 10}, "a1"),
        call(IDEMPOTENT, {"key": "inv-1", "value": "paid"}, "b1"),
        call(READ_ONLY, {"account": "acc-1"}, "c1"),
    ),
    turn(
        call(NON_IDEMPOTENT, {"invoice": "inv-2", "amount": 20}, "a2"),
        call(IDEMPOTENT, {"key": "inv-2", "value": "paid"}, "b2"),
        call(READ_ONLY, {"account": "acc-2"}, "c2"),
    ),
    turn(text="both invoices settled"),
]
CALL_TOOLS = {c["id"]: c["name"] for t in SCRIPT for c in t.tool_calls}
FIRST_INPUT = {"messages": [HumanMessage("settle inv-1 and inv-2")]}


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def _die(kills: str | None, **where: Any) -> None:
    if kills:
        with open(kills, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"pid": os.getpid(), **where}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


def build(warden: Warden, effects_path: str | os.PathLike[str], kill: str | None = None, kills: str | None = None):
    """The governed agent; ``kill`` (a KILL_SPEC) arms a crash point, ``None`` for the resuming process."""
    effects = SideEffects(effects_path)
    mode, _, rest = (kill or "").partition(":")

    def point(when: str, name: str, call_id: str) -> None:
        if mode == when and rest == f"{name}:{call_id}":
            _die(kills, point=f"{when}:{name}:{call_id}")

    @tool
    def charge_card(invoice: str, amount: int, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Charge the customer's card for an invoice (not idempotent)."""
        point("before", NON_IDEMPOTENT, tool_call_id)
        time.sleep(0.01)
        effects.record(NON_IDEMPOTENT, tool_call_id=tool_call_id, invoice=invoice, amount=amount)
        point("after", NON_IDEMPOTENT, tool_call_id)
        time.sleep(0.01)
        return f"charged {amount} for {invoice}"

    @tool
    def upsert_record(key: str, value: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Set a ledger record (idempotent)."""
        point("before", IDEMPOTENT, tool_call_id)
        time.sleep(0.01)
        effects.record(IDEMPOTENT, tool_call_id=tool_call_id, key=key, value=value)
        point("after", IDEMPOTENT, tool_call_id)
        return f"{key} = {value}"

    @tool
    def read_balance(account: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Read an account balance."""
        point("before", READ_ONLY, tool_call_id)
        effects.record(READ_ONLY, tool_call_id=tool_call_id, account=account)
        return f"{account}: 100"

    reg = warden.tools
    if NON_IDEMPOTENT not in reg:
        reg.register(ToolSpec(NON_IDEMPOTENT, irreversible=True, scopes=("payments:charge",), target_arg="invoice"))
        reg.register(ToolSpec(IDEMPOTENT, idempotent=True))
        reg.register(ToolSpec(READ_ONLY, idempotent=True))
    model = ScriptedChatModel(script=SCRIPT)

    def agent(state: State) -> dict:
        n = sum(1 for m in state["messages"] if isinstance(m, AIMessage))
        if mode == "turn" and rest == str(n):
            _die(kills, point=f"turn:{n}")
        return {"messages": [model.invoke(state["messages"])]}

    b = StateGraph(State)
    b.add_node("agent", agent)
    b.add_node("tools", ToolNode([charge_card, upsert_record, read_balance], wrap_tool_call=warden.guard))
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", tools_condition)
    b.add_edge("tools", "agent")
    return b.compile(checkpointer=warden.checkpointer)


def start(warden: Warden, thread: str) -> dict[str, Any]:
    return warden.start_run(thread, owner=OWNER, intent=INTENT, risk_tier="low")


def resume(warden: Warden, graph: Any, thread: str, *, max_rounds: int = 10) -> tuple[dict[str, Any], int]:
    """Finish the run: ``invoke(None)`` until nothing is left (first input if the crash beat the first checkpoint)."""
    cfg = start(warden, thread)  # same charter: no new run.started; revokes leases the dead process left
    # Always invoke once: a checkpoint whose tasks all have their writes saved shows `next == ()`
    # in get_state although the run has not ended (the next step was never checkpointed).
    graph.invoke(FIRST_INPUT if not graph.get_state(cfg).values else None, cfg)
    rounds = 1
    while graph.get_state(cfg).next:
        if rounds >= max_rounds:
            raise AssertionError(f"run {thread} did not finish in {max_rounds} resumes")
        graph.invoke(None, cfg)
        rounds += 1
    return graph.get_state(cfg).values, rounds


def main(db_url: str, thread: str, effects: str, kills: str, kill: str) -> None:
    with Warden.open(db_url, ephemeral_keys=True) as warden:
        graph = build(warden, effects, kill, kills)
        cfg = start(warden, thread)
        if kill.startswith("timer:"):
            delay = float(kill.split(":", 1)[1])
            began = time.monotonic()
            timer = threading.Timer(delay, lambda: _die(kills, point=kill, after=round(time.monotonic() - began, 3)))
            timer.daemon = True
            timer.start()
        graph.invoke(FIRST_INPUT, cfg)
    print(json.dumps({"finished": True}), flush=True)


def _crash_in_child(trial: dict[str, Any]) -> int:
    """Fork a child that runs one trial (output to the trial's log); its status: -signal, or the exit code."""
    def trial_body() -> int:
        log = os.open(trial["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        signal.alarm(60)
        main(trial["url"], trial["thread"], trial["effects"], trial["kills"], trial["kill"])
        return 0

    return exit_status(fork_child(trial_body))

def batch(spec_path: str) -> None:
    """Every trial of the spec in turn, each in its own forked process; print {seed: status}."""
    spec = json.loads(Path(spec_path).read_text())
    print(json.dumps({str(t["seed"]): _crash_in_child(t) for t in spec["trials"]}), flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    if sys.argv[1] == "batch":
        batch(sys.argv[2])
    else:
        main(*sys.argv[1:6])
