"""Resume a run that paused for approval — from Python, and from the ``warden approvals`` CLI.

What it shows
-------------
A guarded agent asks to issue a refund (irreversible, so the default policy
wants a human). The run pauses with an interrupt and its checkpoint and signed
history are in the database; nothing is lost if the process goes away. Then:

* **thread A — resumed from Python**: ``warden.pending_approvals(thread)`` lists
  the request and ``graph.invoke(Command(resume=approve(request, "bob")), config)``
  continues the run;
* **thread B — resumed from the CLI**, in other processes (run here with
  ``subprocess``; you would type them in a shell)::

      warden approvals list --db URL --thread thread-b --format json
      warden approvals decide thread-b REQUEST_ID --approve --as bob@example.com \\
          --db URL --graph examples.resume_from_cli:build_graph --ephemeral-keys

  ``--graph module:attribute`` names :func:`build_graph` below: a factory whose first
  parameter is called ``warden``, so the CLI passes it the ``Warden`` it opened
  and the factory wires ``warden.guard`` and ``warden.checkpointer`` into the
  same graph the application uses. ``--ephemeral-keys`` signs the CLI's events
  with a throwaway key (demo only; without it the key comes from the OS keyring).

Finally the history of both threads is verified (events signed by three
processes' keys still verify as one history).

The script runs exactly the ``warden`` commands it prints, from the repository root
(``--graph`` imports ``examples.resume_from_cli`` from the current directory).

Run it from anywhere::

    python examples/resume_from_cli.py                      # SQLite file in a temp dir
    python examples/resume_from_cli.py --db sqlite:///x.db  # or any database URL / path

Exit code 0 when both runs completed after approval and verification passed.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command

from langgraph_warden import ToolSpec, Warden, approve
from langgraph_warden.testing import ScriptedChatModel

REPO = Path(__file__).resolve().parents[1]
GRAPH_REF = "examples.resume_from_cli:build_graph"

SCRIPT = [
    AIMessage(content="", tool_calls=[
        {"name": "issue_refund", "args": {"order_id": "O-9", "amount_cents": 1500}, "id": "c_refund", "type": "tool_call"},
    ]),
    AIMessage(content="Refund issued."),
]


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


@tool
def issue_refund(order_id: str, amount_cents: int) -> str:
    """Refund an order."""
    return f"refunded {amount_cents} cents on {order_id}"


def build_graph(warden: Warden):
    """The application's graph factory — also what ``--graph examples.resume_from_cli:build_graph`` loads."""
    if "issue_refund" not in warden.tools:
        warden.tools.register(ToolSpec("issue_refund", irreversible=True))
    model = ScriptedChatModel(script=SCRIPT)

    def agent(state: State) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    b = StateGraph(State)
    b.add_node("agent", agent)
    b.add_node("tools", ToolNode([issue_refund], wrap_tool_call=warden.guard, awrap_tool_call=warden.guard.awrap))
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", tools_condition)
    b.add_edge("tools", "agent")
    return b.compile(checkpointer=warden.checkpointer)


def db_url(db: str | None) -> str:
    if db is None:
        return f"sqlite:///{Path(tempfile.mkdtemp(prefix='warden-example-')) / 'warden.db'}"
    return db if "://" in db else f"sqlite:///{Path(db).expanduser().resolve()}"


def pause(warden: Warden, g: Any, thread: str) -> None:
    config = warden.start_run(thread, owner="alice@example.com", intent="refund O-9")
    out = g.invoke({"messages": [HumanMessage("refund O-9 please")]}, config)
    (i,) = out["__interrupt__"]
    print(f"   {thread}: paused, {i.value['tool']} {i.value['args']} needs approval ({', '.join(i.value['reasons'])})")


def warden_argv(*args: str) -> list[str]:
    """``warden <args>``: the console script installed with this Python (what your shell runs), else ``python -m``."""
    script = Path(sys.executable).with_name("warden.exe" if os.name == "nt" else "warden")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "langgraph_warden.cli", *args]


def shown(argv: list[str]) -> str:
    """The command as printed: the console script as ``warden``, every argument quoted for a shell."""
    head = ["warden"] if Path(argv[0]).stem == "warden" else argv[:3]
    return shlex.join(head + argv[len(head):])


def warden_cli(*args: str) -> subprocess.Popen[str]:
    """Start ``warden <args>`` in a new process, in the repository root."""
    return subprocess.Popen(warden_argv(*args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(args: tuple[str, ...], proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, err = proc.communicate(timeout=60)
    print(f"   $ cd {shlex.quote(str(REPO))} && {shown(warden_argv(*args))}")
    if proc.returncode != 0:
        print(f"   exit {proc.returncode}\n{out}{err}")
    return proc.returncode, out


def tool_result(g: Any, thread: str) -> str | None:
    state = g.get_state({"configurable": {"thread_id": thread}})
    return next((m.content for m in state.values["messages"] if isinstance(m, ToolMessage)), None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", help="database URL or SQLite path (default: a new SQLite file in a temp dir)")
    url = db_url(ap.parse_args(argv).db)
    print(f"database: {url}")

    with Warden.open(url, ephemeral_keys=True) as warden:  # ephemeral keys: demo only
        g = build_graph(warden)
        print("1. two runs pause for approval")
        pause(warden, g, "thread-b")
        # From here on, another process (the CLI) lists thread-b's request while this one works on thread-a.
        list_args = ("approvals", "list", "--db", url, "--thread", "thread-b", "--format", "json")
        listing = warden_cli(*list_args)
        pause(warden, g, "thread-a")

        print("2. thread-a: resume from Python")
        (req,) = warden.pending_approvals("thread-a")
        print(f"   pending: {req.request_id} {req.tool} {dict(req.args)}")
        out = g.invoke(Command(resume=approve(req, "bob@example.com")), {"configurable": {"thread_id": "thread-a"}})
        print(f"   resumed from Python; assistant: {out['messages'][-1].content}")
        result_a = tool_result(g, "thread-a")
        print(f"   tool result: {result_a}")

        print("3. thread-b: resume from the CLI")
        code, listed = finish(list_args, listing)
        rows = json.loads(listed) if code == 0 else []
        for r in rows:
            print(f"   | {r['request_id']} {r['tool']} {r['args']} owner={r['owner']} reasons={r['reasons']}")
        decided = None
        if len(rows) == 1:
            decide_args = ("approvals", "decide", "thread-b", rows[0]["request_id"], "--approve", "--as",
                           "bob@example.com", "--db", url, "--graph", GRAPH_REF, "--ephemeral-keys")
            decided, text = finish(decide_args, warden_cli(*decide_args))
            for line in text.splitlines():
                print(f"   | {line}")
        result_b = tool_result(g, "thread-b")
        print(f"   tool result (read back here): {result_b}")

        report = warden.verify()
        approvers = {t: [a.approver for a in warden.audit(t).actions] for t in ("thread-a", "thread-b")}
        left = warden.pending_approvals()
    print(f"4. approvers: {approvers}")
    print(f"   verify: {'OK' if report.ok else 'FAILED'} ({report.events} events, {len(report.threads)} threads)")

    ok = result_a == result_b == "refunded 1500 cents on O-9" and decided == 0 and not left and report.ok
    print("RESULT: resumed from Python and from the CLI" if ok else "RESULT: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
