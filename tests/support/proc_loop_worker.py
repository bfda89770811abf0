"""Worker for the concurrency tests: run the loop graph for ``steps`` super-steps on one thread.

Importable (``run_worker`` is the multiprocessing target; it is preloaded in a
forkserver so 16 workers start in well under a second) and runnable:
``python proc_loop_worker.py URL THREAD_ID STEPS``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from langgraph_warden.checkpointers import WardenSaver  # noqa: E402
from langgraph_warden.keys import EphemeralKeyStore  # noqa: E402
from tests.support.graphs_chain import build_loop  # noqa: E402


def run_worker(url: str, thread_id: str, steps: int, barrier=None, results=None) -> None:
    t0 = time.monotonic()
    with WardenSaver.from_url(url, key_store=EphemeralKeyStore()) as saver:
        graph = build_loop(steps).compile(checkpointer=saver)
        if barrier is not None:
            barrier.wait(timeout=60)  # every worker writes at the same moment
        out = graph.invoke(
            {"count": 0, "trail": []},
            {"configurable": {"thread_id": thread_id}, "recursion_limit": steps + 10},
            durability="sync",
        )
        if out["count"] != steps or out["trail"] != list(range(1, steps + 1)):
            raise SystemExit(f"{thread_id}: wrong final state {out!r}")
    if results is not None:
        results.put((thread_id, time.monotonic() - t0))


if __name__ == "__main__":
    run_worker(sys.argv[1], sys.argv[2], int(sys.argv[3]))
