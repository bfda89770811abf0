"""Many worker processes writing at once: nothing lost, no deadlock, every chain verifies.

Workers are real OS processes started from a ``forkserver`` that has already
imported langgraph and the saver (``set_forkserver_preload``), so 16 of them
start in well under a second instead of paying ~2 s of imports each. Each
worker opens its own saver (own engines, own connections, own ephemeral
signing key) after the fork.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import threading
import time
import uuid

import pytest
from sqlalchemy import create_engine, event, text

from langgraph_warden.checkpointers import WardenSaver
from langgraph_warden.keys import EphemeralKeyStore

from .conftest import pg_schema_url, requires_pg, sqlite_url
from .support.proc_loop_worker import run_worker

OVERALL_TIMEOUT = 120.0
STEPS = 20


def _run_workers(url: str, n: int, steps: int) -> tuple[list[str], dict[str, float]]:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.support.proc_loop_worker"])
    run = uuid.uuid4().hex[:6]
    threads = [f"worker-{run}-{i:02d}" for i in range(n)]
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    procs = [ctx.Process(target=run_worker, args=(url, t, steps, barrier, results), daemon=True) for t in threads]
    deadline = time.monotonic() + OVERALL_TIMEOUT
    for p in procs:
        p.start()
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    hung = [p for p in procs if p.is_alive()]
    for p in hung:
        p.kill()
        p.join(5)
    assert not hung, f"{len(hung)} workers still running after {OVERALL_TIMEOUT:.0f}s (deadlock?)"
    assert [p.exitcode for p in procs] == [0] * n
    timings: dict[str, float] = {}
    while True:
        try:
            tid, secs = results.get(timeout=2)
        except queue.Empty:
            break
        timings[tid] = secs
    assert set(timings) == set(threads)
    return threads, timings


def _check_everything_stored(url: str, threads: list[str], steps: int) -> None:
    with WardenSaver.from_url(url, key_store=EphemeralKeyStore()) as saver:
        for tid in threads:
            history = list(saver.list({"configurable": {"thread_id": tid}}))
            # one input checkpoint plus one per super-step, none lost
            assert [t.metadata["step"] for t in history] == list(range(steps, -2, -1)), tid
            latest = saver.get_tuple({"configurable": {"thread_id": tid}})  # verified read
            assert latest.checkpoint["channel_values"]["count"] == steps
            assert latest.checkpoint["channel_values"]["trail"] == list(range(1, steps + 1))
        report = saver.ledger.verify()
        assert report.ok, report.to_dict()
        assert sorted(report.threads) == sorted(threads)
        assert len(report.threads) == len(threads)
    eng = create_engine(url)
    with eng.connect() as conn:
        n_keys = conn.execute(text("SELECT count(DISTINCT key_id) FROM warden_keys")).scalar_one()
        n_cps = conn.execute(text("SELECT count(*) FROM warden_checkpoints")).scalar_one()
    eng.dispose()
    assert n_keys >= len(threads)  # every worker signed with its own key
    assert n_cps == len(threads) * (steps + 2)


@requires_pg
@pytest.mark.postgres
def test_sixteen_workers_on_postgres():
    url = pg_schema_url("conc")
    # Migrate once, as a deployment does (concurrent first-time setup: see the test below).
    WardenSaver.from_url(url, key_store=EphemeralKeyStore()).close()
    threads, _ = _run_workers(url, 16, STEPS)
    _check_everything_stored(url, threads, STEPS)


def test_four_workers_on_one_sqlite_file(tmp_path):
    url = sqlite_url(tmp_path)
    WardenSaver.from_url(url, key_store=EphemeralKeyStore()).close()
    threads, _ = _run_workers(url, 4, STEPS)
    _check_everything_stored(url, threads, STEPS)


def test_first_setup_racing_another_first_setup(db_url, request):
    """Two workers start on a fresh database at once: the second must wait, then find the schema done.

    Deterministic: the first saver's migration transaction is held open (a
    ``commit`` hook pauses it) while the second saver runs ``from_url``.
    """
    first = WardenSaver.from_url(db_url, key_store=EphemeralKeyStore(), setup=False)
    inside = threading.Event()
    fired: list[bool] = []

    @event.listens_for(first.engine, "commit")
    def _pause_before_commit(conn):
        if not fired:
            fired.append(True)
            inside.set()
            time.sleep(1.5)  # the schema exists, uncommitted, while the second saver starts

    errors: list[BaseException] = []

    def _setup() -> None:
        try:
            first.setup()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=_setup)
    t.start()
    try:
        assert inside.wait(30), "first setup never reached its commit"
        with WardenSaver.from_url(db_url, key_store=EphemeralKeyStore()) as second:
            cfg = second.put(
                {"configurable": {"thread_id": "race", "checkpoint_ns": ""}},
                {"v": 4, "id": "1f000000-0000-6000-8000-000000000001", "ts": "", "channel_values": {},
                 "channel_versions": {}, "versions_seen": {}, "updated_channels": None},
                {},
                {},
            )
            assert second.get_tuple(cfg) is not None
    finally:
        t.join(30)
        first.close()
    assert not errors, errors
