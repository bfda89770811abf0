"""View snapshots: a new process's first guarded call costs the same at any thread length.

Every ``VIEW_SNAPSHOT_EVERY`` decisions the guard appends a ``view.snapshot`` (its view of the
thread: charter, step-history aggregates, the unsettled and recent calls, a filter of every
call id). A new process restores from the newest one and reads only what came after it; the
policy input it builds is the one a guard that folded everything builds. ``Warden.verify`` and
``warden audit verify`` recompute every snapshot from the events before it.
"""

from __future__ import annotations

import uuid

import pytest
from langchain_core.messages import AIMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from typer.testing import CliRunner

from langgraph_warden.charter import RunCharter
from langgraph_warden.checkpointers import event_reads as event_reads_module
from langgraph_warden.cli import app
from langgraph_warden.events import EventKind
from langgraph_warden.guards.thread_view import KEEP_RECENT_CALLS, VIEW_SNAPSHOT, VIEW_SNAPSHOT_EVERY, snapshot_draft
from langgraph_warden.guards.tools import ToolSpec
from langgraph_warden.identity import EphemeralWorkloadKeyStore
from langgraph_warden.keys import EphemeralKeyStore
from langgraph_warden.warden import Warden

from .support.tools import recording_echo

CHARTER = RunCharter(owner="alice@example.com", intent="snapshots", risk_tier="low")
echo, RUNS = recording_echo()


def graph(warden: Warden):
    b = StateGraph(MessagesState)
    b.add_node("tools", ToolNode([echo], wrap_tool_call=warden.guard))
    b.add_edge(START, "tools")
    b.add_edge("tools", END)
    return b.compile()


def call(g, thread: str, tcid: str, text: str) -> str:
    msg = AIMessage(content="", tool_calls=[{"name": "echo", "args": {"text": text}, "id": tcid, "type": "tool_call"}])
    return g.invoke({"messages": [msg]}, {"configurable": {"thread_id": thread}})["messages"][-1].content


@pytest.fixture
def keys():
    return EphemeralKeyStore(), EphemeralWorkloadKeyStore()


def open_warden(db_url: str, keys, policy=None) -> Warden:
    from langgraph_warden.guards.policy import DEFAULT_REGO_POLICY
    from langgraph_warden.guards.rego import RegoEngine

    engine = RegoEngine(DEFAULT_REGO_POLICY, data={"warden_config": {"limits": {"per_tool": 10**6, "per_run": 10**6}}})
    w = Warden.open(db_url, key_store=keys[0], workload_key_store=keys[1], policy=policy or engine)
    w.tools.register(ToolSpec("echo", sensitivity="public"))
    return w


def _run(db_url: str, keys, thread: str, n: int) -> None:
    with open_warden(db_url, keys) as w:
        w.start_run(thread, CHARTER)
        g = graph(w)
        for i in range(n):
            assert call(g, thread, f"c{i}", f"v{i % 7}") == f"v{i % 7}"


def _rows_read(monkeypatch) -> list[int]:
    counts: list[int] = []
    real = event_reads_module.chain_rows
    monkeypatch.setattr(event_reads_module, "chain_rows", lambda raw, sql, params: counts.append(len(rows := real(raw, sql, params))) or rows)
    return counts


def test_a_restored_view_equals_a_full_fold_and_reads_the_same_at_any_length(db_url, keys, monkeypatch):
    reads, totals = {}, {}
    for n in (VIEW_SNAPSHOT_EVERY + 30, VIEW_SNAPSHOT_EVERY * 3 + 30):
        thread = f"v{n}-{uuid.uuid4().hex[:6]}"
        _run(db_url, keys, thread, n)
        with open_warden(db_url, keys) as w:
            assert len(w.ledger.events(thread, kinds=[VIEW_SNAPSHOT])) == n // VIEW_SNAPSHOT_EVERY
            assert w.verify(thread_id=thread).ok  # every snapshot recomputed from the events before it
            totals[n] = len(w.ledger.events(thread))
        with open_warden(db_url, keys) as restored_w:  # a new process: restores from the newest snapshot
            counts = _rows_read(monkeypatch)
            restored = restored_w.guard.recorder.view(thread)
            monkeypatch.undo()
            assert restored_w.guard.recorder.views[thread].partial
        reads[n] = sum(counts)
        with open_warden(db_url, keys) as full_w:  # the same, folding every event from genesis
            full_w.guard.recorder.restore = lambda thread_id, view: None  # type: ignore[method-assign]
            folded = full_w.guard.recorder.view(thread)
        assert (restored.charter, restored.history, restored.approvals) == (folded.charter, folded.history, folded.approvals)
        assert restored.read_seq == folded.read_seq
    small, large = sorted(reads)
    assert totals[large] > 2 * totals[small]
    assert reads[large] < 1.5 * reads[small] and reads[large] < totals[large] / 3, (reads, totals)


def test_an_old_call_not_kept_by_the_snapshot_is_replayed_not_run_again(db_url, keys):
    thread = f"old-{uuid.uuid4().hex[:6]}"
    _run(db_url, keys, thread, VIEW_SNAPSHOT_EVERY + KEEP_RECENT_CALLS + 10)
    RUNS.clear()
    with open_warden(db_url, keys) as w:
        g = graph(w)
        assert call(g, thread, "c0", "v0") == "v0"  # the first call of the thread, long settled
        assert not w.guard.recorder.views[thread].calls.get(("c0", "x"))
        assert RUNS == []
        kinds = [e.kind for e in w.ledger.events(thread, subject="c0")]
        assert kinds.count(EventKind.TOOL_REPLAYED) == 1 and kinds.count(EventKind.TOOL_STARTED) == 1


def test_a_buggy_view_snapshot_is_caught_by_verify(db_url, keys):
    thread = f"bug-{uuid.uuid4().hex[:6]}"
    _run(db_url, keys, thread, 5)
    with open_warden(db_url, keys) as w:
        view = w.guard.recorder.views.get(thread) or w.guard.recorder.view_of(thread)
        w.guard.recorder.view(thread)
        doc = w.guard.recorder.views[thread].snapshot_doc()
        doc["history"]["run"]["denied"] += 3  # what a bug in the fold would record
        w.ledger.append(thread, [snapshot_draft(doc)])
        assert {f.reason for f in w.verify(thread_id=thread).findings} == {"snapshot_mismatch"}
        assert not w.audit(thread).verified
        assert view is not None
    res = CliRunner().invoke(app, ["audit", "verify", "--db", db_url, "--thread", thread])
    assert res.exit_code == 1 and "snapshot_mismatch" in res.output, res.output
