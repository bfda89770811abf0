"""Exactly once in every LangGraph durability mode, with a model that emits a fresh id every time.

``tests/support/proc_durability.py`` runs each trial in a forked child that is SIGKILLed right after
the tool's side effect (or right after the tool step), then resumes the thread from the database
in another process: ``invoke(None)`` when a next step is saved, else the same request again — and
the model answers with the same action under a new id. Side effects are counted in a file outside
every process.

Shown here, on SQLite and PostgreSQL:

* ``"sync"``, ``"async"`` (LangGraph's default) and ``"exit"``: zero duplicate side effects; every
  run resumes to its end (the model is told the earlier outcome); the history verifies.
* the ``"async"`` race exists: with checkpoint saves slowed and both defences off, the side effect
  runs twice. Each defence alone closes it: waiting for the call's origin checkpoint before the
  side effect, or recognising the new id as a retry of the earlier attempt.
* under CPU load (busy processes on both cores) ``"async"`` trials still never repeat a side effect.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from .conftest import PG_URL, pg_schema_url, requires_pg, sqlite_url
from .support.agents import SideEffects
from .support.forker import Launcher

MODES = ("sync", "async", "exit")
KILLS = ("after_effect", "after_tool")


def _run(
    forked: Launcher, url: str, tmp: Path, trials: list[dict[str, Any]], name: str
) -> tuple[list[dict[str, Any]], SideEffects]:
    """``proc_durability`` on a spec, in a process forked from the session's launcher (the ``forked``
    fixture: no interpreter start-up); it forks each trial's child in turn and resumes it itself."""
    spec = tmp / f"{name}.json"
    report = tmp / f"{name}-report.json"
    effects = tmp / f"{name}-effects.jsonl"
    spec.write_text(json.dumps({"url": url, "effects": str(effects), "report": str(report), "trials": trials}))
    proc = forked.run("tests.support.proc_durability", str(spec), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(report.read_text()), SideEffects(effects)


def _check(reports: list[dict[str, Any]], effects: SideEffects, *, expect_once: bool = True) -> Counter[str]:
    runs = Counter(e["order"] for e in effects.entries())
    for r in reports:
        assert r["killed"], f"{r['thread']}: the child was not killed at {r['kill']} ({r['child_status']})"
        assert "error" not in r, f"{r['thread']}: resume failed: {r['error']}"
        assert str(r["last"]).startswith("done"), f"{r['thread']}: the run did not end: {r}"
        assert r["verified"], f"{r['thread']}: the history does not verify"
        if expect_once:
            assert runs[r["thread"]] == 1, f"{r['thread']} ({r['mode']}, {r['kill']}): side effect ran {runs[r['thread']]} times: {r}"
    return runs


def _matrix(backend: str, per_cell: int) -> list[dict[str, Any]]:
    return [
        {"thread": f"{backend}-{mode}-{kill}-{i}", "mode": mode, "kill": kill}
        for mode in MODES for kill in KILLS for i in range(per_cell)
    ]


def _all_modes(forked: Launcher, url: str, tmp: Path, backend: str, per_cell: int) -> None:
    reports, effects = _run(forked, url, tmp, _matrix(backend, per_cell), f"{backend}-modes")
    _check(reports, effects)
    # A new id for an action that already ran is answered from the earlier attempt's record, and linked.
    retried = [r for r in reports if r["mode"] == "exit" and r["kill"] == "after_effect"]
    assert retried and all(r["how"][0] == "retry request" and len(r["superseded"]) == 1 for r in retried), retried
    assert all(len(r["retry_links"]) >= 1 for r in retried)
    # The call's id survives where the model's message was durable before the side effect ("sync", and
    # "async" through the guard's wait): a resume replays or holds it by id. ("async" killed after the
    # tool step may leave a state with no next step: the request is sent again, a retry by the rule.)
    by_id = [r for r in reports if r["mode"] == "sync" or r["kill"] == "after_effect" and r["mode"] == "async"]
    assert all(r["how"] == ["invoke(None)"] and not r["superseded"] for r in by_id), [r for r in by_id if r["superseded"]]


def test_every_durability_mode_sqlite(tmp_path, forked):
    _all_modes(forked, sqlite_url(tmp_path), tmp_path, "sqlite", per_cell=4)


@requires_pg
@pytest.mark.postgres
def test_every_durability_mode_postgres(tmp_path, forked):
    assert PG_URL
    _all_modes(forked, pg_schema_url("durability"), tmp_path, "postgres", per_cell=3)


def test_async_race_exists_without_the_defences_and_each_defence_closes_it(tmp_path, forked):
    """Checkpoint saves slowed by 0.4 s: LangGraph's background save of the model's message loses
    the race against the tool. Without defences the resumed run repeats the side effect."""
    trials = [
        {"thread": f"race-{defence}-{i}", "mode": "async", "kill": "after_effect", "delay": 0.4, "defence": defence}
        for defence in ("none", "wait", "match", "all") for i in range(2)
    ]
    reports, effects = _run(forked, sqlite_url(tmp_path), tmp_path, trials, "race")
    runs = _check(reports, effects, expect_once=False)
    for r in reports:
        expected = 2 if r["defence"] == "none" else 1
        assert runs[r["thread"]] == expected, f"{r['thread']}: ran {runs[r['thread']]} times, expected {expected}: {r}"


def test_request_sent_again_after_the_tool_step_is_a_retry(tmp_path, forked):
    """``"async"``, saves slowed: the model's message and the tool's result are durable, the next
    checkpoint is not when the process dies. The saved state then has no next step, so the
    application sends the request again; the model, which never saw the result, asks again under
    a new id — a retry, answered from the record (found under CPU load in the full suite)."""
    trials = [{"thread": f"again-{i}", "mode": "async", "kill": "after_tool", "delay": 0.5, "kill_delay": 0.2}
              for i in range(3)]
    reports, effects = _run(forked, sqlite_url(tmp_path), tmp_path, trials, "again")
    _check(reports, effects)
    assert all(r["how"][0] == "retry request" and r["superseded"] for r in reports), reports


def test_async_trials_under_cpu_load(tmp_path, forked):
    """Two busy processes keep both cores loaded while ``"async"`` trials are killed and resumed."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        trials = [{"thread": f"load-{kill}-{i}", "mode": "async", "kill": kill} for kill in KILLS for i in range(3)]
        reports, effects = _run(forked, sqlite_url(tmp_path), tmp_path, trials, "load")
    finally:
        for p in busy:
            p.kill()
    _check(reports, effects)
