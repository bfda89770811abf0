"""Separate OS processes on one thread: resume after a clean exit, and after SIGKILL mid-run.

The process scripts live in ``tests/support/proc_*.py``; every process uses
its own ``EphemeralKeyStore``, so the thread's history is signed by several
keys and must still verify as one chain. Each run is forked from the session's
launcher, which imported the scripts once (the ``forked`` fixture): a separate
process that opens the database itself, at a fraction of an interpreter's start-up.
"""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from collections import Counter

from langgraph_warden.checkpointers import WardenSaver
from langgraph_warden.events import EventKind
from langgraph_warden.keys import EphemeralKeyStore

from .support.graphs_chain import read_lines


def _last_json(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _verify(url: str, thread_id: str) -> None:
    with WardenSaver.from_url(url, key_store=EphemeralKeyStore()) as saver:
        report = saver.ledger.verify()
        assert report.ok, report.to_dict()
        assert list(report.threads) == [thread_id]
        events = saver.ledger.events(thread_id)
        kinds = Counter(e.kind for e in events)
        assert kinds[EventKind.CHECKPOINT_SAVED] >= 1 and kinds[EventKind.WRITES_SAVED] >= 1
        assert [e.seq for e in events] == list(range(1, len(events) + 1))


def test_two_processes_resume_the_same_thread_one_after_the_other(db_url, tmp_path, forked):
    thread_id = f"proc-{uuid.uuid4().hex[:8]}"
    side = str(tmp_path / "side.txt")

    first = _last_json(forked.run("tests.support.proc_approval", db_url, thread_id, side, "start"))
    assert first["interrupts"] == [{"question": "approve wire-transfer?"}]
    assert first["next"] == ["ask"]
    assert first["decision"] is None
    assert read_lines(side) == ["prepare"]

    second = _last_json(forked.run("tests.support.proc_approval", db_url, thread_id, side, "resume"))
    assert second["interrupts"] == []
    assert second["next"] == []
    assert second["decision"] == "approved-by-alice"
    assert second["log"] == ["prepare", "ask", "act:approved-by-alice"]
    # prepare ran once, in process 1; process 2 ran only what was left.
    assert read_lines(side) == ["prepare", "ask:approved-by-alice", "act"]
    _verify(db_url, thread_id)


def test_sigkill_mid_run_resumes_from_the_last_checkpoint(db_url, tmp_path, forked):
    thread_id = f"kill-{uuid.uuid4().hex[:8]}"
    side = str(tmp_path / "side.txt")

    crashed = forked.run("tests.support.proc_crash", db_url, thread_id, side, "crash")
    assert crashed.returncode == -signal.SIGKILL, (crashed.returncode, crashed.stderr)
    assert read_lines(side) == ["n1", "n2", "n3", "n4"]

    resumed = _last_json(forked.run("tests.support.proc_crash", db_url, thread_id, side, "resume"))
    assert resumed["resumed_from_next"] == ["n4"]
    assert resumed["log"] == ["n1", "n2", "n3", "n4", "n5", "n6"]
    counts = Counter(read_lines(side))
    # n1..n3 were committed before the kill and are not re-run; n4 (in flight) runs again.
    assert counts == {"n1": 1, "n2": 1, "n3": 1, "n4": 2, "n5": 1, "n6": 1}
    _verify(db_url, thread_id)

    with WardenSaver.from_url(db_url, key_store=EphemeralKeyStore()) as saver:
        history = list(saver.list({"configurable": {"thread_id": thread_id}}))
        assert [t.metadata["step"] for t in history] == list(range(6, -2, -1))
        assert history[0].checkpoint["channel_values"]["log"] == resumed["log"]
