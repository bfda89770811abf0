"""Worker processes that resume threads on command: many of them resume one thread at once.

``python -m tests.support.proc_workers URL EFFECTS`` opens the database, builds the graph, prints
``ready`` and then, for every JSON line on stdin (``{"thread": ..., "resume": ...}``), resumes
that thread at once (``invoke(None)`` or ``invoke(Command(resume=...))``) and prints one JSON
line: whether the run finished, its last message, or the error. The parent (tests/test_workers.py)
writes the same line to every worker at the same moment.

``python -m tests.support.proc_workers pool URL EFFECTS IN,OUT IN,OUT ...`` imports LangGraph and
the warden once and forks one worker per pipe pair the parent passed down (``pass_fds``): each
child opens the database itself and serves exactly as above on its own pipes. Eight workers then
cost one interpreter start-up, not eight (the import is seconds of CPU each), and every worker is
still its own OS process with its own connections, locks and memory.

The graph: an agent node (the scripted LLM boundary: it asks for one tool call named by the
first message, then says "done") and a ToolNode guarded by the warden. ``charge`` is an ordinary
non-idempotent tool; ``wire`` is irreversible and waits for an approval. Both count their side
effect in a file outside every process.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from functools import partial
from typing import Any, TextIO

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command

from langgraph_warden.guards.tools import ToolSpec
from langgraph_warden.warden import Warden

from .agents import SideEffects
from .forker import exit_status, fork_child

OWNER = "alice@example.com"


def build(warden: Warden, effects: SideEffects):
    @tool
    def charge(order: str) -> str:
        """Charge an order (not idempotent)."""
        effects.record("charge", order=order)
        return f"charged {order}"

    @tool
    def wire(order: str) -> str:
        """Wire money for an order (irreversible: needs an approval)."""
        effects.record("wire", order=order)
        return f"wired {order}"

    warden.tools.register(ToolSpec("charge", idempotent=False))
    warden.tools.register(ToolSpec("wire", irreversible=True))

    def agent(state: MessagesState) -> dict[str, Any]:
        last = state["messages"][-1]
        if isinstance(last, ToolMessage):
            return {"messages": [AIMessage("done")]}
        kind, order = str(state["messages"][0].content).split(":", 1)
        name = "wire" if kind == "approval" else "charge"
        return {"messages": [AIMessage("", tool_calls=[{"name": name, "args": {"order": order}, "id": f"call-{order}"}])]}

    b = StateGraph(MessagesState)
    b.add_node("agent", agent)
    b.add_node("tools", ToolNode([charge, wire], wrap_tool_call=warden.guard, awrap_tool_call=warden.guard.awrap))
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", tools_condition)
    b.add_edge("tools", "agent")
    # Plain threads stop before the tools step: the workers resume them into it together.
    return b.compile(checkpointer=warden.checkpointer, interrupt_before=["tools"])


def prepare(warden: Warden, graph, thread: str, kind: str) -> dict[str, Any] | None:
    """Run a new thread up to where resuming it runs its tool; the approval request, if one is pending."""
    cfg = warden.start_run(thread, owner=OWNER, intent="settle an order", risk_tier="medium")
    graph.invoke({"messages": [HumanMessage(f"{kind}:{thread}")]}, cfg)
    if kind == "approval":
        result = graph.invoke(None, cfg)  # past interrupt_before: into the guard, which asks
        (intr,) = result["__interrupt__"]
        return {"interrupt_id": intr.id, "request": intr.value}
    return None


def serve(url: str, effects_path: str, inp: TextIO, out: TextIO) -> None:
    """Open the database, say ``ready``, then resume the thread named by each line of ``inp``."""
    with Warden.open(url, ephemeral_keys=True) as warden:
        graph = build(warden, SideEffects(effects_path))
        print("ready", file=out, flush=True)
        for line in inp:
            order = json.loads(line)
            cfg = {"configurable": {"thread_id": order["thread"]}}
            try:
                value = Command(resume=order["resume"]) if order.get("resume") else None
                result = graph.invoke(value, cfg)
                msgs = result.get("messages", [])
                reply = {"thread": order["thread"], "ok": True, "last": msgs[-1].content if msgs else None,
                         "interrupted": bool(result.get("__interrupt__")), "pid": os.getpid()}
            except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the test
                reply = {"thread": order["thread"], "ok": False, "error": f"{type(exc).__name__}: {exc}",
                         "trace": traceback.format_exc()[-3000:], "pid": os.getpid()}
            print(json.dumps(reply), file=out, flush=True)


def pool(url: str, effects_path: str, pipes: list[tuple[int, int]]) -> int:
    """Fork one worker per (read fd, write fd) pair; wait for all; 0 if every worker exited cleanly."""
    def worker(i: int, rfd: int, wfd: int) -> int:
        for j, pair in enumerate(pipes):  # keep only its own pair, so the parent's EOF reaches each worker alone
            if j != i:
                for fd in pair:
                    os.close(fd)
        with os.fdopen(rfd, encoding="utf-8") as inp, os.fdopen(wfd, "w", encoding="utf-8") as out:
            serve(url, effects_path, inp, out)
        return 0

    children = [fork_child(partial(worker, i, rfd, wfd)) for i, (rfd, wfd) in enumerate(pipes)]
    for pair in pipes:
        for fd in pair:
            os.close(fd)
    statuses = [exit_status(pid) for pid in children]
    return 0 if all(s == 0 for s in statuses) else 1


def main() -> None:
    if sys.argv[1] == "pool":
        url, effects_path = sys.argv[2], sys.argv[3]
        pipes = [(int(r), int(w)) for r, w in (arg.split(",") for arg in sys.argv[4:])]
        raise SystemExit(pool(url, effects_path, pipes))
    serve(sys.argv[1], sys.argv[2], sys.stdin, sys.stdout)


if __name__ == "__main__":
    main()
