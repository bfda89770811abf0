"""Subprocess: load a thread written by the strict-msgpack graph and describe the types that came back.

Usage: LANGGRAPH_STRICT_MSGPACK=true python proc_strict_read.py URL THREAD_ID
(the env var is read by langgraph at import time, hence a fresh process).
Prints one JSON line: {"strict": bool, "values": {field: {type, repr}}}.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from langgraph.checkpoint.serde import _msgpack  # noqa: E402

from langgraph_warden.checkpointers import WardenSaver  # noqa: E402
from langgraph_warden.keys import EphemeralKeyStore  # noqa: E402
from tests.support.graphs_strict import build_strict, describe  # noqa: E402


def main(url: str, thread_id: str) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with WardenSaver.from_url(url, key_store=EphemeralKeyStore()) as saver:
        graph = build_strict().compile(checkpointer=saver)
        snap = graph.get_state({"configurable": {"thread_id": thread_id}})
        print(json.dumps({"strict": _msgpack.STRICT_MSGPACK_ENABLED, "values": describe(snap.values)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
