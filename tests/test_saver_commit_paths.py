"""The saver's fast commit paths: SQLite group commit and PostgreSQL's one-statement append.

Both are optimisations that must not change what is stored: every request is
durable when it returns, a failing request affects nobody else, and whatever
path a commit took, the chain verifies and resume-time verification passes.
"""

from __future__ import annotations

import threading
import uuid

import pytest
from langgraph.checkpoint.base import empty_checkpoint

from langgraph_warden.checkpointers import WardenSaver
from langgraph_warden.checkpointers.direct_sqlite import direct_sqlite
from langgraph_warden.events import EventDraft
from langgraph_warden.keys import EphemeralKeyStore

from .conftest import pg_schema_url, requires_pg, sqlite_url


def _checkpoint(counter: int) -> dict:
    from langgraph.checkpoint.base.id import uuid6

    cp = empty_checkpoint()
    cp["id"] = str(uuid6())
    cp["channel_values"] = {"counter": counter}
    cp["channel_versions"] = {"counter": counter + 1}
    return cp


def _put_chain(saver: WardenSaver, thread_id: str, steps: int) -> dict:
    config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    for i in range(steps):
        config = saver.put(config, _checkpoint(i), {"source": "loop", "step": i}, {})
        saver.put_writes(config, [("counter", i + 1)], f"task-{i}")
    return config


# ------------------------------------------------------------------ SQLite group commit
def test_group_commit_batches_concurrent_writers_and_keeps_every_write(tmp_path):
    url = sqlite_url(tmp_path)
    with WardenSaver.from_url(url, key_store=EphemeralKeyStore()) as saver:
        direct = direct_sqlite(saver.engine)
        before_commits, before_requests = direct.commits, direct.requests
        threads = [f"gc-{i}" for i in range(8)]
        barrier = threading.Barrier(len(threads))
        errors: list[BaseException] = []

        def work(tid: str) -> None:
            try:
                barrier.wait()
                _put_chain(saver, tid, 15)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(t,)) for t in threads]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
        assert not errors, errors
        requests = direct.requests - before_requests
        commits = direct.commits - before_commits
        assert requests == len(threads) * 15 * 2
        assert commits < requests, "concurrent writers should share commits"
        for tid in threads:
            tup = saver.get_tuple({"configurable": {"thread_id": tid}})
            assert tup is not None and tup.checkpoint["channel_values"]["counter"] == 14
            assert tup.pending_writes == [("task-14", "counter", 15)]
        report = saver.ledger.verify()
        assert report.ok, report.findings
        assert report.events == len(threads) * 15 * 2

    # A new process (a new saver, empty trust cache) verifies everything from the chain.
    with WardenSaver.from_url(url, key_store=EphemeralKeyStore()) as again:
        for tid in threads:
            assert again.get_tuple({"configurable": {"thread_id": tid}}) is not None


def _one_batch(
    direct, requests: list[tuple[str, object]], holder: object = None
) -> tuple[dict[str, object], int]:
    """Queue ``requests`` (name, fn), in this order, while a request leads a transaction; then let them run.

    Returns each request's result or exception by name (the leader's as "hold"), and how
    many commits carried them all, the leader's included: requests queued while a leader
    runs join its transaction. ``holder(tx)`` is what the leader writes first.
    """
    gate, release = threading.Event(), threading.Event()
    results: dict[str, object] = {}

    def hold(tx):
        out = holder(tx) if holder is not None else None
        gate.set()
        release.wait(10)
        return out

    def run(name, fn):
        try:
            results[name] = direct.run_write(fn)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            results[name] = exc

    workers = [threading.Thread(target=run, args=("hold", hold))]
    workers[0].start()
    assert gate.wait(10)
    for i, (name, fn) in enumerate(requests, start=1):
        workers.append(threading.Thread(target=run, args=(name, fn)))
        workers[-1].start()
        while len(direct._queue) < i:  # queued in this order
            threading.Event().wait(0.002)
    commits = direct.commits
    release.set()
    for t in workers:
        t.join(10)
    return results, direct.commits - commits


def _appends(ledger, thread_id: str, kind: str):
    return lambda tx: ledger.append_in(tx, thread_id, [EventDraft(kind=kind, payload={})])


def _fails_after_appending(ledger, thread_id: str):
    def boom(tx):
        ledger.append_in(tx, thread_id, [EventDraft(kind="test.partial", payload={})])
        raise RuntimeError("request failed after writing")

    return boom


def test_group_commit_failing_request_rolls_back_alone(tmp_path):
    with WardenSaver.from_url(sqlite_url(tmp_path), key_store=EphemeralKeyStore()) as saver:
        ledger = saver.ledger
        results, commits = _one_batch(
            direct_sqlite(saver.engine),
            [("bad", _fails_after_appending(ledger, "gc-bad")), ("ok", _appends(ledger, "gc-ok", "test.ok"))],
        )
        assert isinstance(results["bad"], RuntimeError)
        assert [e.kind for e in results["ok"]] == ["test.ok"]
        assert commits == 1  # both queued requests in the leader's commit
        assert ledger.events("gc-bad") == []  # rolled back to its savepoint
        assert [e.kind for e in ledger.events("gc-ok")] == ["test.ok"]
        assert ledger.verify().ok


def test_group_commit_signs_each_threads_final_head_once(tmp_path):
    """Several requests on one thread in one transaction: one signature, on the head that commits.

    The last request on thread A fails after appending: its rollback must hand the
    signature back to the head the earlier requests left, or the chain would end unsigned.
    """
    with WardenSaver.from_url(sqlite_url(tmp_path), key_store=EphemeralKeyStore()) as saver:
        ledger = saver.ledger
        results, commits = _one_batch(
            direct_sqlite(saver.engine),
            [
                ("a1", _appends(ledger, "sig-a", "test.a1")),
                ("a2", _appends(ledger, "sig-a", "test.a2")),
                ("b1", _appends(ledger, "sig-b", "test.b1")),
                ("bad", _fails_after_appending(ledger, "sig-a")),
            ],
        )
        assert isinstance(results["bad"], RuntimeError)
        assert commits == 1
        with saver.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT thread_id, seq, kind, signature IS NOT NULL FROM warden_events ORDER BY thread_id, seq"
            ).all()
        assert [tuple(r) for r in rows] == [
            ("sig-a", 1, "test.a1", 0),  # replaced as the thread's head by a2 in the same transaction
            ("sig-a", 2, "test.a2", 1),  # the head the transaction committed: signed
            ("sig-b", 1, "test.b1", 1),
        ]
        assert ledger.verify().ok
        head = ledger.head("sig-a")
        assert head is not None and head.seq == 2


def test_requests_queued_while_a_lone_leader_runs_join_its_commit(tmp_path):
    """Requests queued while a lone leader runs join its transaction; one signature per thread.

    The head is signed just before COMMIT, so the leader's event, superseded by the
    joiner's on the same thread, carries none. A joiner that fails rolls back alone
    and hands the signature back; the leader's write still commits.
    """
    with WardenSaver.from_url(sqlite_url(tmp_path), key_store=EphemeralKeyStore()) as saver:
        ledger = saver.ledger
        direct = direct_sqlite(saver.engine)
        before = direct.requests
        results, commits = _one_batch(
            direct,
            [("join", _appends(ledger, "lj", "test.join")), ("bad", _fails_after_appending(ledger, "lj"))],
            holder=_appends(ledger, "lj", "test.lead"),
        )
        assert [e.kind for e in results["hold"]] == ["test.lead"]
        assert [e.kind for e in results["join"]] == ["test.join"]
        assert isinstance(results["bad"], RuntimeError)
        assert commits == 1 and direct.requests - before == 3
        with saver.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT seq, kind, signature IS NOT NULL FROM warden_events WHERE thread_id = 'lj' ORDER BY seq"
            ).all()
        assert [tuple(r) for r in rows] == [(1, "test.lead", 0), (2, "test.join", 1)]
        assert ledger.verify(signatures="all").ok
        assert ledger.head("lj").seq == 2


def test_a_lone_append_signs_its_head_in_its_row_and_a_joiner_on_its_thread_signs_the_head_it_leaves(tmp_path):
    """``append_in(sign_now=True)`` (what a lone ``Ledger.append`` uses) signs in the inserted row.

    A request that joins the transaction on the same thread leaves a newer head, which is
    signed before COMMIT; a joiner that fails rolls back and the lone append's head, signed in
    its row, is the one that commits. An earlier request's pending signature on the thread is
    dropped: its head is no longer the last.
    """
    with WardenSaver.from_url(sqlite_url(tmp_path), key_store=EphemeralKeyStore()) as saver:
        ledger = saver.ledger
        direct = direct_sqlite(saver.engine)

        def lone(thread_id: str, kind: str):
            return lambda tx: ledger.append_in(tx, thread_id, [EventDraft(kind=kind, payload={})], sign_now=True)

        def signed(thread_id: str) -> list[tuple]:
            with saver.engine.connect() as conn:
                return [tuple(r) for r in conn.exec_driver_sql(
                    "SELECT seq, kind, signature IS NOT NULL FROM warden_events WHERE thread_id = ? ORDER BY seq",
                    (thread_id,),
                ).all()]

        results, commits = _one_batch(direct, [("join", _appends(ledger, "sn-join", "test.join"))],
                                      holder=lone("sn-join", "test.lead"))
        assert commits == 1 and [e.kind for e in results["join"]] == ["test.join"]
        assert signed("sn-join") == [(1, "test.lead", 1), (2, "test.join", 1)]

        results, commits = _one_batch(direct, [("bad", _fails_after_appending(ledger, "sn-bad"))],
                                      holder=lone("sn-bad", "test.lead"))
        assert commits == 1 and isinstance(results["bad"], RuntimeError)
        assert signed("sn-bad") == [(1, "test.lead", 1)]

        results, commits = _one_batch(
            direct, [("first", _appends(ledger, "sn-last", "test.first")), ("lone", lone("sn-last", "test.lone"))])
        assert commits == 1
        assert signed("sn-last") == [(1, "test.first", 0), (2, "test.lone", 1)]

        report = ledger.verify(signatures="all")
        assert report.ok, report.findings
        assert [ledger.head(t).seq for t in ("sn-join", "sn-bad", "sn-last")] == [2, 1, 2]


def test_a_key_registered_by_a_request_that_rolls_back_is_registered_again(tmp_path):
    """A new signing key is registered in the first transaction that signs with it.

    If that request rolls back (its savepoint, in a group commit), so does the key's row: the
    ledger must not remember the key as registered, or later heads are signed by a key the
    database does not hold and the history no longer verifies.
    """
    store = EphemeralKeyStore()
    with WardenSaver.from_url(sqlite_url(tmp_path), key_store=store) as saver:
        ledger = saver.ledger
        store.rotate()  # a key the database has never seen (not via ledger.rotate_key)
        results, commits = _one_batch(direct_sqlite(saver.engine), [("bad", _fails_after_appending(ledger, "kr-a"))])
        assert isinstance(results["bad"], RuntimeError) and commits == 1
        ledger.append("kr-b", [EventDraft(kind="test.after", payload={})])
        report = ledger.verify()
        assert report.ok, report.findings
        assert [e.kind for e in ledger.events("kr-b")] == ["test.after"] and ledger.events("kr-a") == []


# ------------------------------------------------------------ reads
def _count(tx, thread_id: str) -> int:
    return tx.cursor.execute("SELECT count(*) FROM warden_events WHERE thread_id = ?", (thread_id,)).fetchone()[0]


def test_short_read_when_no_write_runs_uses_the_writers_connection(tmp_path):
    """Its page cache survives its own commits; a reader's is dropped by every commit."""
    with WardenSaver.from_url(sqlite_url(tmp_path), key_store=EphemeralKeyStore()) as saver:
        direct = direct_sqlite(saver.engine)
        saver.ledger.append("rd", [EventDraft(kind="test.one", payload={})])
        with direct.read(short=True) as tx:
            assert _count(tx, "rd") == 1
        assert direct._readers == []  # no reader connection was opened
        direct.run_write(lambda tx: saver.ledger.append_in(tx, "rd", [EventDraft(kind="test.two", payload={})]))
        with direct.read(short=True) as tx:
            assert _count(tx, "rd") == 2
        with direct.read() as tx:  # a read of unknown length stays off the writer's connection
            assert _count(tx, "rd") == 2
        assert len(direct._readers) == 1


def test_read_while_a_write_runs_takes_a_reader_and_sees_the_last_commit(tmp_path):
    with WardenSaver.from_url(sqlite_url(tmp_path), key_store=EphemeralKeyStore()) as saver:
        direct = direct_sqlite(saver.engine)
        saver.ledger.append("rw", [EventDraft(kind="test.one", payload={})])
        inside, release = threading.Event(), threading.Event()

        def slow(tx):
            saver.ledger.append_in(tx, "rw", [EventDraft(kind="test.two", payload={})])
            inside.set()
            release.wait(10)

        writer = threading.Thread(target=direct.run_write, args=(slow,))
        writer.start()
        try:
            assert inside.wait(10)
            with direct.read(short=True) as tx:  # does not wait for the write
                assert _count(tx, "rw") == 1
        finally:
            release.set()
            writer.join(10)
        with direct.read() as tx:
            assert _count(tx, "rw") == 2


def test_read_inside_a_write_transaction_does_not_nest_one(tmp_path):
    with WardenSaver.from_url(sqlite_url(tmp_path), key_store=EphemeralKeyStore()) as saver:
        direct = direct_sqlite(saver.engine)
        saver.ledger.append("rn", [EventDraft(kind="test.one", payload={})])

        def write_then_read(tx):
            saver.ledger.append_in(tx, "rn", [EventDraft(kind="test.two", payload={})])
            with direct.read(short=True) as other:
                return _count(other, "rn")  # a reader's snapshot: the last commit

        assert direct.run_write(write_then_read) == 1
        assert saver.ledger.verify().ok


# ------------------------------------------------------------ PostgreSQL one statement
@requires_pg
@pytest.mark.postgres
def test_one_statement_append_falls_back_when_another_writer_moved_the_head():
    url = pg_schema_url()
    with WardenSaver.from_url(url, key_store=EphemeralKeyStore()) as a, WardenSaver.from_url(
        url, key_store=EphemeralKeyStore(), setup=False
    ) as b:
        b.ledger.register_key()
        thread_id = f"pg-{uuid.uuid4().hex[:6]}"
        calls = {"ok": 0, "fallback": 0}
        for saver in (a, b):
            original = saver.ledger.try_append_one_statement

            def counting(*args, _orig=original, **kw):
                result = _orig(*args, **kw)
                calls["ok" if result is not None else "fallback"] += 1
                return result

            saver.ledger.try_append_one_statement = counting
        # Interleave two "processes" on one thread: each one's cached head goes stale in turn.
        config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        for i in range(6):
            saver = a if i % 2 == 0 else b
            config = saver.put(config, _checkpoint(i), {"source": "loop", "step": i}, {})
            saver.put_writes(config, [("counter", i + 1)], f"task-{i}")
        assert calls["fallback"] >= 4, calls
        assert calls["ok"] >= 4, calls
        report = a.ledger.verify()
        assert report.ok, report.findings
        assert report.events == 12
        assert [e.seq for e in a.ledger.events(thread_id)] == list(range(1, 13))
        tup = b.get_tuple({"configurable": {"thread_id": thread_id}})
        assert tup is not None and tup.checkpoint["channel_values"]["counter"] == 5


@requires_pg
@pytest.mark.postgres
def test_one_statement_put_is_idempotent_and_records_a_changed_reput():
    with WardenSaver.from_url(pg_schema_url(), key_store=EphemeralKeyStore()) as saver:
        thread_id = "pg-reput"
        base = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        cp = _checkpoint(1)
        saver.put(base, cp, {"source": "loop", "step": 1}, {})
        saver.put(base, cp, {"source": "loop", "step": 1}, {})  # same bytes: nothing new
        saved = saver.ledger.events(thread_id)
        assert [e.kind for e in saved] == ["checkpoint.saved"]
        changed = dict(cp, channel_values={"counter": 99})
        saver.put(base, changed, {"source": "loop", "step": 1}, {})
        saved = saver.ledger.events(thread_id)
        assert [e.payload["replaced"] for e in saved] == [False, True]
        cfg = {"configurable": {"thread_id": thread_id, "checkpoint_ns": "", "checkpoint_id": cp["id"]}}
        saver.put_writes(cfg, [("counter", 5)], "t1")
        saver.put_writes(cfg, [("counter", 6)], "t1")  # a regular write is never overwritten
        tup = saver.get_tuple(cfg)
        assert tup.checkpoint["channel_values"] == {"counter": 99}
        assert tup.pending_writes == [("t1", "counter", 5)]
        assert saver.ledger.verify().ok


# ------------------------------------------------------------ put_writes, partly stored already
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=[requires_pg, pytest.mark.postgres])])
def test_put_writes_partly_stored_keeps_regular_writes_and_records_only_what_changed(backend, tmp_path):
    """Insert-first put_writes: rows already stored are compared, new ones inserted, the event says which."""
    url = sqlite_url(tmp_path) if backend == "sqlite" else pg_schema_url()
    with WardenSaver.from_url(url, key_store=EphemeralKeyStore()) as saver:
        config = saver.put(
            {"configurable": {"thread_id": "pw", "checkpoint_ns": ""}}, _checkpoint(0), {"source": "loop", "step": 0}, {}
        )
        saver.put_writes(config, [("a", "first"), ("b", "first")], "task-1")
        # A replay: idx 0 and 1 exist (regular writes are never overwritten), idx 2 is new.
        saver.put_writes(config, [("a", "second"), ("b", "first"), ("c", "new")], "task-1")
        # Special channels are upserted: the error write changes, so it is replaced and recorded.
        saver.put_writes(config, [("__error__", "boom 1")], "task-2")
        saver.put_writes(config, [("__error__", "boom 2")], "task-2")
        saver.put_writes(config, [("__error__", "boom 2")], "task-2")  # same again: nothing to record

        tup = saver.get_tuple(config)
        assert tup is not None
        assert sorted(tup.pending_writes) == sorted(
            [("task-1", "a", "first"), ("task-1", "b", "first"), ("task-1", "c", "new"), ("task-2", "__error__", "boom 2")]
        )
        saved = [e for e in saver.ledger.events("pw") if e.kind == "writes.saved"]
        assert [(e.payload["task_id"], [r["channel"] for r in e.payload["rows"]]) for e in saved] == [
            ("task-1", ["a", "b"]),
            ("task-1", ["c"]),
            ("task-2", ["__error__"]),
            ("task-2", ["__error__"]),
        ]
        assert saver.ledger.verify().ok


def test_raw_timestamps_are_stored_as_sqlalchemy_stores_them():
    """The hot path formats SQLite DATETIME text itself; it must equal SQLAlchemy's own (read back as datetimes)."""
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import Column, DateTime, MetaData, Table, create_engine, insert

    from langgraph_warden.checkpointers.rawsql import DirectTx, Raw

    raw = Raw(DirectTx(None, True))
    engine = create_engine("sqlite://")
    table = Table("t", MetaData(), Column("d", DateTime))
    table.metadata.create_all(engine)
    for value in (
        datetime(2026, 1, 2, 3, 4, 5, 0, tzinfo=timezone.utc),
        datetime(999, 1, 2, 3, 4, 5, 7, tzinfo=timezone(timedelta(hours=5))),
        datetime.now(timezone.utc),
    ):
        with engine.begin() as conn:
            conn.execute(table.delete())
            conn.execute(insert(table).values(d=value.astimezone(timezone.utc).replace(tzinfo=None)))
            assert conn.exec_driver_sql("SELECT d FROM t").scalar() == raw.timestamp(value)
