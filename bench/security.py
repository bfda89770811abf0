"""What the security guarantees cost: first touch of a thread, head store, call claims.

Run from the repository root::

    python bench/security.py                      # SQLite in a temporary directory
    python bench/security.py --db postgresql+psycopg://postgres@127.0.0.1:5432/test

(a) **First touch of a thread.** A process verifies a thread's chain — from its newest signed
    chain snapshot (or genesis, before the first) to a head signed by a trusted key — before
    anything it holds decides or resumes (then it only checks what is new). Threads of 10, 1,000 and 100,000 events, written through the real
    ledger as guarded tool calls leave them (a signed head per 5 events, a ~400-byte result in
    each ``tool.completed``). Timed in a new ``Ledger`` each round: ``verified_position`` (read
    + verify from genesis), against the peer a reader without verification would be — the same
    rows read with ``SELECT`` and parsed (``EventSummary.from_bodies``), as the guard did before.
    Then the next touch (nothing new; one event new, written by another process).

(b) **Head store** (``FileHeadStore``): one save of a signed head (write, fsync, rename), and
    ``anchor_now`` (verify the thread's new head, read it back, check its signature, save).

(c) **Call claims**: acquire + release of one call's cross-process lock (SQLite: ``fcntl``
    byte lock; PostgreSQL: advisory lock round trips).

Prints one table per part; numbers are medians of the rounds, in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from langgraph_warden.anchors import FileHeadStore  # noqa: E402
from langgraph_warden.checkpointers import WardenSaver  # noqa: E402
from langgraph_warden.checkpointers.ledger import Ledger  # noqa: E402
from langgraph_warden.checkpointers.rawsql import Raw  # noqa: E402
from langgraph_warden.events import EventDraft, EventKind, EventSummary  # noqa: E402
from langgraph_warden.keys import EphemeralKeyStore  # noqa: E402

RESULT = {"type": "json", "data": "x" * 400}


def seed(saver: WardenSaver, thread: str, events: int) -> None:
    """``events`` events as guarded calls leave them: 5 per call, one signed head per call."""
    calls = max(1, events // 5)
    saver.ledger.verified_position(thread)  # as the process writing a real thread has: its appends carry chain snapshots
    for i in range(calls):
        base = {"tool_call_id": f"c{i}", "tool": "lookup", "args_digest": "sha256:" + "0" * 64}
        drafts = [
            EventDraft(EventKind.POLICY_DECIDED, {**base, "decision": {"allow": True, "require_approval": False}}, subject=f"c{i}"),
            EventDraft(EventKind.CREDENTIAL_ISSUED, {**base, "lease_id": f"l{i}"}, subject=f"l{i}"),
            EventDraft(EventKind.TOOL_STARTED, {**base, "attempt": 1}, subject=f"c{i}"),
            EventDraft(EventKind.TOOL_COMPLETED, {**base, "attempt": 1, "status": "success", "result": RESULT}, subject=f"c{i}"),
            EventDraft(EventKind.CREDENTIAL_REVOKED, {**base, "lease_id": f"l{i}"}, subject=f"l{i}"),
        ][: events - 5 * i if i == calls - 1 and events % 5 else 5]
        saver.ledger.append(thread, drafts)


def fresh_ledger(saver: WardenSaver, keys: EphemeralKeyStore, **kw: Any) -> Ledger:
    """A ledger with nothing verified yet: what a new process has."""
    return Ledger(saver.engine, saver.async_engine, keys, saver.ledger.workload_id, **kw)


def unverified_read(saver: WardenSaver, thread: str) -> int:
    """The peer: the rows a guard folded before, read and parsed, nothing checked."""
    with saver.engine.connect() as conn:
        rows = Raw(conn).all("SELECT seq, kind, body FROM warden_events WHERE thread_id = ? ORDER BY seq", (thread,))
    return len(EventSummary.from_bodies(rows))


def ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:,.2f}"


def timed(fn, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", help="database URL (default: a SQLite file in a temporary directory)")
    ap.add_argument("--sizes", default="10,1000,100000")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="warden-bench-security-"))
    url = args.db or f"sqlite:///{tmp / 'security.db'}"
    keys = EphemeralKeyStore()
    with WardenSaver.from_url(url, key_store=keys) as saver:
        backend = saver.engine.dialect.name
        print(f"(a) first touch of a thread — {backend}; median ms of the rounds")
        print(f"{'events':>8} | {'verified (first touch)':>22} | {'unverified read (peer)':>22} | {'ratio':>6} | "
              f"{'next touch, nothing new':>23} | {'next touch, 1 new event':>23}")
        for size in [int(s) for s in args.sizes.split(",")]:
            thread = f"bench-{size}-{uuid.uuid4().hex[:6]}"
            seed(saver, thread, size)
            rounds = 3 if size >= 100_000 else 15
            first = []
            for _ in range(rounds):
                ledger = fresh_ledger(saver, keys)
                t0 = time.perf_counter()
                ledger.verified_position(thread)
                first.append(time.perf_counter() - t0)
            peer = timed(lambda: unverified_read(saver, thread), rounds)
            ledger = fresh_ledger(saver, keys)
            ledger.verified_position(thread)
            again = timed(lambda: ledger.verified_position(thread), 30)
            new_one = []
            for i in range(15):
                saver.ledger.append(thread, [EventDraft("note", {"i": i})])  # another "process" (its own ledger)
                t0 = time.perf_counter()
                ledger.verified_position(thread)
                new_one.append(time.perf_counter() - t0)
            print(f"{size:>8,} | {ms(first):>22} | {ms(peer):>22} | {statistics.median(first) / statistics.median(peer):>5.2f}x | "
                  f"{ms(again):>23} | {ms(new_one):>23}")

        print("\n(b) head store (FileHeadStore on the local disk); median ms")
        store = FileHeadStore(tmp / "heads")
        thread = f"anchor-{uuid.uuid4().hex[:6]}"
        seed(saver, thread, 50)
        head = saver.ledger.head(thread)
        assert head is not None
        saves = []
        for i in range(30):
            h = type(head)(head.thread_id, head.seq + i + 1, head.hash, head.key_id, head.signature, head.key_store)
            t0 = time.perf_counter()
            store.save([h])
            saves.append(time.perf_counter() - t0)
        anchored = fresh_ledger(saver, keys, head_store=FileHeadStore(tmp / "heads2"))
        anchored.verified_position(thread)
        anchors = []
        for i in range(30):
            saver.ledger.append(thread, [EventDraft("note", {"i": i})])
            t0 = time.perf_counter()
            anchored.anchor_now(thread)
            anchors.append(time.perf_counter() - t0)
        print(f"{'save one head':>28} | {ms(saves):>8}")
        print(f"{'anchor_now (a paused run)':>28} | {ms(anchors):>8}")

        print("\n(c) call claims: acquire + release of one call's lock; median ms")
        claims = saver.ledger.claims
        assert claims is not None
        n = iter(range(1_000_000))
        claim = timed(lambda: (lambda c: (claims.acquire("t", c, 1.0), claims.release("t", c)))(f"c{next(n)}"), 200)
        print(f"{type(claims).__name__:>28} | {ms(claim):>8}")


if __name__ == "__main__":
    main()
