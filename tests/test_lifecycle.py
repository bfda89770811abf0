"""The one fold of a tool call's lifecycle (``plugin/lifecycle.py``), pinned on real histories, the
typed payload of every event a guarded run writes, and the guard's view and the audit trail
agreeing on every call they read from the same history."""

from __future__ import annotations

import typing
from collections.abc import Sequence

import pytest
from langchain_core.messages import HumanMessage

from langgraph_warden.canonical import digest
from langgraph_warden.event_payloads import PAYLOADS
from langgraph_warden.events import EventDraft, EventKind, EventSummary
from langgraph_warden.guards.thread_view import _VIEW_KINDS, _CallRecord, _ThreadView
from langgraph_warden.lifecycle import CALL_KINDS, CallAccount, CallLifecycle
from langgraph_warden.warden import Warden

from .support.agents import SideEffects, call, turn
from .test_audit_trail import _run
from .test_guard import build


@pytest.fixture
def warden(db_url):
    with Warden.open(db_url, ephemeral_keys=True) as w:
        yield w


def _summaries(warden: Warden, thread: str) -> list[EventSummary]:
    return [e.summary() for e in warden.ledger.events(thread)]


def _lifecycles(warden: Warden, thread: str) -> dict[str, CallLifecycle[EventSummary]]:
    """Each call's lifecycle (by tool call id), folded from its events as the guard reads them."""
    calls: dict[str, CallLifecycle[EventSummary]] = {}
    for e in _summaries(warden, thread):
        if e.kind in CALL_KINDS:
            calls.setdefault(e.payload["tool_call_id"], CallLifecycle()).apply(e)
    return calls


def _accounts(warden: Warden, thread: str) -> dict[str, CallAccount[EventSummary]]:
    accounts: dict[str, CallAccount[EventSummary]] = {}
    for e in _summaries(warden, thread):
        tcid = e.payload.get("tool_call_id")
        if tcid and e.kind.startswith(("tool.", "policy.", "approval.", "credential.")):
            accounts.setdefault(tcid, CallAccount()).apply(e)
    return accounts


def _seq_of(warden: Warden, thread: str, kind: str, tool_call_id: str) -> int:
    return next(e.seq for e in warden.ledger.events(thread, kinds=[kind]) if e.payload["tool_call_id"] == tool_call_id)


# ------------------------------------------------------------------ the fold on real runs
def test_allowed_approved_rejected_denied_and_replayed_calls(warden, tmp_path):
    """c1 allowed and completed (replayed when its task re-ran), r1 approved then completed, e1
    rejected by the approver, d1 denied by policy."""
    _run(warden, SideEffects(tmp_path / "fx.jsonl"), "mix")
    calls, accounts = _lifecycles(warden, "mix"), _accounts(warden, "mix")

    c1 = calls["c1"]
    assert c1.decided is not None and c1.decided.payload["decision"]["allow"] is True
    assert c1.attempts == {1: "completed"} and c1.completed_seq == _seq_of(warden, "mix", EventKind.TOOL_COMPLETED, "c1")
    assert c1.settled and c1.retry_status() == "completed" and c1.in_doubt_attempt is None and c1.next_attempt == 2
    # A replay answers from the record: it changes nothing the guard decides on, the account counts it.
    assert (accounts["c1"].status, accounts["c1"].replays, accounts["c1"].starts) == ("authorised+completed", 1, 1)

    r1 = calls["r1"]
    assert r1.approval_requested is not None and r1.approval_final is not None
    assert r1.approval_final.kind == EventKind.APPROVAL_GRANTED and r1.attempts == {1: "completed"}
    assert r1.started_seq[1] > r1.approval_final.seq and not r1.approval_spent() and r1.settled
    assert (accounts["r1"].status, accounts["r1"].approver, accounts["r1"].authorised) == (
        "authorised+completed", "bob@example.com", True)

    e1 = calls["e1"]
    assert e1.approval_final is not None and e1.approval_final.kind == EventKind.APPROVAL_REJECTED
    assert e1.denied is not None and e1.attempts == {} and e1.settled and e1.retry_status() is None
    assert (accounts["e1"].status, accounts["e1"].reasons, accounts["e1"].ran) == ("rejected", ["rejected_by_approver"], False)

    d1 = calls["d1"]
    assert d1.decided is not None and d1.decided.payload["decision"]["allow"] is False
    assert d1.denied is not None and d1.attempts == {} and d1.settled and d1.retry_status() is None
    assert (accounts["d1"].status, accounts["d1"].authorised) == ("denied", False)
    assert "unknown_tool" in accounts["d1"].reasons


def test_failed_then_retried_call(warden, tmp_path):
    effects = SideEffects(tmp_path / "fx.jsonl")
    g = build(warden, effects, [turn(call("issue_refund", {"order_id": "o-1", "amount": 5}, "r1")), turn(text="ok")],
              fail_once={"refund"})
    cfg = warden.start_run("fail", owner="alice@example.com", intent="refund", risk_tier="low")
    with pytest.raises(RuntimeError, match="payment gateway timeout"):
        g.invoke({"messages": [HumanMessage("x")]}, cfg)
    r1 = _lifecycles(warden, "fail")["r1"]
    assert r1.attempts == {1: "failed"} and r1.in_doubt_attempt is None and r1.next_attempt == 2
    assert not r1.settled and r1.retry_status() is None and r1.completed_seq is None
    assert _accounts(warden, "fail")["r1"].status == "failed"

    g.invoke(None, cfg)  # the failed step runs again: a new attempt of the same call
    r1 = _lifecycles(warden, "fail")["r1"]
    assert r1.attempts == {1: "failed", 2: "completed"} and r1.settled and r1.retry_status() == "completed"
    account = _accounts(warden, "fail")["r1"]
    assert (account.status, account.starts, account.ran, account.executed_twice) == ("authorised+completed", 2, True, "")
    assert len(account.leases) == 2  # a credential per attempt


def test_in_doubt_after_a_crash_then_aborted(warden, tmp_path):
    """What a process killed inside the tool leaves: its decision and tool.started. The next run
    records the abort and refuses the retry (the tool is not idempotent)."""
    g = build(warden, SideEffects(tmp_path / "fx.jsonl"), [turn(call("send_email", {"to": "a@b.c", "body": "x"}, "e1")),
                                                           turn(text="ok")])
    cfg = warden.start_run("doubt", owner="alice@example.com", intent="mail", risk_tier="low")
    base = {"tool_call_id": "e1", "tool": "send_email", "args_digest": digest({"to": "a@b.c", "body": "x"})}
    warden.ledger.append("doubt", [
        EventDraft(EventKind.POLICY_DECIDED, {**base, "decision": {"allow": True, "require_approval": False, "reasons": []},
                                              "enforced": True}, subject="e1"),
        EventDraft(EventKind.TOOL_STARTED, {**base, "attempt": 1, "approval_request_id": None}, subject="e1"),
    ])
    e1 = _lifecycles(warden, "doubt")["e1"]
    assert e1.in_doubt_attempt == 1 and e1.retry_status() == "in_doubt" and not e1.settled
    assert _accounts(warden, "doubt")["e1"].status == "in-doubt"

    g.invoke({"messages": []}, cfg)
    e1 = _lifecycles(warden, "doubt")["e1"]
    assert e1.attempts == {1: "aborted"} and e1.in_doubt_attempt is None and e1.denied is not None
    assert e1.settled and e1.retry_status() == "in_doubt"  # a retry under a new id would inherit the doubt
    account = _accounts(warden, "doubt")["e1"]
    assert (account.status, account.aborts, account.authorised, account.reasons) == ("aborted", 1, True, ["outcome_unknown"])


# ------------------------------------------------------------------ superseded retries
def _retry_history(warden: Warden, thread: str, *, approved: bool) -> None:
    """Call m1 lost its model message and was asked for again as m2 (same tool and arguments):
    the events the guard's takeover writes (see ``DecisionPipeline._take_over`` in guards/decision.py)."""
    base = {"tool": "send_email", "args_digest": digest({"to": "a@b.c"})}
    m1, m2 = {**base, "tool_call_id": "m1"}, {**base, "tool_call_id": "m2"}
    allow = {"allow": True, "require_approval": approved, "reasons": []}
    drafts = [EventDraft(EventKind.POLICY_DECIDED, {**m1, "decision": allow, "enforced": True}, subject="m1")]
    if approved:
        drafts += [
            EventDraft(EventKind.APPROVAL_REQUESTED, {**m1, "request_id": "apr_1", "request": {}, "origin": None}, subject="m1"),
            EventDraft(EventKind.APPROVAL_GRANTED, {**m1, "request_id": "apr_1", "approver": "bob", "decision": "approve",
                                                    "answer": {}}, subject="m1"),
        ]
        status = "approved"
    else:
        drafts += [
            EventDraft(EventKind.TOOL_STARTED, {**m1, "attempt": 1, "approval_request_id": None,
                                                "origin": {"checkpoint_ns": "", "checkpoint_id": "cp-1", "durable": True}},
                       subject="m1"),
            EventDraft(EventKind.TOOL_ABORTED, {**m1, "attempt": 1, "outcome": "unknown", "why": "retried as m2"}, subject="m1"),
        ]
        status = "in_doubt"
    drafts += [
        EventDraft(EventKind.TOOL_SUPERSEDED, {**m1, "superseded_by": "m2", "status": status, "why": "lost message"},
                   subject="m1"),
        EventDraft(EventKind.POLICY_DECIDED, {**m2, "decision": {**allow, "require_approval": False}, "enforced": True,
                                              "retry_of": "m1"}, subject="m2"),
        EventDraft(EventKind.TOOL_STARTED, {**m2, "attempt": 1, "approval_request_id": "apr_1" if approved else None,
                                            "retry_of": "m1"}, subject="m2"),
        EventDraft(EventKind.TOOL_COMPLETED, {**m2, "attempt": 1, "status": "success"}, subject="m2"),
    ]
    warden.ledger.append(thread, drafts)


@pytest.mark.parametrize("approved", [False, True], ids=["in-doubt", "approved"])
def test_superseded_retry(warden, approved):
    thread = f"retry-{approved}"
    _retry_history(warden, thread, approved=approved)
    calls, accounts = _lifecycles(warden, thread), _accounts(warden, thread)
    m1, m2 = calls["m1"], calls["m2"]
    assert m1.superseded_by == "m2" and m1.settled and m1.retry_status() is None  # taken over once, never again
    if approved:
        assert m1.attempts == {} and m1.approval_final is not None
        assert accounts["m1"].status == "superseded"
    else:
        assert m1.attempts == {1: "aborted"} and m1.origin == ("", "cp-1") and m1.origin_durable
        assert accounts["m1"].status == "aborted"
    assert m2.attempts == {1: "completed"} and m2.settled and m2.superseded_by is None
    assert (accounts["m2"].retry_of, accounts["m2"].status, accounts["m2"].executed_twice) == ("m1", "authorised+completed", "")


def test_superseded_status_needs_the_takeover_event(warden):
    """Before its tool.superseded, an approved call is one a retry would take over (the guard's
    reading) and ``approved`` (the trail's): the same fold gives both."""
    _retry_history(warden, "pre", approved=True)
    events = [e.summary() for e in warden.ledger.events("pre", subject="m1")]
    before = [e for e in events if e.kind != EventKind.TOOL_SUPERSEDED]
    lifecycle, account = CallLifecycle[EventSummary](), CallAccount[EventSummary]()
    for e in before:
        lifecycle.apply(e)
        account.apply(e)
    assert lifecycle.retry_status() == "approved" and account.status == "approved" and account.retry_status() == "approved"


def test_a_new_request_after_an_expired_one_is_open_again(warden):
    """An approval that expired refuses the call; asked again, the call waits on the new request
    (its earlier answer no longer stands)."""
    m1 = {"tool_call_id": "x1", "tool": "send_email", "args_digest": digest({"to": "a@b.c"})}
    gate = {"allow": True, "require_approval": True, "reasons": ["external"]}
    warden.ledger.append("expired", [
        EventDraft(EventKind.POLICY_DECIDED, {**m1, "decision": gate, "enforced": True}, subject="x1"),
        EventDraft(EventKind.APPROVAL_REQUESTED, {**m1, "request_id": "apr_1", "request": {}}, subject="x1"),
        EventDraft(EventKind.APPROVAL_EXPIRED, {**m1, "request_id": "apr_1", "expires_at": "t", "approver": None}, subject="x1"),
    ])
    x1, account = _lifecycles(warden, "expired")["x1"], _accounts(warden, "expired")["x1"]
    assert x1.approval_final is not None and x1.approval_final.kind == EventKind.APPROVAL_EXPIRED
    assert (account.status, account.reasons) == ("denied", ["approval_expired"])
    warden.ledger.append("expired", [
        EventDraft(EventKind.APPROVAL_REQUESTED, {**m1, "request_id": "apr_2", "request": {}}, subject="x1")])
    x1, account = _lifecycles(warden, "expired")["x1"], _accounts(warden, "expired")["x1"]
    assert x1.approval_requested is not None and x1.approval_requested.payload["request_id"] == "apr_2"
    assert x1.approval_final is None and x1.retry_status() is None and account.status == "approval-pending"
    assert warden.audit("expired").action("x1").approval_request_id == "apr_2"


def test_a_retry_running_under_the_earlier_calls_approval_is_authorised(warden):
    """The guard decides a retry again (the policy still requires approval) and runs it under the
    earlier call's granted request: the trail reads it authorised, as the attempt's check does."""
    _retry_history(warden, "inherit", approved=True)
    trail = warden.audit("inherit")
    # _retry_history decides m2 without approval; a second thread holds the real takeover's decision.
    base = {"tool": "send_email", "args_digest": digest({"to": "a@b.c"})}
    m1, m2 = {**base, "tool_call_id": "m1"}, {**base, "tool_call_id": "m2"}
    gate = {"allow": True, "require_approval": True, "reasons": ["external"]}
    warden.ledger.append("inherit-gated", [
        EventDraft(EventKind.POLICY_DECIDED, {**m1, "decision": gate, "enforced": True}, subject="m1"),
        EventDraft(EventKind.APPROVAL_REQUESTED, {**m1, "request_id": "apr_1", "request": {}, "origin": None}, subject="m1"),
        EventDraft(EventKind.APPROVAL_GRANTED, {**m1, "request_id": "apr_1", "approver": "bob", "decision": "approve",
                                                "answer": {}}, subject="m1"),
        EventDraft(EventKind.TOOL_SUPERSEDED, {**m1, "superseded_by": "m2", "status": "approved", "why": "lost message"},
                   subject="m1"),
        EventDraft(EventKind.POLICY_DECIDED, {**m2, "decision": gate, "enforced": True, "retry_of": "m1"}, subject="m2"),
        EventDraft(EventKind.TOOL_STARTED, {**m2, "attempt": 1, "approval_request_id": "apr_1", "retry_of": "m1"}, subject="m2"),
        EventDraft(EventKind.TOOL_COMPLETED, {**m2, "attempt": 1, "status": "success"}, subject="m2"),
    ])
    for trail in (trail, warden.audit("inherit-gated")):
        m2_action = trail.action("m2")
        assert (m2_action.status, m2_action.authorised, m2_action.ran_without_authorisation) == (
            "authorised+completed", True, False)
        assert trail.summary.ran_without_authorisation == []


def test_a_tool_that_pauses_itself_is_not_read_as_run_twice(warden, tmp_path):
    """A tool may call ``interrupt()`` itself; LangGraph re-runs it on resume. The guard records
    ``tool.suspended`` for the pause, so the second start is that resume, not a second execution."""
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import ToolNode, tools_condition
    from langgraph.types import Command, interrupt
    from langchain_core.tools import tool

    from langgraph_warden import ToolSpec
    from langgraph_warden.testing import ScriptedChatModel

    @tool
    def confirm_transfer(amount: int) -> str:
        """Move money after a person confirms."""
        answer = interrupt({"confirm": amount})
        return f"transfer of {amount}: {answer}"

    warden.tools.register(ToolSpec("confirm_transfer"))
    model = ScriptedChatModel(script=[turn(call("confirm_transfer", {"amount": 5}, "p1")), turn(text="done")])
    b = StateGraph(MessagesState)
    b.add_node("agent", lambda state: {"messages": [model.invoke(state["messages"])]})
    b.add_node("tools", ToolNode([confirm_transfer], wrap_tool_call=warden.guard))
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", tools_condition)
    b.add_edge("tools", "agent")
    g = b.compile(checkpointer=warden.checkpointer)
    cfg = warden.start_run("pauses", owner="alice@example.com", intent="move money", risk_tier="low")
    first = g.invoke({"messages": [HumanMessage("move 5")]}, cfg)
    assert "__interrupt__" in first
    g.invoke(Command(resume="confirmed"), cfg)
    kinds = [e.kind for e in warden.ledger.events("pauses", subject="p1")]
    assert kinds.count(EventKind.TOOL_SUSPENDED) == 1 and kinds.count(EventKind.TOOL_STARTED) == 2
    action = warden.audit("pauses").action("p1")
    assert (action.status, action.executed_twice) == ("authorised+completed", "")
    assert warden.audit("pauses").summary.side_effects_executed_twice == []


# ------------------------------------------------------------------ one vocabulary, one reading
def _payload_problems(events: Sequence[EventSummary]) -> list[str]:
    problems = []
    for e in events:
        declared = PAYLOADS.get(e.kind)
        if declared is None:
            problems.append(f"{e.kind}: no declared payload type")
            continue
        keys, known = set(e.payload), set(typing.get_type_hints(declared))
        required = set(declared.__required_keys__)  # type: ignore[attr-defined]
        if keys - known or required - keys:
            problems.append(f"{e.kind}: undeclared {sorted(keys - known)}, missing {sorted(required - keys)}")
    return problems


def test_every_event_of_a_guarded_run_has_its_declared_payload(warden, tmp_path):
    _run(warden, SideEffects(tmp_path / "fx.jsonl"), "typed")
    g = build(warden, SideEffects(tmp_path / "fx2.jsonl"),
              [turn(call("issue_refund", {"order_id": "o-1", "amount": 5}, "r1")), turn(text="ok")], fail_once={"refund"})
    cfg = warden.start_run("typed-fail", owner="alice@example.com", intent="refund", risk_tier="low")
    with pytest.raises(RuntimeError):
        g.invoke({"messages": [HumanMessage("x")]}, cfg)
    g.invoke(None, cfg)
    events = _summaries(warden, "typed") + _summaries(warden, "typed-fail")
    kinds = {e.kind for e in events}
    assert {EventKind.CREDENTIAL_ISSUED, EventKind.CREDENTIAL_REVOKED, EventKind.APPROVAL_GRANTED,
            EventKind.TOOL_FAILED, EventKind.TOOL_REPLAYED, EventKind.CHECKPOINT_SAVED} <= kinds
    assert _payload_problems(events) == []


def _live_view(warden: Warden, thread: str) -> _ThreadView | None:
    """The view the guard kept of the thread (its views moved to ``guard.recorder`` when guard.py was split)."""
    recorder = getattr(warden.guard, "recorder", None)
    views = recorder.views if recorder is not None else warden.guard._views
    return views.get(thread)


def _guard_records(warden: Warden, thread: str) -> dict[tuple[str, str | None], _CallRecord]:
    """The guard's own view of the thread, brought up to date as a read would, and checked
    against a view a new process folds from the whole history."""
    summaries = [e for e in _summaries(warden, thread) if e.kind in _VIEW_KINDS]
    fresh = _ThreadView()
    fresh.fold(summaries)
    live = _live_view(warden, thread)
    if live is not None:
        live.fold([e for e in summaries if e.seq > live.last_seq])
        assert {k: r.to_doc() for k, r in live.calls.items()} == {k: r.to_doc() for k, r in fresh.calls.items()}
    return fresh.calls


def _guard_reads_as(status: str, rec: _CallRecord) -> bool:
    """What the guard's record of a call must say when the trail gives the call ``status``."""
    last = rec.attempts[max(rec.attempts)] if rec.attempts else None
    final = rec.approval_final.kind if rec.approval_final is not None else None
    return {
        "authorised+completed": rec.completed_seq is not None,
        "ran-unauthorised": rec.completed_seq is not None,
        "denied": rec.denied is not None or final == EventKind.APPROVAL_EXPIRED
        or (rec.decided is not None and not rec.decided.payload["decision"]["allow"]),
        "rejected": rec.denied is not None and final == EventKind.APPROVAL_REJECTED,
        "aborted": last == "aborted",
        "failed": last == "failed",
        "in-doubt": rec.in_doubt_attempt is not None,
        "approval-pending": (rec.approval_requested is not None and final is None) or last == "suspended",
        "approved": final in (EventKind.APPROVAL_GRANTED, EventKind.APPROVAL_EDITED) and not rec.attempts,
        "superseded": rec.superseded_by is not None,
        "decided": rec.decided is not None and not rec.attempts,
        "replayed": rec.completed_seq is None,
    }[status]


def test_guard_view_and_audit_trail_agree_on_every_call(warden, tmp_path):
    _run(warden, SideEffects(tmp_path / "fx.jsonl"), "agree")
    g = build(warden, SideEffects(tmp_path / "fx2.jsonl"),
              [turn(call("issue_refund", {"order_id": "o-1", "amount": 5}, "r1")), turn(text="ok")], fail_once={"refund"})
    cfg = warden.start_run("agree-fail", owner="alice@example.com", intent="refund", risk_tier="low")
    with pytest.raises(RuntimeError):
        g.invoke({"messages": [HumanMessage("x")]}, cfg)
    _retry_history(warden, "agree-retry", approved=False)
    _retry_history(warden, "agree-approved", approved=True)
    assert _live_view(warden, "agree") is not None and _live_view(warden, "agree-fail") is not None
    seen = set()
    for thread in ("agree", "agree-fail", "agree-retry", "agree-approved"):
        records = _guard_records(warden, thread)
        trail = warden.audit(thread)
        assert {(a.tool_call_id, a.args_digest) for a in trail.actions} == set(records)
        for a in trail.actions:
            rec = records[(a.tool_call_id, a.args_digest)]
            assert _guard_reads_as(a.status, rec), (thread, a.tool_call_id, a.status, rec)
            assert a.ran == (rec.completed_seq is not None) and a.superseded_by == rec.superseded_by
            assert a.attempts == len(rec.started_seq) and a.aborted_attempts == list(rec.attempts.values()).count("aborted")
            seen.add(a.status)
    assert seen >= {"authorised+completed", "rejected", "denied", "failed", "aborted", "superseded"}
