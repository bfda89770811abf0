"""Chain snapshots: a process's first touch of a thread costs the same at any thread length.

Every ``SNAPSHOT_EVERY`` events the ledger appends a ``chain.snapshot`` — the fold resume needs
(the newest checkpoints and their writes), signed with its transaction. A new process starts
at the newest one and verifies only the rows from it to the signed head; ``verify`` replays the
whole chain and recomputes every snapshot, so a buggy one is caught, and a forged one breaks the
chain. SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from sqlalchemy import text

from langgraph_warden.checkpointers import WardenSaver
from langgraph_warden.checkpointers import event_reads as event_reads_module
from langgraph_warden.checkpointers.trust import CHAIN_SNAPSHOT, CHAIN_SNAPSHOT_SUBJECT, SNAPSHOT_EVERY
from langgraph_warden.errors import IntegrityError
from langgraph_warden.events import EventDraft, EventKind
from langgraph_warden.keys import EphemeralKeyStore

from .support import attacker


def _grow(saver: WardenSaver, thread: str, puts: int) -> str:
    """``puts`` checkpoints (each with one write) on a thread; the id of the newest."""
    saver.ledger.verified_position(thread)  # this process has verified it: its appends may carry snapshots
    cfg = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    for i in range(puts):
        cp = empty_checkpoint()
        cfg = saver.put(cfg, cp, {"source": "loop", "step": i}, {})
        saver.put_writes(cfg, [("x", i)], task_id=f"task-{i}")
    return cfg["configurable"]["checkpoint_id"]


def _reads(monkeypatch) -> list[int]:
    """Count the event rows a ledger reads to verify (every verified read goes through chain_rows)."""
    counts: list[int] = []
    real = event_reads_module.chain_rows

    def counting(raw, sql, params):
        rows = real(raw, sql, params)
        counts.append(len(rows))
        return rows

    monkeypatch.setattr(event_reads_module, "chain_rows", counting)
    return counts


@pytest.fixture
def keys() -> EphemeralKeyStore:
    return EphemeralKeyStore()


SHORT, LONG = SNAPSHOT_EVERY // 2 + 10, 3 * SNAPSHOT_EVERY  # puts per thread


def test_a_first_touch_reads_from_the_newest_snapshot_at_any_length(db_url, keys, monkeypatch):
    with WardenSaver.from_url(db_url, key_store=keys) as saver:
        newest = {n: _grow(saver, f"t-{n}", n) for n in (SHORT, LONG)}
        assert saver.ledger.verify().ok  # every snapshot recomputed from the events before it
        snaps = saver.ledger.events(f"t-{LONG}", kinds=[CHAIN_SNAPSHOT])
        assert len(snaps) >= 4 and all(s.payload["covers"] == s.seq - 1 for s in snaps)
    read_per_thread = {}
    for thread, puts in ((f"t-{SHORT}", SHORT), (f"t-{LONG}", LONG)):
        counts = _reads(monkeypatch)
        with WardenSaver.from_url(db_url, key_store=keys) as fresh:  # a new process: nothing verified
            tup = fresh.get_tuple({"configurable": {"thread_id": thread}})
            assert tup is not None and tup.config["configurable"]["checkpoint_id"] == newest[puts]
            assert tup.pending_writes == [(f"task-{puts - 1}", "x", puts - 1)]
        read_per_thread[thread] = sum(counts)
        monkeypatch.undo()
    # SHORT puts (two events each) with no snapshot yet: all read; LONG puts: only the events since the newest snapshot.
    assert read_per_thread[f"t-{LONG}"] <= SNAPSHOT_EVERY + 8 < read_per_thread[f"t-{SHORT}"] + SNAPSHOT_EVERY


def test_a_buggy_snapshot_is_caught_by_verify(db_url, keys):
    """A snapshot signed by the key holder but recording something else (a bug): resume trusts
    it, the offline verifier recomputes it and says so."""
    with WardenSaver.from_url(db_url, key_store=keys) as saver:
        _grow(saver, "buggy", 10)
        (last,) = saver.ledger.events("buggy")[-1:]
        wrong = {"covers": last.seq, "trust": {"latest": {"": "forged"}, "digests": [["", "forged", "sha256:00"]], "writes": []}}
        saver.ledger.append("buggy", [EventDraft(CHAIN_SNAPSHOT, wrong, subject=CHAIN_SNAPSHOT_SUBJECT)])
        report = saver.ledger.verify(thread_id="buggy")
        assert {f.reason for f in report.findings} == {"snapshot_mismatch"}


@pytest.mark.parametrize("rehash", ["stale", "rechain"])
def test_a_forged_snapshot_is_refused_at_first_touch(db_url, keys, rehash):
    """Without the key, editing the newest snapshot (so a resume would start from a forged fold)
    breaks the chain from it to the signed head: the first touch refuses."""
    with WardenSaver.from_url(db_url, key_store=keys) as saver:
        _grow(saver, "forged", SNAPSHOT_EVERY + 20)
        seq = attacker.seq_of(saver.engine, "forged", CHAIN_SNAPSHOT, last=True)
        attacker.edit(saver.engine, "forged", seq, lambda p: p["trust"]["latest"].update({"": "zzzz"}), rehash=rehash)
    with WardenSaver.from_url(db_url, key_store=keys) as fresh:
        with pytest.raises(IntegrityError):
            fresh.get_tuple({"configurable": {"thread_id": "forged"}})


def test_an_edit_before_the_newest_snapshot_is_not_read_at_resume_but_verify_catches_it(db_url, keys):
    """The stated trade-off: a first touch does not read the history before the newest snapshot
    (that is what makes it constant); what an edit there changes is not used by the resume (it
    starts from the snapshot), and `warden audit verify` reports it."""
    with WardenSaver.from_url(db_url, key_store=keys) as saver:
        newest = _grow(saver, "before", SNAPSHOT_EVERY + 40)
        with saver.engine.begin() as conn:
            conn.execute(text("UPDATE warden_events SET hash = :h WHERE thread_id = 'before' AND seq = 3"),
                         {"h": "sha256:" + "0" * 64})
    with WardenSaver.from_url(db_url, key_store=keys) as fresh:
        tup = fresh.get_tuple({"configurable": {"thread_id": "before"}})
        assert tup is not None and tup.config["configurable"]["checkpoint_id"] == newest
        assert "event_changed" in {f.reason for f in fresh.ledger.verify(thread_id="before").findings}


def test_snapshots_survive_deletions_and_pruning(db_url, keys):
    """Runs deleted and checkpoints pruned between snapshots: every snapshot still recomputes."""
    with WardenSaver.from_url(db_url, key_store=keys) as saver:
        _grow(saver, "pruned", SNAPSHOT_EVERY // 2)
        saver.prune(["pruned"], strategy="keep_latest")
        _grow(saver, "pruned", SNAPSHOT_EVERY)
        saver.ledger.append("pruned", [EventDraft(EventKind.THREAD_COPIED, {"note": "x"})])
        _grow(saver, "pruned", SNAPSHOT_EVERY // 2)
        assert saver.ledger.events("pruned", kinds=[CHAIN_SNAPSHOT])
        assert saver.ledger.verify(thread_id="pruned").ok
        newest = saver.get_tuple({"configurable": {"thread_id": "pruned"}})
    with WardenSaver.from_url(db_url, key_store=keys) as fresh:
        assert fresh.get_tuple({"configurable": {"thread_id": "pruned"}}).config == newest.config


def test_a_read_that_began_before_this_process_committed_is_not_taken_for_a_cut(tmp_path, keys):
    """Found by bench/scale.py: a read transaction whose snapshot was taken just before this
    process committed (and so verified) newer events sees the history end at the earlier
    position. That position was verified before: the rows are pinned by it, not refused as a
    truncated history (a real cut still is: see tests/test_attacks.py)."""
    from langgraph_warden.checkpointers.rawsql import DirectTx

    url = f"sqlite:///{tmp_path / 'stale.db'}"
    with WardenSaver.from_url(url, key_store=keys) as saver:
        ledger = saver.ledger
        _grow(saver, "stale", 3)
        before = ledger.verified_position("stale")
        reader = saver._direct._open()
        cur = reader.cursor()
        cur.execute("BEGIN")
        cur.execute("SELECT count(*) FROM warden_events")  # the snapshot is taken here
        ledger.append("stale", [EventDraft("note", {"n": 1})])  # committed and verified after it
        assert ledger.verified_position("stale").seq == before.seq + 1
        rows, _docs = ledger._verified_rows(DirectTx(cur, True), "stale", 0)
        assert rows[-1].seq == before.seq
        cur.execute("ROLLBACK")
        reader.close()
