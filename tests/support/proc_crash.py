"""Subprocess: run the 6-node chain and die by SIGKILL in node 4 (``crash``), or resume it (``resume``).

Usage: python proc_crash.py URL THREAD_ID SIDE_FILE crash|resume

``crash`` uses ``durability="sync"``: every step's checkpoint is committed
before the next step starts, so the kill loses at most the step in flight.
``resume`` calls ``graph.invoke(None, config)`` in a fresh process and prints
the final state as one JSON line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from langgraph_warden.checkpointers import WardenSaver  # noqa: E402
from langgraph_warden.keys import EphemeralKeyStore  # noqa: E402
from tests.support.graphs_chain import build_chain  # noqa: E402


def main(url: str, thread_id: str, side_file: str, phase: str) -> None:
    config = {"configurable": {"thread_id": thread_id}}
    with WardenSaver.from_url(url, key_store=EphemeralKeyStore()) as saver:
        if phase == "crash":
            graph = build_chain(side_file, kill_at=4).compile(checkpointer=saver)
            graph.invoke({"log": []}, config, durability="sync")
            raise SystemExit("node 4 should have killed this process")
        if phase != "resume":
            raise SystemExit(f"unknown phase {phase!r}")
        graph = build_chain(side_file).compile(checkpointer=saver)
        before = graph.get_state(config)
        out = graph.invoke(None, config, durability="sync")
        print(json.dumps({"resumed_from_next": list(before.next), "log": out["log"]}), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
