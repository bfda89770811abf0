"""Deciding on a cached view of a thread, safely: the ledger's watermark check and the guard's use of it.

A guard whose view of a thread is current (it read or wrote every event since) decides without
reading the ledger. What makes that safe: the decision's record commits only if the thread has
no event of the view's kinds after the view's watermark, checked in the appending transaction
(``Ledger.append(..., seen=Watermark(...))``). If another writer got there first, nothing is
written and the guard decides again on a fresh read, so every recorded decision was made on
the whole history. Only other calls the guard handled alongside (parallel tool calls of one
step) do not count: they were decided after it (see tests/test_parallel_calls.py).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from langgraph_warden import canonical
from langgraph_warden.charter import RunCharter
from langgraph_warden.errors import UnseenEventsError
from langgraph_warden.events import EventDraft, EventKind, Watermark
from langgraph_warden.guards.guard import ToolGuard
from langgraph_warden.guards.tools import ToolSpec
from langgraph_warden.warden import Warden

from .support.guard_probe import make_guard
from .support.tools import recording_echo

CHARTER = RunCharter(owner="alice@example.com", intent="watermarks", risk_tier="low")
TOOL_KINDS = (EventKind.TOOL_COMPLETED,)
echo, RUNS = recording_echo()


@pytest.fixture
def warden(db_url):
    with Warden.open(db_url, ephemeral_keys=True) as w:
        w.tools.register(ToolSpec("echo", sensitivity="public"))
        yield w


def graph(guard: ToolGuard):
    b = StateGraph(MessagesState)
    b.add_node("tools", ToolNode([echo], wrap_tool_call=guard, awrap_tool_call=guard.awrap))
    b.add_edge(START, "tools")
    b.add_edge("tools", END)
    return b.compile()


def message(*tcids: str) -> dict[str, Any]:
    calls = [{"name": "echo", "args": {"text": t}, "id": t, "type": "tool_call"} for t in tcids]
    return {"messages": [AIMessage(content="", tool_calls=calls)]}


def cfg(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


def decided(warden: Warden, thread: str, tcid: str) -> list[dict[str, Any]]:
    return [e.payload["decision"] for e in warden.ledger.events(thread, kinds=[EventKind.POLICY_DECIDED], subject=tcid)]


# ------------------------------------------------------------------ the ledger's check


def test_an_append_with_a_watermark_commits_only_if_nothing_newer_of_its_kinds(warden, db_url):
    thread = f"t-{uuid.uuid4().hex[:8]}"
    ledger = warden.ledger
    ledger.append(thread, [EventDraft(kind=EventKind.TOOL_COMPLETED, payload={"n": i}, subject=f"c{i}") for i in (1, 2)])
    ledger.append(thread, [EventDraft(kind=EventKind.TOOL_COMPLETED, payload={"n": 3}, subject="c3")], seen=Watermark(2, TOOL_KINDS))

    # From this process (cached head: on PostgreSQL the one-statement path) and from a ledger that
    # has never written to the thread (the locking path).
    with Warden.open(db_url, ephemeral_keys=True) as other:
        for writer in (ledger, other.ledger):
            with pytest.raises(UnseenEventsError) as caught:
                writer.append(thread, [EventDraft(kind=EventKind.TOOL_COMPLETED, payload={"n": 9})], seen=Watermark(2, TOOL_KINDS))
            assert caught.value.found == [(3, EventKind.TOOL_COMPLETED, "c3")] and caught.value.complete
            assert "seq 3" in str(caught.value) and "after seq 2" in str(caught.value)
            assert [e.seq for e in ledger.events(thread)] == [1, 2, 3]  # nothing written
            assert ledger.head(thread).seq == 3

    # Later events of other kinds do not count.
    ledger.append(thread, [EventDraft(kind=EventKind.CREDENTIAL_ISSUED, payload={"lease_id": "l1"})])
    (ev,) = ledger.append(thread, [EventDraft(kind=EventKind.TOOL_COMPLETED, payload={"n": 4})], seen=Watermark(3, TOOL_KINDS))
    assert ev.seq == 5
    assert warden.verify(thread_id=thread).ok


def test_append_soon_with_a_watermark_always_appends_and_says_whether_anything_was_unseen(warden):
    thread = f"t-{uuid.uuid4().hex[:8]}"
    ledger = warden.ledger
    ledger.append(thread, [EventDraft(kind=EventKind.TOOL_COMPLETED, payload={"n": 1})])
    settled: list[tuple[list[int] | None, bool]] = []

    def on_commit(events, current):
        settled.append(([e.seq for e in events] if events is not None else None, current))

    ledger.append_soon(thread, [EventDraft(kind=EventKind.TOOL_COMPLETED, payload={"n": 2})], seen=Watermark(1, TOOL_KINDS),
                       on_commit=on_commit)
    ledger.append_soon(thread, [EventDraft(kind=EventKind.TOOL_COMPLETED, payload={"n": 3})], seen=Watermark(1, TOOL_KINDS),
                       on_commit=on_commit)
    ledger.flush()
    assert settled == [([2], True), ([3], False)]
    assert [e.payload["n"] for e in ledger.events(thread)] == [1, 2, 3]
    assert warden.verify(thread_id=thread).ok


# ------------------------------------------------------------------ the guard


def _record_new_charter(warden: Warden, thread: str) -> None:
    warden.ledger.append(thread, [EventDraft(kind=EventKind.RUN_STARTED, payload={
        "charter": RunCharter(owner="bob@example.com", intent="watermarks", risk_tier="low").to_dict(),
        "workload_id": "w", "source": "api"})])


def _call_by_another_guard(warden: Warden, thread: str) -> None:
    other, _, _ = make_guard(warden)
    graph(other).invoke(message("other-1"), cfg(thread))


@pytest.mark.parametrize("writer", [_call_by_another_guard, _record_new_charter], ids=["another guard's call", "a new charter"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_decision_on_a_cached_view_is_recorded_only_if_the_thread_has_nothing_newer(warden, writer, mode):
    guard, sink, policy = make_guard(warden)
    g = graph(guard)
    thread = f"t-{uuid.uuid4().hex[:8]}"
    warden.start_run(thread, CHARTER)

    def run(tcid: str) -> None:
        out = g.invoke(message(tcid), cfg(thread)) if mode == "sync" else asyncio.run(g.ainvoke(message(tcid), cfg(thread)))
        assert out["messages"][-1].content == tcid

    run("c1")
    writer(warden, thread)  # another writer, unknown to this guard's view
    RUNS.clear()
    sink.reset()
    policy.inputs.clear()
    run("c2")

    # Decided on the cached view first (no read), refused by the ledger, decided again on a read.
    assert len(policy.inputs) == 2 and sink.reads == 1
    stale, fresh = policy.inputs
    assert fresh["history"]["run"]["allowed"] > stale["history"]["run"]["allowed"] or fresh["run"] != stale["run"]
    (recorded,) = decided(warden, thread, "c2")
    assert recorded["input_digest"] == canonical.digest(fresh) != canonical.digest(stale)
    assert RUNS == ["c2"]
    assert warden.verify(thread_id=thread).ok

    # The read made the view current again: the next call decides once, without reading.
    sink.reset()
    policy.inputs.clear()
    run("c3")
    assert (len(policy.inputs), sink.reads) == (1, 0)
    (recorded,) = decided(warden, thread, "c3")
    assert recorded["input_digest"] == canonical.digest(policy.inputs[0])


def take_over(db_url: str, thread: str) -> None:
    """Another process states a new charter on the thread (run by the ``forked`` fixture)."""
    with Warden.open(db_url, ephemeral_keys=True) as w:
        w.start_run(thread, owner="carol@example.com", intent="taken over", risk_tier="high")


def test_a_charter_recorded_by_another_process_is_seen_by_the_next_decision(warden, db_url, tmp_path, forked):
    guard, sink, policy = make_guard(warden)
    g = graph(guard)
    thread = f"t-{uuid.uuid4().hex[:8]}"
    warden.start_run(thread, CHARTER)
    g.invoke(message("c1"), cfg(thread))
    other = forked.run("tests.test_watermark", db_url, thread, function="take_over")
    assert other.returncode == 0, other.stderr
    policy.inputs.clear()
    g.invoke(message("c2"), cfg(thread))
    (recorded,) = decided(warden, thread, "c2")
    assert policy.inputs[-1]["run"]["owner"] == "carol@example.com" and policy.inputs[-1]["run"]["risk_tier"] == "high"
    assert recorded["input_digest"] == canonical.digest(policy.inputs[-1])


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_parallel_calls_of_one_step_are_each_decided_once(warden, mode):
    guard, _, policy = make_guard(warden)
    g = graph(guard)
    thread = f"t-{uuid.uuid4().hex[:8]}"
    warden.start_run(thread, CHARTER)
    RUNS.clear()
    for step in range(6):  # 18 calls: under the default policy's per-tool limit of 20
        batch = message(f"s{step}-a", f"s{step}-b", f"s{step}-c")
        if mode == "sync":
            g.invoke(batch, cfg(thread))
        else:
            asyncio.run(g.ainvoke(batch, cfg(thread)))
    tcids = [f"s{s}-{x}" for s in range(6) for x in "abc"]
    assert sorted(RUNS) == sorted(tcids)
    for tcid in tcids:
        assert len(decided(warden, thread, tcid)) == 1
    assert len(policy.inputs) == len(tcids)
    assert warden.verify(thread_id=thread).ok


def test_a_sibling_recorded_while_a_call_was_deciding_does_not_make_its_decision_stale(warden, monkeypatch):
    """Forced order: call a decides on the cached view; its sibling b is then decided (on a history
    holding a), recorded and run before a's decision is recorded. Only b's events are new, and b
    was decided after a, so a is decided once."""
    guard, _, policy = make_guard(warden)
    thread = f"t-{uuid.uuid4().hex[:8]}"
    warden.start_run(thread, CHARTER)
    graph(guard).invoke(message("warm-up"), cfg(thread))
    a_viewed, b_ran = threading.Event(), threading.Event()
    view, prepare, started = guard.recorder.view, guard._prepare, guard.outcomes.started

    def view_then_signal(thread_id, call=None, *, trust=False):
        snap = view(thread_id, call, trust=trust)
        if call is not None and call[0] == "a":
            assert snap.seen is not None  # decided without a read
            a_viewed.set()
        return snap

    def prepare_b_after_a_viewed(request, trust=False):
        if request.tool_call["id"] == "b":
            assert a_viewed.wait(10)
        return prepare(request, trust)

    def record_a_after_b_ran(plan, lease):
        if plan.tool_call_id == "a":
            assert b_ran.wait(10)
        return started(plan, lease)

    @tool
    def signal(text: str) -> str:
        """Return the text; say when b ran."""
        if text == "b":
            b_ran.set()
        return text

    monkeypatch.setattr(guard.recorder, "view", view_then_signal)
    monkeypatch.setattr(guard, "_prepare", prepare_b_after_a_viewed)
    monkeypatch.setattr(guard.outcomes, "started", record_a_after_b_ran)
    warden.tools.register(ToolSpec("signal", sensitivity="public"))
    b = StateGraph(MessagesState)
    b.add_node("tools", ToolNode([signal], wrap_tool_call=guard))
    b.add_edge(START, "tools")
    b.add_edge("tools", END)
    calls = [{"name": "signal", "args": {"text": t}, "id": t, "type": "tool_call"} for t in ("a", "b")]
    policy.inputs.clear()
    out = b.compile().invoke({"messages": [AIMessage(content="", tool_calls=calls)]}, cfg(thread))
    assert [m.content for m in out["messages"][1:]] == ["a", "b"]
    a_input, b_input = policy.inputs  # a decided once, then b
    assert [i["args"]["text"] for i in policy.inputs] == ["a", "b"]
    assert [h["tool"] for h in b_input["history"]["recent"]] == [h["tool"] for h in a_input["history"]["recent"]][-19:] + ["signal"]
    (recorded,) = decided(warden, thread, "a")
    assert recorded["input_digest"] == canonical.digest(a_input)
    assert warden.verify(thread_id=thread).ok


def test_a_view_dropped_from_the_cache_while_deciding_still_checks_the_decision(warden, monkeypatch):
    guard, sink, policy = make_guard(warden)
    g = graph(guard)
    thread = f"t-{uuid.uuid4().hex[:8]}"
    warden.start_run(thread, CHARTER)
    g.invoke(message("c1"), cfg(thread))
    view = guard.recorder.view

    def view_then_drop(thread_id, call=None, *, trust=False):
        snap = view(thread_id, call, trust=trust)
        if snap.seen is not None:  # decided without a read: now the view is evicted and another writer records
            guard.recorder.views.pop(thread_id)
            _record_new_charter(warden, thread_id)
        return snap

    monkeypatch.setattr(guard.recorder, "view", view_then_drop)
    policy.inputs.clear()
    g.invoke(message("c2"), cfg(thread))
    assert [i["run"]["owner"] for i in policy.inputs] == ["alice@example.com", "bob@example.com"]
    (recorded,) = decided(warden, thread, "c2")
    assert recorded["input_digest"] == canonical.digest(policy.inputs[1])
