"""SIGKILL trials in LangGraph's three durability modes, with a model that never repeats an id.

``python -m tests.support.proc_durability SPEC.json`` imports everything once, then for each trial
of the spec forks a child that runs a new thread with ``graph.invoke(..., durability=MODE)`` and is
SIGKILLed at the trial's point: inside the tool right after its side effect (``after_effect``), or
in the model node right after the tool step (``after_tool``). This process (not the dead child)
then resumes from the database the way an application would: ``invoke(None)`` when the saved
state has a next step, else the same request again — and the model, asked again, emits the same
action under a NEW id. It writes one JSON report with, per trial, how the run ended and what the
history holds; side effects are counted in a file outside every process.

Knobs per trial: ``delay`` slows every checkpoint save in the child by that many seconds (the
background save of ``"async"`` durability then loses the race against the tool for sure), and
``kill_delay`` waits that long in the model node before the kill (background saves of the tool
step land first), and ``defence`` turns the guard's two defences off for the child (``"none"``), or keeps only one
(``"wait"``: the origin checkpoint is made durable before the side effect; ``"match"``: a new id
for the same action is recognised as a retry), or both (``"all"``, the default).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from langgraph_warden.events import EventKind
from langgraph_warden.guards.tools import ToolSpec
from langgraph_warden.warden import Warden

from .agents import SideEffects

OWNER = "alice@example.com"


def build(warden: Warden, effects: SideEffects, kill: str | None = None, kill_delay: float = 0.0):
    @tool
    def transfer(order: str) -> str:
        """Transfer money for an order (not idempotent)."""
        effects.record("transfer", order=order)
        if kill == "after_effect":
            os.kill(os.getpid(), signal.SIGKILL)
        return f"transferred {order}"

    warden.tools.register(ToolSpec("transfer", idempotent=False))

    def model(state: MessagesState) -> dict[str, Any]:
        """The LLM boundary: the same action every time it is asked, under a new id each time."""
        last = state["messages"][-1]
        if isinstance(last, ToolMessage):
            if kill == "after_tool":
                time.sleep(kill_delay)  # let LangGraph's background saves of the tool step land first
                os.kill(os.getpid(), signal.SIGKILL)
            return {"messages": [AIMessage(f"done: {last.content}")]}
        order = str(state["messages"][0].content).split(":", 1)[1]
        return {"messages": [AIMessage("", tool_calls=[
            {"name": "transfer", "args": {"order": order}, "id": f"call_{uuid.uuid4().hex[:12]}", "type": "tool_call"}])]}

    b = StateGraph(MessagesState)
    b.add_node("model", model)
    b.add_node("tools", ToolNode([transfer], wrap_tool_call=warden.guard, awrap_tool_call=warden.guard.awrap))
    b.add_edge(START, "model")
    b.add_conditional_edges("model", tools_condition)
    b.add_edge("tools", "model")
    return b.compile(checkpointer=warden.checkpointer)


def _defences(warden: Warden, trial: dict[str, Any]) -> None:
    """Turn off the defences the trial does without, in the run and in its resume alike."""
    defence = trial.get("defence", "all")
    if defence in ("none", "match"):
        warden.guard.outcomes.await_origin = lambda plan: None  # type: ignore[method-assign]
    if defence in ("none", "wait"):
        warden.guard.decision.find_retry = lambda *a, **k: None  # type: ignore[method-assign]


def _child(url: str, effects: str, trial: dict[str, Any]) -> None:
    """Run the trial's thread until the kill (never returns normally)."""
    with Warden.open(url, ephemeral_keys=True) as warden:
        if trial.get("delay"):
            put, delay = warden.saver.put, float(trial["delay"])

            def slow_put(*args: Any, **kwargs: Any) -> Any:
                time.sleep(delay)
                return put(*args, **kwargs)

            warden.saver.put = slow_put  # type: ignore[method-assign]
        _defences(warden, trial)
        graph = build(warden, SideEffects(effects), kill=trial["kill"], kill_delay=float(trial.get("kill_delay", 0)))
        cfg = warden.start_run(trial["thread"], owner=OWNER, intent="pay an order", risk_tier="low")
        graph.invoke({"messages": [HumanMessage(f"pay:{trial['thread']}")]}, cfg, durability=trial["mode"])
    os._exit(3)  # the kill point was never reached


def _resume(warden: Warden, graph, trial: dict[str, Any]) -> dict[str, Any]:
    """Resume as an application would, until the run ends (at most three invocations)."""
    cfg = {"configurable": {"thread_id": trial["thread"]}}
    how: list[str] = []
    last = None
    for _ in range(3):
        state = graph.get_state(cfg)
        if state.next:
            how.append("invoke(None)")
            out = graph.invoke(None, cfg, durability=trial["mode"])
        else:
            msgs = state.values.get("messages", []) if state.values else []
            if msgs and isinstance(msgs[-1], AIMessage) and str(msgs[-1].content).startswith("done"):
                last = msgs[-1].content
                break
            how.append("retry request")
            out = graph.invoke({"messages": [HumanMessage(f"pay:{trial['thread']}")]}, cfg, durability=trial["mode"])
        last = out["messages"][-1].content
        if str(last).startswith("done"):
            break
    ledger = warden.ledger
    thread = trial["thread"]
    superseded = ledger.events(thread, kinds=[EventKind.TOOL_SUPERSEDED])
    retried = [e for e in ledger.events(thread) if e.payload.get("retry_of")]
    return {
        "how": how,
        "last": last,
        "started": len(ledger.events(thread, kinds=[EventKind.TOOL_STARTED])),
        "superseded": [e.payload["superseded_by"] for e in superseded],
        "retry_links": sorted({(e.payload["tool_call_id"], e.payload["retry_of"]) for e in retried}),
        "verified": ledger.verify(thread_id=thread).ok,
    }


def main(spec_path: str | None = None) -> None:
    """Run the spec's trials (``spec_path``, else the command line's); also called by tests/support/forker.py."""
    spec = json.loads(Path(spec_path or sys.argv[1]).read_text())
    url, effects = spec["url"], spec["effects"]
    Warden.open(url, ephemeral_keys=True).close()  # migrate once, before any fork
    reports: list[dict[str, Any]] = []
    for trial in spec["trials"]:
        pid = os.fork()
        if pid == 0:
            try:
                _child(url, effects, trial)
            finally:
                os._exit(4)
        _, status = os.waitpid(pid, 0)
        report: dict[str, Any] = {**trial, "killed": os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL,
                                  "child_status": status}
        try:
            with Warden.open(url, ephemeral_keys=True) as warden:
                _defences(warden, trial)
                graph = build(warden, SideEffects(effects))
                report.update(_resume(warden, graph, trial))
        except Exception as exc:  # noqa: BLE001 - reported: the test names the trial
            report["error"] = f"{type(exc).__name__}: {exc}"
        reports.append(report)
    Path(spec["report"]).write_text(json.dumps(reports, indent=1))


if __name__ == "__main__":
    main()
