"""One process of the crash-between-approval-and-execution test.

    python -m tests.support.proc_approval_crash DB_URL EFFECTS THREAD start    # run until the approval interrupt
    python -m tests.support.proc_approval_crash DB_URL EFFECTS THREAD approve  # resume with bob's approval
    python -m tests.support.proc_approval_crash DB_URL EFFECTS THREAD resume   # graph.invoke(None): finish the run

With ``WARDEN_TEST_CRASH_IN=issue_refund`` the ``approve`` process SIGKILLs
itself inside the tool, after ``approval.granted`` and ``tool.started`` were
committed and before the side effect. With ``WARDEN_TEST_CRASH_AFTER_APPROVAL=1``
it SIGKILLs itself right after ``approval.granted`` was committed, before the
guard records ``tool.started`` (crash injected at that one point of this test
process). Prints one JSON line describing the outcome.
"""

from __future__ import annotations

import json
import os
import signal
import sys

from langchain_core.messages import HumanMessage, ToolMessage
from langgraph.types import Command

from langgraph_warden.guards.approval import approve
from langgraph_warden.warden import Warden

from .agents import call, turn
from .graphs_approval import build

SCRIPT = [turn(call("issue_refund", {"order_id": "o-7", "amount": 7}, "r1")), turn(text="done")]


def main(db_url: str, effects: str, thread: str, phase: str) -> None:
    with Warden.open(db_url, ephemeral_keys=True) as warden:
        graph = build(warden, effects, SCRIPT)
        if os.environ.get("WARDEN_TEST_CRASH_AFTER_APPROVAL"):
            warden.guard.outcomes.started = lambda plan, lease: os.kill(os.getpid(), signal.SIGKILL)  # crash injection
        cfg = {"configurable": {"thread_id": thread}}
        if phase == "start":
            cfg = warden.start_run(thread, owner="alice@example.com", intent="refund o-7")
            out = graph.invoke({"messages": [HumanMessage("refund o-7")]}, cfg)
        elif phase == "approve":
            (pending,) = warden.pending_approvals(thread)
            out = graph.invoke(Command(resume=approve(pending, "bob@example.com")), cfg)
        elif phase == "resume":
            out = graph.invoke(None, cfg)
        else:  # pragma: no cover
            raise SystemExit(f"unknown phase {phase!r}")
        print(
            json.dumps(
                {
                    "interrupts": [i.value["request_id"] for i in out.get("__interrupt__", [])],
                    "tool_messages": {m.tool_call_id: m.content for m in out["messages"] if isinstance(m, ToolMessage)},
                }
            )
        )


if __name__ == "__main__":
    main(*sys.argv[1:5])
