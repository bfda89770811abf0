"""Small real LangGraph graphs shared by the saver's end-to-end and multi-process tests.

Every node that matters appends one line to a *side file* (opened, appended,
fsynced, closed) so a test can count how often each node really executed,
across processes and crashes.
"""

from __future__ import annotations

import operator
import os
import signal
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt

__all__ = [
    "ChainState",
    "ApprovalState",
    "LoopState",
    "append_line",
    "read_lines",
    "build_chain",
    "build_approval",
    "build_loop",
]


def append_line(path: str | os.PathLike[str] | None, line: str) -> None:
    if not path:
        return
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(path: str | os.PathLike[str]) -> list[str]:
    try:
        with open(path, encoding="utf-8") as fh:
            return [ln.strip() for ln in fh if ln.strip()]
    except FileNotFoundError:
        return []


class ChainState(TypedDict):
    log: Annotated[list[str], operator.add]


def build_chain(side_file: str | None = None, *, nodes: int = 6, kill_at: int | None = None) -> StateGraph:
    """``n1 -> n2 -> ... -> nN``; each node logs its name. ``kill_at=k`` SIGKILLs the process in node k."""

    def make(i: int):
        name = f"n{i}"

        def node(state: ChainState) -> dict[str, Any]:
            append_line(side_file, name)
            if kill_at == i:
                # No cleanup, no atexit, no flush: exactly what a crash looks like.
                os.kill(os.getpid(), signal.SIGKILL)
            return {"log": [name]}

        return node

    b = StateGraph(ChainState)
    for i in range(1, nodes + 1):
        b.add_node(f"n{i}", make(i))
    b.add_edge(START, "n1")
    for i in range(1, nodes):
        b.add_edge(f"n{i}", f"n{i + 1}")
    b.add_edge(f"n{nodes}", END)
    return b


class ApprovalState(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    request: str
    decision: str


def build_approval(side_file: str | None = None) -> StateGraph:
    """``prepare -> ask (interrupt) -> act``: a human approves before ``act`` runs."""

    def prepare(state: ApprovalState) -> dict[str, Any]:
        append_line(side_file, "prepare")
        return {"log": ["prepare"]}

    def ask(state: ApprovalState) -> dict[str, Any]:
        decision = interrupt({"question": f"approve {state.get('request', '?')}?"})
        append_line(side_file, f"ask:{decision}")
        return {"log": ["ask"], "decision": decision}

    def act(state: ApprovalState) -> dict[str, Any]:
        append_line(side_file, "act")
        return {"log": [f"act:{state['decision']}"]}

    b = StateGraph(ApprovalState)
    b.add_node("prepare", prepare)
    b.add_node("ask", ask)
    b.add_node("act", act)
    b.add_edge(START, "prepare")
    b.add_edge("prepare", "ask")
    b.add_edge("ask", "act")
    b.add_edge("act", END)
    return b


class LoopState(TypedDict):
    count: int
    trail: Annotated[list[int], operator.add]


def build_loop(steps: int) -> StateGraph:
    """One node that loops ``steps`` times: one super-step (one checkpoint) per iteration."""

    def step(state: LoopState) -> dict[str, Any]:
        n = state["count"] + 1
        return {"count": n, "trail": [n]}

    def route(state: LoopState) -> str:
        return "step" if state["count"] < steps else END

    b = StateGraph(LoopState)
    b.add_node("step", step)
    b.add_edge(START, "step")
    b.add_conditional_edges("step", route, ["step", END])
    return b
