"""SIGKILL trials: no side effect runs twice, every outcome is in the signed trail, and it verifies.

``tests/support/proc_trial_kill.py`` runs a governed four-tool agent (an idempotent upsert, two
non-idempotent tools, an irreversible tool that needs an approval) in a forked child process and
SIGKILLs it at a point chosen by a fixed seed: inside a tool before or after its side effect, right
after ``tool.completed`` or ``approval.granted`` was committed, inside the agent (non-tool) node, or
anywhere from a timer thread. Some trials kill the first resuming process as well. A last process
resumes (``graph.invoke(None, config)`` until the run ends, approving what is pending).

Side effects are counted in a file outside every process. The SQLite and PostgreSQL batches run
side by side (one database per backend, one thread per trial).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from langgraph_warden.cli import app
from langgraph_warden.events import EventKind
from langgraph_warden.warden import Warden

from .conftest import PG_URL, pg_schema_url, requires_pg, sqlite_url
from .support import proc_trial_kill as trial
from .support.agents import SideEffects

ROOT = Path(__file__).resolve().parents[1]
#: Every kill kind, in doubt on an idempotent (0, 1, 6) and a non-idempotent call (7, 8, 13: the approved
#: irreversible p1 after its effect and with its completion queued); PostgreSQL: every kind again, both sorts.
#: (14 SQLite seeds until the suite neared its time budget: 9-12 repeated kinds 2-5.)
SQLITE_SEEDS = [*range(9), 13]
PG_SEEDS = list(range(14, 22))
SCOPED = {"upsert_contact", "create_ticket", "charge_card"}  # tools that get a just-in-time credential
runner = CliRunner()


def _start_batch(url: str, seeds: list[int], directory: Path, backend: str) -> subprocess.Popen[str]:
    directory.mkdir(parents=True, exist_ok=True)
    spec = directory / "spec.json"
    spec.write_text(
        json.dumps({"url": url, "dir": str(directory), "trials": [{"seed": s, "thread": f"{backend}-{s}"} for s in seeds]})
    )
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.proc_trial_kill", "batch", str(spec)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


@pytest.fixture(scope="module")
def batches(tmp_path_factory) -> dict[str, tuple[str, Path, dict[str, Any]]]:
    """Run both batches concurrently once per module; {backend: (url, dir, report)}."""
    base = tmp_path_factory.mktemp("kill-trials")
    plans = {"sqlite": (sqlite_url(base), SQLITE_SEEDS)}
    if PG_URL:
        plans["postgres"] = (pg_schema_url("kill"), PG_SEEDS)
    procs = {b: _start_batch(url, seeds, base / b, b) for b, (url, seeds) in plans.items()}
    out: dict[str, tuple[str, Path, dict[str, Any]]] = {}
    for b, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=150)
        assert proc.returncode == 0, f"{b} batch failed (rc={proc.returncode}):\n{stderr[-4000:]}"
        out[b] = (plans[b][0], base / b, json.loads(stdout.strip().splitlines()[-1]))
        if stderr.strip():
            print(f"--- {b} batch stderr ---\n{stderr[-4000:]}")
    return out


def _landed(t: dict[str, Any]) -> str:
    """Where the crash process's kill landed (the marker it wrote), or 'not reached'."""
    first = [k for k in t["kills"]]
    if not first or t["statuses"][0] != "SIGKILL":
        return "not reached (run finished first)"
    where = first[0]["where"]
    if where.startswith("timer"):
        nxt = t["results"].get("resume1") or t["results"].get("resume") or {}
        return f"timer (last event committed: {nxt.get('last_event_before')})"
    return where.split(":")[0]


def check_trial(warden: Warden, directory: Path, t: dict[str, Any]) -> dict[str, Any]:
    """Every invariant of one trial; returns facts for the coverage summary."""
    thread, plan = t["thread"], t["plan"]
    ctx = f"trial seed={t['seed']} plan={plan} statuses={t['statuses']} kills={t['kills']}\n{t.get('errors', '')}"
    paths = trial.paths(directory, thread)

    # The processes: the crash process died by SIGKILL (a timer may fire after the run ended), the
    # optional first resumer died or finished, the last resumer finished cleanly.
    if plan["kind"] != "timer":
        assert t["statuses"][0] == "SIGKILL", ctx
        assert t["kills"][0]["where"].startswith(plan["kind"]), ctx
    assert set(t["statuses"][:-1]) <= {"SIGKILL", "exit 0"}, ctx
    assert t["statuses"][-1] == "exit 0", ctx
    assert len(t["kills"]) == t["statuses"].count("SIGKILL"), ctx

    final = t["results"]["resume"]
    assert final["final"] == "done", ctx
    msgs = final["tool_messages"]
    assert set(msgs) == set(trial.CALLS), ctx  # every call of the script has an answer

    # Side effects, counted outside every process: never twice for one tool call.
    effects = SideEffects(paths["effects"]).entries()
    per_call = Counter(e["call"] for e in effects)
    assert all(n == 1 for n in per_call.values()), (per_call, ctx)
    assert all(trial.CALLS[e["call"]] == e["tool"] for e in effects), ctx
    invocations = Counter(e["call"] for e in SideEffects(paths["calls"]).entries())

    audit = warden.audit(thread)
    s = audit.summary
    assert audit.verified, (audit.verification.findings if audit.verification else None, ctx)
    started = Counter(e.payload["tool_call_id"] for e in audit.events if e.kind == EventKind.TOOL_STARTED)
    # Every side effect is accounted for: the guard committed tool.started before it happened.
    assert set(per_call) <= set(started), (per_call, started, ctx)

    facts: dict[str, Any] = {"aborted_idempotent": 0, "aborted_not_idempotent": 0, "aborted_with_effect": 0, "replays": 0}
    for cid, tool in trial.CALLS.items():
        a = audit.action(cid)
        where = f"{cid} ({tool}): {a.to_dict()} | {ctx}"
        assert a.tool == tool and a.authorised and not a.ran_without_authorisation, where
        assert a.attempts == started[cid], where
        assert invocations.get(cid, 0) <= a.attempts, where
        facts["replays"] += a.replays
        if tool in SCOPED:
            assert len(a.leases) >= a.attempts, where  # a lease per attempt (a kill may strand one before start)
        else:
            assert a.leases == [], where
        if tool == "charge_card":
            assert a.approver == trial.APPROVER and a.approval_request_id, where
        if not a.aborted_attempts:
            assert a.status == "authorised+completed" and a.attempts == 1 and a.ran, where
            assert per_call[cid] == 1 and msgs[cid]["status"] == "success", where
        elif tool in trial.IDEMPOTENT:
            # In doubt and idempotent: re-executed, visible as a further attempt; the upsert kept one effect.
            assert a.status == "authorised+completed" and a.attempts == a.aborted_attempts + 1, where
            assert per_call[cid] == 1 and msgs[cid]["status"] == "success", where
            facts["aborted_idempotent"] += 1
        else:
            # In doubt and not idempotent: never re-executed; the agent was told the outcome is unknown.
            assert a.status == "aborted" and a.attempts == 1 and a.aborted_attempts == 1 and not a.ran, where
            assert "outcome_unknown" in a.reasons, where
            assert msgs[cid]["status"] == "error" and "outcome is unknown" in msgs[cid]["content"], where
            assert per_call.get(cid, 0) <= 1, where
            facts["aborted_not_idempotent"] += 1
            facts["aborted_with_effect"] += per_call.get(cid, 0)
    assert s.ran_without_authorisation == [] and s.side_effects_executed_twice == [], ctx
    # No credential is left usable: the lease store (the revocation list tokens are checked against)
    # has nothing outstanding after recovery, and the trail agrees: a lease row and its
    # `credential.issued` / `credential.revoked` event commit in one transaction (recovery.revoke_recorded),
    # so no kill can leave a revoked lease the trail still lists as outstanding.
    assert warden.lease_store.outstanding(thread) == [], ctx
    assert s.credentials_outstanding == [], (s.credentials_outstanding, ctx)
    assert s.pending == [] and s.denied == [] and s.rejected == [], ctx
    assert sorted(s.aborted) == sorted(a.tool_call_id for a in audit.actions if a.aborted_attempts), ctx
    assert sorted(s.ran) == sorted(a.tool_call_id for a in audit.actions if a.status == "authorised+completed"), ctx
    return facts


def _run_checks(backend: str, batches) -> None:
    url, directory, report = batches[backend]
    seeds = SQLITE_SEEDS if backend == "sqlite" else PG_SEEDS
    assert [t["seed"] for t in report["trials"]] == seeds
    totals: Counter[str] = Counter()
    landed: Counter[str] = Counter()
    with Warden.open(url, ephemeral_keys=True) as warden:
        for t in report["trials"]:
            totals.update(check_trial(warden, directory, t))
            landed[_landed(t)] += 1
            totals["kills"] += len(t["kills"])
    # `warden audit verify` (the CLI) over the whole database: every thread, every signature.
    res = runner.invoke(app, ["audit", "verify", "--db", url])
    assert res.exit_code == 0, res.output
    assert f"{len(seeds)} thread(s)" in res.output
    res = runner.invoke(app, ["audit", "show", "--db", url, report["trials"][0]["thread"]], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    print(f"\n{backend}: {len(seeds)} trials, {totals['kills']} SIGKILLs; crash landed: {dict(landed)}; {dict(totals)}")
    # The seeds were chosen so the trials exercise both in-doubt rules.
    assert totals["aborted_idempotent"] >= 1 and totals["aborted_not_idempotent"] >= 1, totals


def test_sigkill_trials_sqlite(batches):
    _run_checks("sqlite", batches)


@requires_pg
@pytest.mark.postgres
def test_sigkill_trials_postgres(batches):
    _run_checks("postgres", batches)


def test_kill_plans_cover_every_kind():
    kinds = Counter(trial.plan_for(s)["kind"] for s in SQLITE_SEEDS + PG_SEEDS)
    assert set(kinds) == set(trial.KINDS)
    assert any("resume_delay" in trial.plan_for(s) for s in SQLITE_SEEDS)
