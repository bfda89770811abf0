"""Subprocess: run the approval graph up to its interrupt (``start``) or resume it (``resume``).

Usage: python proc_approval.py URL THREAD_ID SIDE_FILE start|resume
Prints one JSON line: the state values and the pending interrupts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from langgraph.types import Command  # noqa: E402

from langgraph_warden.checkpointers import WardenSaver  # noqa: E402
from langgraph_warden.keys import EphemeralKeyStore  # noqa: E402
from tests.support.graphs_chain import build_approval  # noqa: E402


def main(url: str, thread_id: str, side_file: str, phase: str) -> None:
    config = {"configurable": {"thread_id": thread_id}}
    with WardenSaver.from_url(url, key_store=EphemeralKeyStore()) as saver:
        graph = build_approval(side_file).compile(checkpointer=saver)
        if phase == "start":
            out = graph.invoke({"log": [], "request": "wire-transfer"}, config)
        elif phase == "resume":
            out = graph.invoke(Command(resume="approved-by-alice"), config)
        else:
            raise SystemExit(f"unknown phase {phase!r}")
        snap = graph.get_state(config)
        print(
            json.dumps(
                {
                    "log": out.get("log"),
                    "decision": out.get("decision"),
                    "interrupts": [i.value for i in out.get("__interrupt__", ())],
                    "next": list(snap.next),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main(*sys.argv[1:5])
