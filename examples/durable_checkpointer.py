"""Swap in the durable, signed checkpointer: ``WardenSaver`` instead of ``SqliteSaver``, in one line.

What it shows
-------------
A plain LangGraph graph (no tools, no agent) checkpointed by ``WardenSaver``::

    # before:  checkpointer = SqliteSaver(sqlite3.connect("app.db", check_same_thread=False))
    #     or:  checkpointer = PostgresSaver.from_conn_string("postgresql://app@db/app")
    checkpointer = WardenSaver.from_url("sqlite:///app.db", key_store=EphemeralKeyStore())
    #     or:  WardenSaver.from_url("postgresql+psycopg://app@db/app", ...)

Everything else is ordinary LangGraph:

1. a **sync** run (``graph.invoke``) on one thread;
2. an **async** run (``await graph.ainvoke``) on another thread, with the same saver;
3. ``graph.get_state_history(config)`` — every checkpoint, read back and verified
   against the signed event history before it is returned;
4. ``checkpointer.ledger.verify()`` — offline verification of the whole history
   (hash chain, Ed25519 signatures, rows match their recorded digests);
5. the same from a shell, in another process: ``warden audit verify --db URL``
   (exit code 0 when the history verifies, 1 on any failure).

``EphemeralKeyStore()`` is an in-memory signing key for demos and tests; in
production leave ``key_store`` out and the key lives in the OS keyring.

Run it (from the repository root)::

    python examples/durable_checkpointer.py                      # SQLite file in a temp dir
    python examples/durable_checkpointer.py --db sqlite:///x.db  # or postgresql+psycopg://...

Exit code 0 when both runs completed, the history has every step and verification passed.
"""

from __future__ import annotations

import argparse
import asyncio
import operator
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph

from langgraph_warden import EphemeralKeyStore, WardenSaver


class State(TypedDict):
    text: str
    steps: Annotated[list[str], operator.add]


def build(checkpointer):
    def draft(state: State) -> dict:
        return {"text": state["text"].strip(), "steps": ["draft"]}

    def review(state: State) -> dict:
        return {"text": state["text"].capitalize(), "steps": ["review"]}

    def publish(state: State) -> dict:
        return {"text": state["text"] + " [published]", "steps": ["publish"]}

    b = StateGraph(State)
    for name, fn in (("draft", draft), ("review", review), ("publish", publish)):
        b.add_node(name, fn)
    b.add_edge(START, "draft")
    b.add_edge("draft", "review")
    b.add_edge("review", "publish")
    b.add_edge("publish", END)
    return b.compile(checkpointer=checkpointer)


def db_url(db: str | None) -> str:
    if db is None:
        return f"sqlite:///{Path(tempfile.mkdtemp(prefix='warden-example-')) / 'warden.db'}"
    return db if "://" in db else f"sqlite:///{Path(db).expanduser().resolve()}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", help="database URL or SQLite path (default: a new SQLite file in a temp dir)")
    url = db_url(ap.parse_args(argv).db)
    print(f"database: {url}")

    # The one line that changes:
    with WardenSaver.from_url(url, key_store=EphemeralKeyStore()) as checkpointer:
        graph = build(checkpointer)

        print("1. sync run   (graph.invoke)")
        sync_cfg = {"configurable": {"thread_id": "post-sync"}}
        out = graph.invoke({"text": "  hello from sync  ", "steps": []}, sync_cfg)
        print(f"   -> {out['text']!r} via {out['steps']}")

        print("2. async run  (await graph.ainvoke)")
        async_cfg = {"configurable": {"thread_id": "post-async"}}
        aout = asyncio.run(graph.ainvoke({"text": "  hello from async  ", "steps": []}, async_cfg))
        print(f"   -> {aout['text']!r} via {aout['steps']}")

        print("3. graph.get_state_history(config)  (each checkpoint verified on read)")
        history = list(graph.get_state_history(sync_cfg))
        for snap in history:
            print(f"   step {snap.metadata['step']:>2}  next={list(snap.next)!s:14} steps so far={snap.values.get('steps')}")
        ahistory = asyncio.run(_collect(graph.aget_state_history(async_cfg)))
        print(f"   async thread: {len(ahistory)} checkpoints (graph.aget_state_history)")

        print("4. checkpointer.ledger.verify()")
        report = checkpointer.ledger.verify()
        print(f"   {report.events} events in {len(report.threads)} threads: {'OK' if report.ok else 'FAILED'}")
        for finding in report.findings:
            print(f"   - {finding}")
        head = checkpointer.ledger.head("post-sync")
        print(f"   signed head of post-sync: seq {head.seq} {head.hash[:23]}... key {head.key_id}")

    print(f"5. $ warden audit verify --db {url}")
    # `python -m langgraph_warden.cli` is the `warden` command; needs only the database, no key.
    cli = subprocess.run([sys.executable, "-m", "langgraph_warden.cli", "audit", "verify", "--db", url],
                         capture_output=True, text=True, timeout=60)
    for line in (cli.stdout + cli.stderr).splitlines():
        print(f"   | {line}")
    print(f"   exit code {cli.returncode}")

    ok = (
        out["steps"] == ["draft", "review", "publish"]
        and aout["steps"] == ["draft", "review", "publish"]
        and len(history) == 5 == len(ahistory)
        and report.ok
        and cli.returncode == 0
    )
    print("RESULT: sync + async runs checkpointed, history read back, verification OK" if ok else "RESULT: FAILED")
    return 0 if ok else 1


async def _collect(aiter):
    return [s async for s in aiter]


if __name__ == "__main__":
    sys.exit(main())
