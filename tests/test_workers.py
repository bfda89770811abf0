"""Many workers resume one thread at the same moment: every side effect runs once.

Eight worker processes (``tests/support/proc_workers.py``, forked from one launcher) open one
database — a SQLite file, and the real PostgreSQL — and wait. For each trial the parent prepares a new thread up to where
resuming it runs a tool, then writes the same "resume this thread" line to 2, 4 or 8 workers at
once. Two kinds of thread: an ordinary non-idempotent call (``invoke(None)`` into the tools step),
and an irreversible call paused for approval (every worker resumes it with the same approval).

Side effects are counted in a file outside every process. Each trial must end with exactly one
side effect, every worker's run finished ("done", no error), one ``approval.granted`` for the
request, and a history that verifies with nothing executed twice or without authorisation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from langgraph_warden.events import EventKind
from langgraph_warden.guards.approval import approve
from langgraph_warden.warden import Warden

from .conftest import PG_URL, pg_schema_url, requires_pg, sqlite_url
from .support.agents import SideEffects
from .support.proc_workers import build, prepare

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 8
TRIALS_PER_SIZE = 2  # per worker count and kind: 2 kinds x 3 sizes x 2 = 12 trials per backend


class Pool:
    """Worker processes, each ready to resume a thread on command.

    One launcher process imports LangGraph and the warden once and forks the workers
    (``proc_workers pool``): each is its own process with its own database connections, talking to
    this one over its own pair of pipes.
    """

    def __init__(self, url: str, effects: Path, n: int, log: Path) -> None:
        theirs = []  # (the worker's stdin, the worker's stdout) ends, inherited by the launcher
        mine = []
        for _ in range(n):
            to_worker, worker_in = os.pipe()[::-1]
            worker_out, from_worker = os.pipe()[::-1]
            theirs.append((worker_in, worker_out))
            mine.append((to_worker, from_worker))
        self.log = log
        with open(log, "ab") as err:
            self.launcher = subprocess.Popen(
                [sys.executable, "-m", "tests.support.proc_workers", "pool", url, str(effects),
                 *(f"{r},{w}" for r, w in theirs)],
                cwd=ROOT, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                pass_fds=[fd for pair in theirs for fd in pair],
            )
        for pair in theirs:
            for fd in pair:
                os.close(fd)
        self.inputs = [os.fdopen(w, "w", encoding="utf-8") for w, _ in mine]
        self.outputs = [os.fdopen(r, encoding="utf-8") for _, r in mine]
        for out in self.outputs:
            line = out.readline().strip()
            if line != "ready":
                self.close()
                raise RuntimeError(f"worker did not start: {line!r} {log.read_text()[-3000:]}")

    def resume(self, n: int, thread: str, resume: Any) -> list[dict[str, Any]]:
        order = json.dumps({"thread": thread, "resume": resume}) + "\n"
        for w in self.inputs[:n]:  # as close to "at once" as writes to pipes get
            w.write(order)
        for w in self.inputs[:n]:
            w.flush()
        return [json.loads(r.readline()) for r in self.outputs[:n]]

    def close(self) -> None:
        for f in (*self.inputs, *self.outputs):
            f.close()
        try:
            self.launcher.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.launcher.kill()
            self.launcher.wait()


def _trials(url: str, tmp: Path) -> None:
    effects_path = tmp / "effects.jsonl"
    effects = SideEffects(effects_path)
    overlapped = {2: 0, 4: 0, WORKERS: 0}
    with Warden.open(url, ephemeral_keys=True) as warden:
        graph = build(warden, effects)
        pool = Pool(url, effects_path, WORKERS, tmp / "workers.log")
        try:
            for n in (2, 4, WORKERS):
                for kind in ("plain", "approval"):
                    for i in range(TRIALS_PER_SIZE):
                        thread = f"{kind}-{n}-{i}"
                        pending = prepare(warden, graph, thread, kind)
                        resume = None
                        if pending is not None:
                            answer = approve(pending["request"], "bob@example.com")
                            resume = {pending["interrupt_id"]: answer}
                        replies = pool.resume(n, thread, resume)
                        failed = [r for r in replies if not r["ok"]]
                        assert not failed, f"{thread}: {failed[0]['error']}\n{failed[0]['trace']}"
                        assert [r["last"] for r in replies] == ["done"] * n, (thread, replies)
                        tool = "wire" if kind == "approval" else "charge"
                        runs = [e for e in effects.entries() if e.get("order") == thread]
                        assert len(runs) == 1, f"{thread}: {tool} ran {len(runs)} times: {runs}"
                        trail = warden.audit(thread)
                        assert trail.verified, trail.verification.findings if trail.verification else None
                        assert trail.summary.side_effects_executed_twice == []
                        assert trail.summary.ran_without_authorisation == []
                        if kind == "approval":
                            granted = warden.ledger.events(thread, kinds=[EventKind.APPROVAL_GRANTED])
                            assert len(granted) == 1, f"{thread}: the approval was used {len(granted)} times"
                        # a worker that came while the call ran waited and replayed its outcome; one that
                        # came after the run ended found it finished
                        replays = len(warden.ledger.events(thread, kinds=[EventKind.TOOL_REPLAYED]))
                        assert replays <= n - 1
                        overlapped[n] += replays
        finally:
            pool.close()
        assert warden.verify().ok
    print(f"replays per worker count (workers that met a live or finished attempt of the call): {overlapped}")
    # The trials did race: at every size, workers met the call while another one held it.
    assert all(overlapped[n] > 0 for n in overlapped), overlapped


def test_workers_resume_one_thread_sqlite(tmp_path):
    started = time.monotonic()
    _trials(sqlite_url(tmp_path), tmp_path)
    print(f"sqlite: {time.monotonic() - started:.1f}s")


@requires_pg
@pytest.mark.postgres
def test_workers_resume_one_thread_postgres(tmp_path):
    assert PG_URL
    started = time.monotonic()
    _trials(pg_schema_url("workers"), tmp_path)
    print(f"postgres: {time.monotonic() - started:.1f}s")


def test_audit_fails_and_names_a_call_that_ran_twice_or_unauthorised(db_url):
    """What the defences prevent, written as a history would show it (two workers both starting a
    call; a start with no decision): `audit verify` and `audit show` exit 1 and name the calls."""
    from typer.testing import CliRunner

    from langgraph_warden.canonical import digest
    from langgraph_warden.cli import app
    from langgraph_warden.events import EventDraft

    base = {"tool": "charge", "args_digest": digest({"order": "o1"})}
    allow = {"allow": True, "require_approval": False, "reasons": [], "scopes": [], "ttl_seconds": 60, "obligations": {}}
    with Warden.open(db_url, ephemeral_keys=True) as w:
        w.start_run("twice", owner="alice@example.com", intent="x", risk_tier="low")
        a = {**base, "tool_call_id": "c1"}
        w.ledger.append("twice", [
            EventDraft(EventKind.POLICY_DECIDED, {**a, "decision": allow}, subject="c1"),
            EventDraft(EventKind.TOOL_STARTED, {**a, "attempt": 1}, subject="c1"),
            EventDraft(EventKind.TOOL_STARTED, {**a, "attempt": 2}, subject="c1"),  # while attempt 1 ran
            EventDraft(EventKind.TOOL_COMPLETED, {**a, "attempt": 1, "status": "success"}, subject="c1"),
            EventDraft(EventKind.TOOL_STARTED, {**base, "tool_call_id": "c2", "attempt": 1}, subject="c2"),  # no decision
        ])
        assert w.verify("twice").ok  # the signatures are fine: what it records is not
        summary = w.audit("twice").summary
        assert summary.side_effects_executed_twice == ["c1"] and summary.ran_without_authorisation == ["c2"]
    runner = CliRunner()
    for args in (["audit", "verify", "--db", db_url, "--thread", "twice"], ["audit", "show", "--db", db_url, "twice"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 1, res.output
        assert "executed_twice" in res.output and "call c1" in res.output, res.output
        assert "ran_without_authorisation" in res.output and "call c2" in res.output, res.output
