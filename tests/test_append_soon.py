"""``Ledger.append_soon``: an append that returns before its commit, for records whose loss is safe.

The guard records a call's outcome this way (one fsync less on the tool call's path). What it
must keep: the events commit, signed, in order before every later write of the process and
before any later read of the ledger; they commit on their own when nothing else writes, and at a
normal interpreter exit; a failure is reported, never raised into an unrelated caller. (Losing
them in a crash is covered by the SIGKILL trials, kill point ``completion_queued``.)
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

from langgraph_warden.checkpointers.direct_sqlite import direct_sqlite
from langgraph_warden.events import DeferringEventSink, EventDraft, EventKind
from langgraph_warden.warden import Warden

from .conftest import sqlite_url


def _draft(n: int) -> EventDraft:
    return EventDraft(kind=EventKind.TOOL_COMPLETED, payload={"tool_call_id": f"c{n}", "n": n}, subject=f"c{n}")


def _committed(path: str, thread_id: str) -> list[int]:
    """Seqs committed for the thread, read on a connection of our own (no flush on the way)."""
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT seq FROM warden_events WHERE thread_id = ? ORDER BY seq", (thread_id,))]
    finally:
        conn.close()


def _held(direct) -> tuple[threading.Event, threading.Event, threading.Thread]:
    """Hold the database's write lock in another thread until ``release`` is set."""
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with direct._lock:
            holding.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert holding.wait(5)
    return holding, release, t


def _read_meanwhile(ledger, thread_id: str) -> tuple[threading.Thread, list[list[int]]]:
    """Start a reader of the thread's seqs in another thread (it may block on a flush); join it later."""
    seen: list[list[int]] = []
    reader = threading.Thread(target=lambda: seen.append([e.seq for e in ledger.events(thread_id)]))
    reader.start()
    time.sleep(0.05)
    return reader, seen


def test_the_ledger_is_a_deferring_sink(tmp_path):
    with Warden.open(sqlite_url(tmp_path), ephemeral_keys=True) as w:
        assert isinstance(w.ledger, DeferringEventSink)


def test_queued_events_commit_before_a_later_write_in_the_same_order(tmp_path):
    with Warden.open(sqlite_url(tmp_path), ephemeral_keys=True) as w:
        direct = direct_sqlite(w.saver.engine)
        w.ledger.append("t", [_draft(0)])
        _, release, holder = _held(direct)
        w.ledger.append_soon("t", [_draft(1)])  # returns at once: nobody can commit now
        assert _committed(direct.path, "t") == [1]
        later = threading.Thread(target=w.ledger.append, args=("t", [_draft(2)]))
        later.start()
        time.sleep(0.05)
        commits = direct.commits
        release.set()
        holder.join()
        later.join(10)
        assert _committed(direct.path, "t") == [1, 2, 3]
        got = [(e.seq, e.payload["n"]) for e in w.ledger.events("t")]
        assert got == [(1, 0), (2, 1), (3, 2)]  # the queued append first, then the later one
        assert direct.commits - commits <= 2
        assert w.ledger.verify(thread_id="t", signatures="all").ok


def test_a_read_of_the_ledger_sees_what_was_queued_before_it(tmp_path):
    with Warden.open(sqlite_url(tmp_path), ephemeral_keys=True) as w:
        direct = direct_sqlite(w.saver.engine)
        _, release, holder = _held(direct)
        w.ledger.append_soon("t", [_draft(1)])
        reader, seen = _read_meanwhile(w.ledger, "t")
        release.set()
        holder.join()
        reader.join(10)
        assert seen == [[1]]


def test_a_read_waits_for_a_queued_batch_already_being_committed(tmp_path):
    # The flusher has taken the request off the queue and is inside its transaction: the queue is
    # empty, yet the read must wait for that commit.
    with Warden.open(sqlite_url(tmp_path), ephemeral_keys=True) as w:
        direct = direct_sqlite(w.saver.engine)
        inside, go = threading.Event(), threading.Event()

        def slow(tx):
            inside.set()
            assert go.wait(5)
            return w.ledger.append_in(tx, "t", [_draft(1)])

        direct.submit(slow)
        assert inside.wait(5)
        reader, seen = _read_meanwhile(w.ledger, "t")
        go.set()
        reader.join(10)
        assert seen == [[1]]


def test_queued_events_commit_on_their_own_signed(tmp_path):
    with Warden.open(sqlite_url(tmp_path), ephemeral_keys=True) as w:
        direct = direct_sqlite(w.saver.engine)
        w.ledger.append_soon("t", [_draft(1), _draft(2)])
        deadline = time.monotonic() + 5
        while _committed(direct.path, "t") != [1, 2] and time.monotonic() < deadline:
            time.sleep(0.005)
        assert _committed(direct.path, "t") == [1, 2]
        head = w.ledger.head("t")
        assert head is not None and head.seq == 2  # the transaction's head is signed
        assert w.ledger.verify(thread_id="t", signatures="all").ok


def test_a_failed_queued_append_is_logged_and_nobody_else_fails(tmp_path, caplog):
    with Warden.open(sqlite_url(tmp_path), ephemeral_keys=True) as w:
        direct = direct_sqlite(w.saver.engine)
        _, release, holder = _held(direct)
        bad = EventDraft(kind=EventKind.TOOL_COMPLETED, payload={"x": float("nan")}, subject="c9")  # not encodable
        with caplog.at_level(logging.ERROR, logger="langgraph_warden.checkpointers.ledger"):
            w.ledger.append_soon("t", [bad])
            w.ledger.append_soon("u", [_draft(1)])
            release.set()
            holder.join()
            w.ledger.append("t", [_draft(2)])  # the same thread goes on
        assert _committed(direct.path, "t") == [1] and _committed(direct.path, "u") == [1]
        assert [e.payload["n"] for e in w.ledger.events("t")] == [2]
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "tool.completed" in errors[0] and "'t'" in errors[0], errors
        assert w.ledger.verify(signatures="all").ok


def test_queued_events_are_committed_at_a_normal_exit(tmp_path):
    url = sqlite_url(tmp_path)
    script = textwrap.dedent(
        f"""
        from langgraph_warden.checkpointers import direct_sqlite
        from langgraph_warden.events import EventDraft, EventKind
        from langgraph_warden.warden import Warden

        direct_sqlite.DirectSqlite._flush_loop = lambda self: None  # no background flusher: only the exit hook commits
        w = Warden.open({url!r}, ephemeral_keys=True)
        w.ledger.append_soon("t", [EventDraft(kind=EventKind.TOOL_COMPLETED, payload={{"n": 1}}, subject="c1")])
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert _committed(url.removeprefix("sqlite:///"), "t") == [1]


def test_a_read_inside_a_write_transaction_does_not_flush_into_it(tmp_path):
    # The writer connection is mid-transaction: flushing there would nest a transaction (and the
    # failure would roll the outer one back). The read goes on; the queued append commits after.
    with Warden.open(sqlite_url(tmp_path), ephemeral_keys=True) as w:
        def inside(tx):
            w.ledger.append_in(tx, "t", [_draft(1)])
            w.ledger.append_soon("q", [_draft(2)])
            return [e.seq for e in w.ledger.events("q")]

        assert w.ledger.transaction(inside) == []
        assert [e.seq for e in w.ledger.events("t")] == [1] and [e.seq for e in w.ledger.events("q")] == [1]
        assert w.ledger.verify(signatures="all").ok
