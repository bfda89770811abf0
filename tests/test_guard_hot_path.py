"""The guard's per-call cost contract and the cached thread view it relies on.

Per allowed call the guard makes at most ONE ledger read (charter, step history, approvals and
the call's own record together) and none once its view of the thread is current (it wrote or
read everything since; see tests/test_watermark.py for why that is safe), ONE durable commit it
waits for (``policy.decided`` + ``tool.started`` before the side effect) and ONE append it does
not wait for (``tool.completed`` after it, see ``Ledger.append_soon``). The thread view it keeps
between calls must never change a decision: a cold guard (nothing cached, whole history read)
and a warm one build the same policy input, and an evicted view is rebuilt from the ledger.
"""

from __future__ import annotations

import copy

import math
import re
import uuid
from datetime import datetime, timezone

import pytest
from langchain_core.messages import AIMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from langgraph_warden import canonical
from langgraph_warden.charter import RunCharter
from langgraph_warden.errors import ConfigurationError
from langgraph_warden.events import EventDraft, EventKind
from langgraph_warden.guards import recorder as recorder_module
from langgraph_warden.guards.guard import ToolGuard
from langgraph_warden.guards.thread_view import _VIEW_KINDS, _ThreadView
from langgraph_warden.guards.policy import build_policy_input
from langgraph_warden.guards.tools import ToolSpec
from langgraph_warden.warden import Warden

from .support.guard_probe import make_guard
from .support.tools import recording_echo

CHARTER = RunCharter(owner="alice@example.com", intent="hot path", risk_tier="low")


echo, RUNS = recording_echo()


def graph(guard: ToolGuard):
    b = StateGraph(MessagesState)
    b.add_node("tools", ToolNode([echo], wrap_tool_call=guard))
    b.add_edge(START, "tools")
    b.add_edge("tools", END)
    return b.compile()


def invoke(g, thread: str, tcid: str, text: str = "hi") -> str:
    msg = AIMessage(content="", tool_calls=[{"name": "echo", "args": {"text": text}, "id": tcid, "type": "tool_call"}])
    out = g.invoke({"messages": [msg]}, {"configurable": {"thread_id": thread}})
    return out["messages"][-1].content


def seed(warden: Warden, thread: str, calls: int) -> None:
    """A run charter and ``calls`` earlier completed calls, written straight to the ledger (not by this guard)."""
    drafts = [EventDraft(kind=EventKind.RUN_STARTED, payload={"charter": CHARTER.to_dict(), "workload_id": "w", "source": "api"})]
    for i in range(calls):
        base = {"tool_call_id": f"h{i}", "tool": f"earlier_{i % 6}", "args_digest": "sha256:" + "0" * 64}
        decision = {"allow": True, "require_approval": False, "reasons": [], "scopes": [], "ttl_seconds": 60, "obligations": {},
                    "engine": "seed", "policy_revision": "seed", "decision_id": None, "input_digest": "seed"}
        drafts.append(EventDraft(kind=EventKind.POLICY_DECIDED, payload={**base, "decision": decision, "enforced": True}, subject=f"h{i}"))
        drafts.append(EventDraft(kind=EventKind.TOOL_STARTED, payload={**base, "attempt": 1}, subject=f"h{i}"))
        drafts.append(EventDraft(kind=EventKind.TOOL_COMPLETED, payload={**base, "attempt": 1, "status": "success"}, subject=f"h{i}"))
    warden.ledger.append(thread, drafts)


@pytest.fixture
def warden(db_url):
    with Warden.open(db_url, ephemeral_keys=True) as w:
        w.tools.register(ToolSpec("echo", sensitivity="public"))
        yield w


def decided(policy_input: dict) -> int:
    """How many decisions the (version-2) policy input counts in the run."""
    run = policy_input["history"]["run"]
    return run["allowed"] + run["require_approval"] + run["denied"]


@pytest.mark.parametrize("history", [0, 20])
def test_allowed_call_on_a_fresh_thread_is_one_read_one_commit_and_one_queued_append(warden, history):
    guard, sink, policy = make_guard(warden)
    g = graph(guard)
    thread = f"t-{uuid.uuid4().hex[:8]}"
    seed(warden, thread, history)
    assert invoke(g, thread, "c1") == "hi"
    assert (sink.reads, sink.appends, sink.queued) == (1, 1, 1)
    assert sink.rows == 1 + 3 * history  # the whole history, read once
    assert decided(policy.inputs[-1]) == history
    kinds = [e.kind for e in warden.ledger.events(thread, subject="c1")]
    assert kinds == [EventKind.POLICY_DECIDED, EventKind.TOOL_STARTED, EventKind.TOOL_COMPLETED]
    started = warden.ledger.events(thread, kinds=[EventKind.TOOL_STARTED], subject="c1")[0].payload
    assert started["executed_args_digest"] == canonical.digest({"text": "hi"}) == started["args_digest"]

    # The next call on the thread reads nothing: the guard wrote everything since its read.
    sink.reset()
    assert invoke(g, thread, "c2") == "hi"
    assert (sink.reads, sink.appends, sink.queued, sink.rows) == (0, 1, 1, 0)
    assert decided(policy.inputs[-1]) == history + 1
    last = policy.inputs[-1]["history"]["recent"][-1]
    assert last == {**last, "tool": "echo", "outcome": "completed"}


def test_cold_and_warm_guards_build_the_same_policy_input(warden):
    warm, _, warm_policy = make_guard(warden)
    g_warm = graph(warm)
    thread = f"t-{uuid.uuid4().hex[:8]}"
    seed(warden, thread, 5)
    for i in range(3):
        invoke(g_warm, thread, f"w{i}")
    cold, _, cold_policy = make_guard(warden)  # nothing cached: folds the whole history at once
    invoke(graph(cold), thread, "c-cold")
    invoke(g_warm, thread, "c-warm")
    a, b = cold_policy.inputs[-1], warm_policy.inputs[-1]
    # The warm guard's input also holds the cold guard's call, decided just before it.
    assert b["history"]["recent"][:-1] == a["history"]["recent"] and decided(a) == 5 + 3
    assert b["history"]["recent"][-1]["tool"] == "echo" and b["history"]["recent"][-1]["outcome"] == "completed"
    echo_a, echo_b = a["history"]["tools"]["echo"], b["history"]["tools"]["echo"]
    assert (echo_b["allowed"], echo_b["completed"]) == (echo_a["allowed"] + 1, echo_a["completed"] + 1)
    assert a["run"] == b["run"] and a["approvals"] == b["approvals"] == []


def test_replay_reads_the_recorded_result_and_does_not_run_again(warden):
    guard, sink, _ = make_guard(warden)
    g = graph(guard)
    thread = f"t-{uuid.uuid4().hex[:8]}"
    seed(warden, thread, 2)
    RUNS.clear()
    assert invoke(g, thread, "c1", "once") == "once"
    for fresh in (False, True):  # from the cached view, then from a new guard that folds everything
        if fresh:
            guard, sink, _ = make_guard(warden)
            g = graph(guard)
        sink.reset()
        assert invoke(g, thread, "c1", "once") == "once"
        assert RUNS == ["once"]
        assert (sink.appends, sink.queued) == (1, 0)  # tool.replayed
    kinds = [e.kind for e in warden.ledger.events(thread, subject="c1")]
    assert kinds.count(EventKind.TOOL_REPLAYED) == 2 and kinds.count(EventKind.TOOL_STARTED) == 1


def test_thread_views_are_bounded_and_rebuilt_from_the_ledger(warden, monkeypatch):
    monkeypatch.setattr(recorder_module, "VIEW_CACHE_SIZE", 2)
    guard, sink, policy = make_guard(warden)
    g = graph(guard)
    threads = [f"t{i}-{uuid.uuid4().hex[:6]}" for i in range(3)]
    for i, t in enumerate(threads):
        seed(warden, t, i + 1)
        invoke(g, t, "c1")
    assert list(guard.recorder.views) == threads[1:]
    sink.reset()
    invoke(g, threads[0], "c2")  # evicted: rebuilt from the whole history
    assert sink.rows == 1 + 3 * 1 + 3
    assert decided(policy.inputs[-1]) == 2
    assert list(guard.recorder.views) == [threads[2], threads[0]]


def test_incremental_fold_equals_one_fold_and_snapshots_do_not_change(warden):
    guard, _, _ = make_guard(warden)
    g = graph(guard)
    thread = f"t-{uuid.uuid4().hex[:8]}"
    seed(warden, thread, 4)
    for i in range(3):
        invoke(g, thread, f"c{i}")
    events = warden.ledger.summaries(thread, kinds=_VIEW_KINDS)
    assert events == [e.summary() for e in warden.ledger.events(thread, kinds=_VIEW_KINDS)]
    whole, pieces = _ThreadView(), _ThreadView()
    whole.fold(events)
    first = None
    for i in range(0, len(events), 2):
        pieces.fold(events[i:i + 2])
        if first is None:
            first = pieces.snapshot(("h0", "sha256:" + "0" * 64))
            frozen = copy.deepcopy(first.history)
    assert first.history == frozen  # later folds replaced entries, never mutated handed-out ones
    assert pieces.last_seq == whole.last_seq == events[-1].seq
    assert pieces.snapshot().history == whole.snapshot().history
    assert pieces.charter == whole.charter == CHARTER
    assert pieces.calls.keys() == whole.calls.keys()
    for key in whole.calls:
        assert pieces.snapshot(key).call == whole.snapshot(key).call
    rec = whole.snapshot(("c1", canonical.digest({"text": "hi"}))).call
    assert rec.attempts == {1: "completed"} and rec.completed_seq is not None and rec.decided is not None


# ------------------------------------------------------------------ policy input fast paths

_VALUES = [
    None, True, 0, -7, 2**70, 1.5, -0.0, "plain", "naïve ünïcode", "", [], (), {},
    {"a": [1, (2, 3)], "b": {"c": None}}, {"$dollar": 1}, {"nested": {"$bytes": "eA=="}},
    b"raw", datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=timezone.utc), {"when": datetime(2025, 1, 1, tzinfo=timezone.utc)},
    [1.0, 2, "x", False],
]


@pytest.mark.parametrize("value", _VALUES, ids=repr)
def test_policy_input_values_equal_the_canonical_round_trip(value):
    doc = build_policy_input(
        workload_id="spiffe://example.org/agent", thread_id="t", tool_name="echo", tool_spec=None,
        args={"v": value}, target=value, approvals=[{"v": value}], now="2025-01-01T00:00:00.000000Z",
    )
    expected = canonical.decode(canonical.encode(value))
    assert doc["args"] == {"v": expected} and doc["target"] == expected and doc["approvals"] == [{"v": expected}]
    assert type(doc["target"]) is type(expected)
    if isinstance(value, (dict, list, tuple)) and value:
        assert doc["target"] is not value  # a copy: the caller's value is not shared with the engine


@pytest.mark.parametrize("bad", [float("nan"), math.inf, "\ud800", {1: "int key"}, object()], ids=repr)
def test_policy_input_still_refuses_what_canonical_json_refuses(bad):
    with pytest.raises(ConfigurationError, match="policy input args: not JSON-encodable"):
        build_policy_input(workload_id="w", thread_id="t", tool_name="echo", tool_spec=None, args={"v": bad})


def test_history_entries_are_copied_and_still_checked():
    """Version 1's list of calls (version 2's recent entries share the check: test_policy_v2)."""
    entry = {"tool": "echo", "decision": "allow", "outcome": None, "ts": "2025-01-01T00:00:00+00:00"}
    doc = build_policy_input(workload_id="w", thread_id="t", tool_name="echo", tool_spec=None, history=[entry],
                             version=1)
    assert doc["history"] == [entry] and doc["history"][0] is not entry
    ts = datetime(2025, 1, 1, tzinfo=timezone.utc)
    doc = build_policy_input(workload_id="w", thread_id="t", tool_name="echo", tool_spec=None,
                             history=[{"tool": "echo", "decision": "deny", "ts": ts}], version=1)
    assert doc["history"] == [{"tool": "echo", "decision": "deny", "outcome": None, "ts": "2025-01-01T00:00:00.000000Z"}]
    for bad, where in (({**entry, "decision": "maybe"}, "history[0].decision"), ({**entry, "tool": ""}, "history[0].tool"),
                       ({**entry, "outcome": 3}, "history[0].outcome")):
        with pytest.raises(ConfigurationError, match=re.escape(f"policy input {where}")):
            build_policy_input(workload_id="w", thread_id="t", tool_name="echo", tool_spec=None, history=[bad],
                               version=1)
