"""Exactly-once tool side effects under SIGKILL and re-execution, on real graphs and real processes.

Crash trials: a process (``tests/support/proc_trial.py``; forked, one per trial, from a batch
process per backend that imported everything once) runs a governed agent and SIGKILLs itself at a
point chosen by a fixed seed — inside a tool before or after its side effect, at the start of the
next model turn (a tool step returned), or from a timer thread at a random delay. The test process
then resumes the run until it ends and checks, against side effects counted in a file outside both
processes and against the signed history, that nothing ran twice and every outcome is accounted for.
A deterministic in-process scenario covers the "one of three calls raises" case.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.tools import InjectedToolCallId, tool
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode, tools_condition
from typer.testing import CliRunner

from langgraph_warden.cli import app
from langgraph_warden.events import EventKind
from langgraph_warden.guards.tools import ToolSpec
from langgraph_warden.warden import Warden

from .conftest import PG_URL, pg_schema_url, requires_pg, sqlite_url
from .support import proc_trial
from .support.agents import ScriptedChatModel, SideEffects, call, turn

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

KINDS = ("before", "after", "turn", "timer")
SQLITE_SEEDS = list(range(10))
PG_SEEDS = list(range(100, 106))


def kill_spec(seed: int) -> str:
    """Where trial ``seed`` dies: the kind cycles with the seed, the details come from the seed's RNG."""
    rng = random.Random(seed)
    kind = KINDS[seed % len(KINDS)]
    if kind in ("before", "after"):
        tool_name = rng.choice([proc_trial.NON_IDEMPOTENT, proc_trial.NON_IDEMPOTENT, proc_trial.IDEMPOTENT])
        n = rng.choice([1, 2])
        call_id = {proc_trial.NON_IDEMPOTENT: "a", proc_trial.IDEMPOTENT: "b"}[tool_name] + str(n)
        return f"{kind}:{tool_name}:{call_id}"
    if kind == "turn":
        return f"turn:{1 + (seed // 4) % 2}"
    return f"timer:{rng.uniform(0.02, 0.3):.3f}"


def _tool_messages(values: dict[str, Any]) -> dict[str, ToolMessage]:
    return {m.tool_call_id: m for m in values["messages"] if isinstance(m, ToolMessage)}


def _ids(warden: Warden, thread: str, kind: str) -> list[str]:
    return [e.payload["tool_call_id"] for e in warden.ledger.events(thread, kinds=[kind])]


def _trial_files(directory: Path, seed: int) -> dict[str, str]:
    return {name: str(directory / f"trial-{seed}.{name}") for name in ("effects", "kills", "log")}


@pytest.fixture(scope="module")
def crashes(tmp_path_factory) -> dict[tuple[str, int], tuple[str, Path, int]]:
    """The crash phase of every trial, once per module: {(backend, seed): (url, directory, status)}.

    One ``proc_trial batch`` process per backend (both side by side) forks a child per trial that
    dies at the trial's point (status -9), so a trial costs a fork, not an interpreter start-up.
    """
    base = tmp_path_factory.mktemp("eo-trials")
    plans = {"sqlite": SQLITE_SEEDS, **({"postgres": PG_SEEDS} if PG_URL else {})}
    urls: dict[tuple[str, int], tuple[str, Path]] = {}
    procs = {}
    for backend, seeds in plans.items():
        trials = []
        for seed in seeds:
            directory = base / f"{backend}-{seed}"
            directory.mkdir()
            url = sqlite_url(directory) if backend == "sqlite" else pg_schema_url("eo")
            urls[backend, seed] = (url, directory)
            trials.append({"seed": seed, "url": url, "thread": f"trial-{seed}", "kill": kill_spec(seed),
                           **_trial_files(directory, seed)})
        spec = base / f"{backend}.json"
        spec.write_text(json.dumps({"trials": trials}))
        procs[backend] = subprocess.Popen(
            [sys.executable, "-m", "tests.support.proc_trial", "batch", str(spec)], cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    out = {}
    for backend, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{backend} batch failed (rc={proc.returncode}):\n{stderr[-4000:]}"
        statuses = json.loads(stdout.strip().splitlines()[-1])
        for seed in plans[backend]:
            out[backend, seed] = (*urls[backend, seed], statuses[str(seed)])
    return out


def run_trial(url: str, seed: int, directory: Path, status: int) -> dict[str, Any]:
    """Check trial ``seed`` whose crash process ended with ``status``: resume it here and check everything."""
    thread = f"trial-{seed}"
    files = _trial_files(directory, seed)
    effects_path, kills_path, log = Path(files["effects"]), Path(files["kills"]), Path(files["log"])
    spec = kill_spec(seed)
    kills = [json.loads(line) for line in kills_path.read_text().splitlines()] if kills_path.exists() else []
    if spec.startswith("timer:") and status == 0:
        landed = "timer fired after the run finished (no kill)"
    else:
        assert status == -signal.SIGKILL, (status, log.read_text()[-3000:] if log.exists() else "")
        assert len(kills) == 1 and kills[0]["point"] == spec, kills
        landed = spec

    effects = SideEffects(effects_path)
    with Warden.open(url, ephemeral_keys=True) as warden:
        # What the dead process left behind.
        started_before = set(_ids(warden, thread, EventKind.TOOL_STARTED))
        completed_before = set(_ids(warden, thread, EventKind.TOOL_COMPLETED))
        in_doubt_before = sorted(started_before - completed_before)
        graph = proc_trial.build(warden, effects_path)
        values, rounds = proc_trial.resume(warden, graph, thread)

        entries = effects.entries()
        trail = warden.audit(thread)
        started = Counter(_ids(warden, thread, EventKind.TOOL_STARTED))
        completed = Counter(_ids(warden, thread, EventKind.TOOL_COMPLETED))
        aborted = set(_ids(warden, thread, EventKind.TOOL_ABORTED))
        denied = {e.payload["tool_call_id"]: e.payload for e in warden.ledger.events(thread, kinds=[EventKind.TOOL_DENIED])}
        msgs = _tool_messages(values)

        # The run ended normally, with one answer per tool call.
        assert not graph.get_state({"configurable": {"thread_id": thread}}).next
        assert isinstance(values["messages"][-1], AIMessage) and values["messages"][-1].content == "both invoices settled"
        assert set(msgs) == set(proc_trial.CALL_TOOLS)

        # Every side effect happened under a recorded tool.started for that call, by that tool.
        for e in entries:
            assert proc_trial.CALL_TOOLS[e["tool_call_id"]] == e["tool"]
            assert started[e["tool_call_id"]] >= 1, f"side effect without tool.started: {e}"
        # The non-idempotent tool's side effect never ran twice.
        charges = Counter(e["tool_call_id"] for e in entries if e["tool"] == proc_trial.NON_IDEMPOTENT)
        assert all(n == 1 for n in charges.values()), charges
        for tcid, tool_name in proc_trial.CALL_TOOLS.items():
            assert completed[tcid] <= 1, f"{tcid} completed {completed[tcid]} times"
            if tool_name != proc_trial.NON_IDEMPOTENT:
                # Idempotent calls: in doubt → aborted and retried; they all completed in the end.
                assert completed[tcid] == 1 and msgs[tcid].status != "error", (tcid, msgs[tcid])
                assert trail.action(tcid).status == "authorised+completed"
                assert trail.action(tcid).attempts == started[tcid] == 1 + (tcid in aborted)
                continue
            action = trail.action(tcid)
            if completed[tcid]:
                assert charges[tcid] == 1 and tcid not in aborted
                assert action.status == "authorised+completed" and action.attempts == 1
            else:
                # In doubt: started, never completed → aborted, not retried, the agent told the outcome is unknown.
                assert started[tcid] == 1 and tcid in in_doubt_before, (tcid, started, in_doubt_before)
                assert tcid in aborted
                assert denied[tcid]["reasons"] == ["outcome_unknown"]
                assert msgs[tcid].status == "error" and "outcome is unknown" in msgs[tcid].content
                assert action.status == "aborted" and action.aborted_attempts == 1 and not action.ran
                assert action.authorised and not action.ran_without_authorisation  # its one attempt was authorised
        # Everything in doubt when the process died was aborted on resume, and nothing else was.
        assert aborted == set(in_doubt_before)

        s = trail.summary
        assert s.ran_without_authorisation == []
        assert s.side_effects_executed_twice == []
        assert sorted(s.aborted) == sorted(aborted)
        assert sorted(s.ran) == sorted(completed)
        # Every call was authorised (an in-doubt one by the decision its cut-off attempt ran under); the
        # outcome_unknown refusal of its retry leaves it `aborted`, not `denied`.
        assert sorted(s.authorised) == sorted(proc_trial.CALL_TOOLS)
        assert s.denied == []
        assert s.rejected == [] and s.failed == [] and s.pending == []
        assert s.credentials_outstanding == []  # leases the dead process held were revoked on resume
        assert s.verified and trail.verified
        assert warden.verify().ok

    cli = runner.invoke(app, ["audit", "verify", "--db", url])
    assert cli.exit_code == 0, cli.output
    return {"seed": seed, "landed": landed, "in_doubt": in_doubt_before, "aborted": sorted(aborted), "resumes": rounds}


def _report(result: dict[str, Any]) -> None:
    print(f"\ntrial {result}")


@pytest.mark.parametrize("seed", SQLITE_SEEDS)
def test_sigkill_trial_sqlite(seed, crashes):
    url, directory, status = crashes["sqlite", seed]
    _report(run_trial(url, seed, directory, status))


@requires_pg
@pytest.mark.postgres
@pytest.mark.parametrize("seed", PG_SEEDS)
def test_sigkill_trial_postgres(seed, crashes):
    assert PG_URL
    url, directory, status = crashes["postgres", seed]
    _report(run_trial(url, seed, directory, status))


def test_kill_specs_cover_every_crash_point():
    specs = [kill_spec(s) for s in SQLITE_SEEDS + PG_SEEDS]
    assert {s.split(":")[0] for s in specs} == set(KINDS)
    assert any(s.startswith("after:charge_card") for s in specs)
    assert any(s.startswith("before:charge_card") for s in specs)
    assert any(s.startswith(("before:upsert_record", "after:upsert_record")) for s in specs)


# ------------------------------------------------------------ one call raises once (in process)


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def build_flaky(warden: Warden, effects: SideEffects):
    failures = {"flaky_sync"}

    @tool
    def charge_card(invoice: str, amount: int, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Charge a card (not idempotent)."""
        effects.record("charge_card", tool_call_id=tool_call_id, invoice=invoice)
        return f"charged {amount} for {invoice}"

    @tool
    def upsert_record(key: str, value: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Set a record (idempotent)."""
        effects.record("upsert_record", tool_call_id=tool_call_id, key=key)
        return f"{key} = {value}"

    @tool
    def flaky_sync(target: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Synchronise with a remote system that times out the first time."""
        if "flaky_sync" in failures:
            failures.discard("flaky_sync")
            raise TimeoutError(f"remote {target} timed out")
        effects.record("flaky_sync", tool_call_id=tool_call_id, target=target)
        return f"synced {target}"

    warden.tools.register(ToolSpec("charge_card", irreversible=True))
    warden.tools.register(ToolSpec("upsert_record", idempotent=True))
    warden.tools.register(ToolSpec("flaky_sync"))
    model = ScriptedChatModel(
        script=[
            turn(
                call("charge_card", {"invoice": "inv-9", "amount": 9}, "a1"),
                call("upsert_record", {"key": "inv-9", "value": "paid"}, "b1"),
                call("flaky_sync", {"target": "erp"}, "f1"),
            ),
            turn(text="done"),
        ]
    )

    def agent(state: State) -> dict:
        return {"messages": [model.invoke(state["messages"])]}

    b = StateGraph(State)
    b.add_node("agent", agent)
    b.add_node("tools", ToolNode([charge_card, upsert_record, flaky_sync], wrap_tool_call=warden.guard, handle_tool_errors=False))
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", tools_condition)
    b.add_edge("tools", "agent")
    return b.compile(checkpointer=warden.checkpointer)


def test_one_of_three_calls_raises_once_others_replayed(db_url, tmp_path):
    effects = SideEffects(tmp_path / "fx.jsonl")
    thread = "t-raise"
    with Warden.open(db_url, ephemeral_keys=True) as warden:
        g = build_flaky(warden, effects)
        cfg = warden.start_run(thread, owner="alice@example.com", intent="settle inv-9", risk_tier="low")
        with pytest.raises(TimeoutError, match="remote erp timed out"):
            g.invoke({"messages": [HumanMessage("settle inv-9")]}, cfg)
        assert Counter(e["tool"] for e in effects.entries()) == {"charge_card": 1, "upsert_record": 1}
        failed = warden.ledger.events(thread, kinds=[EventKind.TOOL_FAILED])
        assert [(e.payload["tool_call_id"], e.payload["attempt"], e.payload["error_type"]) for e in failed] == [("f1", 1, "TimeoutError")]
        assert "remote erp timed out" in failed[0].payload["error"]
        mid = warden.audit(thread).summary
        assert sorted(mid.ran) == ["a1", "b1"] and mid.failed == ["f1"] and mid.replayed == []

        out = g.invoke(None, cfg)  # the ToolNode task runs again: all three calls reach the guard
        msgs = _tool_messages(out)
        assert msgs["a1"].content == "charged 9 for inv-9"
        assert msgs["b1"].content == "inv-9 = paid"
        assert msgs["f1"].content == "synced erp"
        assert out["messages"][-1].content == "done"

        # Counted outside the process: each side effect exactly once.
        assert Counter(e["tool"] for e in effects.entries()) == {"charge_card": 1, "upsert_record": 1, "flaky_sync": 1}
        assert sorted(_ids(warden, thread, EventKind.TOOL_REPLAYED)) == ["a1", "b1"]
        started = [(e.payload["tool_call_id"], e.payload["attempt"]) for e in warden.ledger.events(thread, kinds=[EventKind.TOOL_STARTED])]
        assert sorted(started) == [("a1", 1), ("b1", 1), ("f1", 1), ("f1", 2)]
        assert sorted(_ids(warden, thread, EventKind.TOOL_COMPLETED)) == ["a1", "b1", "f1"]
        assert _ids(warden, thread, EventKind.TOOL_ABORTED) == [] and _ids(warden, thread, EventKind.TOOL_DENIED) == []

        trail = warden.audit(thread)
        assert trail.verified and trail.owner == "alice@example.com" and trail.charter.risk_tier == "low"
        assert {a.tool_call_id for a in trail.actions} == {"a1", "b1", "f1"}
        for tcid, tool_name in (("a1", "charge_card"), ("b1", "upsert_record")):
            a = trail.action(tcid)
            assert a.tool == tool_name
            assert a.status == "authorised+completed"  # ran once; the resume replayed it
            assert (a.attempts, a.replays, a.aborted_attempts) == (1, 1, 0)
            assert a.ran and a.authorised and not a.ran_without_authorisation
            assert a.decision["allow"] is True and a.decision["require_approval"] is False
            assert a.approver is None and a.leases == [] and a.verified
            assert a.completed_ts is not None and a.first_ts <= a.completed_ts
        f = trail.action("f1")
        assert f.tool == "flaky_sync" and f.status == "authorised+completed"
        assert (f.attempts, f.replays, f.aborted_attempts) == (2, 0, 0)
        assert f.ran and f.authorised and not f.ran_without_authorisation and f.verified

        s = trail.summary
        assert sorted(s.authorised) == ["a1", "b1", "f1"]
        assert sorted(s.ran) == ["a1", "b1", "f1"]
        assert sorted(s.replayed) == ["a1", "b1"]
        assert s.denied == [] and s.rejected == [] and s.aborted == []
        assert s.failed == []  # f1 failed once, then completed: its final status is completed
        assert s.pending == []
        assert s.ran_without_authorisation == [] and s.side_effects_executed_twice == []
        assert (s.credentials_issued, s.credentials_revoked, s.credentials_outstanding) == (0, 0, [])
        assert s.verified
        assert warden.verify().ok
    cli = runner.invoke(app, ["audit", "verify", "--db", db_url])
    assert cli.exit_code == 0, cli.output



def test_in_doubt_call_stays_authorised_in_summary(tmp_path):
    """Regression: the outcome_unknown refusal of an in-doubt retry must not erase the authorisation its attempt ran under."""
    url = sqlite_url(tmp_path)
    spec = "after:charge_card:a1"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.proc_trial", url, "t-doubt", str(tmp_path / "fx.jsonl"), str(tmp_path / "k.jsonl"), spec],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert [e["tool_call_id"] for e in SideEffects(tmp_path / "fx.jsonl").entries() if e["tool"] == "charge_card"] == ["a1"]
    with Warden.open(url, ephemeral_keys=True) as warden:
        # a1 is in doubt; its siblings b1 and c1 (same ToolNode task, run in parallel) may have started
        # too before the kill, or finished with their outcome not yet committed (it is queued, see
        # Recorder.record_outcome), depending on scheduling: then they are in doubt as well
        # (both idempotent: retried).
        in_doubt = set(_ids(warden, "t-doubt", EventKind.TOOL_STARTED)) - set(_ids(warden, "t-doubt", EventKind.TOOL_COMPLETED))
        assert "a1" in in_doubt and in_doubt <= {"a1", "b1", "c1"}, in_doubt
        proc_trial.resume(warden, proc_trial.build(warden, tmp_path / "fx.jsonl"), "t-doubt")
        trail = warden.audit("t-doubt")
        a1 = trail.action("a1")
        assert a1.aborted_attempts == 1 and a1.attempts == 1 and not a1.ran
        assert a1.status == "aborted" and a1.authorised and "a1" in trail.summary.authorised
        assert trail.summary.denied == [] and trail.summary.ran_without_authorisation == []
        assert sorted(trail.summary.aborted) == sorted(in_doubt)  # parallel siblings: in the order their records committed
        for sibling in {"b1", "c1"} & in_doubt:  # idempotent: its in-doubt attempt was retried, and completed
            assert trail.action(sibling).status == "authorised+completed"
