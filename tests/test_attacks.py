"""A writer to the database without the keys: nothing it changes decides, resumes or passes an audit.

Each test runs a real governed graph, changes the history with plain SQL anywhere in the thread
(``tests/support/attacker.py``: edit an event with its hash left stale, recomputed, or the whole
chain re-hashed after it; delete events; delete the newest checkpoint; cut the history back to an
earlier signed head; re-sign it with a key of the attacker's own), and then resumes the run in a
new ``Warden`` — a new process's view: nothing verified yet. The resume must refuse
(:class:`IntegrityError`) before any tool runs, side effects are counted in a file, and
``warden audit verify`` must fail. SQLite and PostgreSQL.

What a database writer can still do undetected — cut a history back to an earlier signed head,
or re-sign it with a key it registered — is caught by the anchors outside the database
(``head_store=``, ``trusted_key_ids=``); the tests show both with and without them.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from langgraph.types import Command
from typer.testing import CliRunner

from langgraph_warden.anchors import FileHeadStore
from langgraph_warden.cli import app
from langgraph_warden.errors import IntegrityError
from langgraph_warden.guards.approval import approve
from langgraph_warden.guards.tools import ToolSpec
from langgraph_warden.identity import EphemeralWorkloadKeyStore
from langgraph_warden.keys import EphemeralKeyStore
from langgraph_warden.warden import Warden

from .support import attacker
from .support.agents import SideEffects

OWNER = "alice@example.com"
runner = CliRunner()


def build(warden: Warden, effects: SideEffects):
    """An agent asking for the tool named by the last human message (``tool:order``), then "done"."""

    @tool
    def charge(order: str) -> str:
        """Charge an order (not idempotent)."""
        effects.record("charge", order=order)
        return f"charged {order}"

    @tool
    def wire(order: str) -> str:
        """Wire money (irreversible: approval at medium and high tier)."""
        effects.record("wire", order=order)
        return f"wired {order}"

    warden.tools.register(ToolSpec("charge", idempotent=False))
    warden.tools.register(ToolSpec("wire", irreversible=True))

    def agent(state: MessagesState) -> dict[str, Any]:
        last = state["messages"][-1]
        if isinstance(last, ToolMessage):
            return {"messages": [AIMessage(f"done: {last.content}")]}
        name, order = str(last.content).split(":", 1)
        return {"messages": [AIMessage("", tool_calls=[{"name": name, "args": {"order": order}, "id": f"call-{order}"}])]}

    b = StateGraph(MessagesState)
    b.add_node("agent", agent)
    b.add_node("tools", ToolNode([charge, wire], wrap_tool_call=warden.guard, awrap_tool_call=warden.guard.awrap))
    b.add_edge(START, "agent")
    b.add_conditional_edges("agent", tools_condition)
    b.add_edge("tools", "agent")
    return b.compile(checkpointer=warden.checkpointer)


def ask(graph, thread: str, what: str) -> dict[str, Any]:
    return graph.invoke({"messages": [HumanMessage(what)]}, {"configurable": {"thread_id": thread}})


def resume(graph, thread: str, value: Any = None) -> dict[str, Any]:
    return graph.invoke(Command(resume=value) if value is not None else None, {"configurable": {"thread_id": thread}})


def audit_fails(url: str, thread: str) -> None:
    res = runner.invoke(app, ["audit", "verify", "--db", url, "--thread", thread])
    assert res.exit_code == 1, res.output


@pytest.fixture
def effects(tmp_path) -> SideEffects:
    return SideEffects(tmp_path / "effects.jsonl")


def _history(db_url: str, effects: SideEffects, thread: str, **charter: Any) -> None:
    """A run with two completed calls (so edits can land early, in the middle or near the end)."""
    with Warden.open(db_url, ephemeral_keys=True) as w:
        g = build(w, effects)
        w.start_run(thread, owner=OWNER, intent="settle orders", **{"risk_tier": "medium", **charter})
        assert ask(g, thread, "charge:o1")["messages"][-1].content == "done: charged o1"
        assert ask(g, thread, "charge:o2")["messages"][-1].content == "done: charged o2"


# --------------------------------------------------------------------------- 1. the charter


@pytest.mark.parametrize("rehash", ["stale", "recompute", "rechain"])
def test_widened_charter_is_refused_not_obeyed(db_url, effects, rehash):
    """run.started (the first event) edited: every tool allowed, no approvals. The irreversible
    tool must not run without the approval the recorded charter required."""
    thread = f"charter-{rehash}"
    _history(db_url, effects, thread, allowed_tools=["charge"])
    with Warden.open(db_url, ephemeral_keys=True) as w:
        def widen(p: dict) -> None:
            p["charter"]["allowed_tools"] = None
            p["charter"]["profile"]["require_approval_for"] = []

        attacker.edit(w.saver.engine, thread, attacker.seq_of(w.saver.engine, thread, "run.started"), widen, rehash=rehash)
    with Warden.open(db_url, ephemeral_keys=True) as w:
        g = build(w, effects)
        with pytest.raises(IntegrityError) as refused:
            ask(g, thread, "wire:o3")
        assert refused.value.thread_id == thread
    assert effects.count("wire") == 0
    audit_fails(db_url, thread)


def test_untampered_charter_is_obeyed(db_url, effects):
    """The control: the same run without the edit denies the tool outside the charter."""
    _history(db_url, effects, "charter-ok", allowed_tools=["charge"])
    with Warden.open(db_url, ephemeral_keys=True) as w:
        out = ask(build(w, effects), "charter-ok", "wire:o3")
    assert "outside_intent" in out["messages"][-1].content
    assert effects.count("wire") == 0


# --------------------------------------------------------------------------- 2. an approval request


@pytest.mark.parametrize("rehash", ["stale", "recompute", "rechain"])
def test_cleared_approval_safeguards_are_refused(db_url, effects, rehash):
    """High tier: the approval request demands a signature and separation of duties. The attacker
    clears both in the recorded request (behind later events), and the owner approves unsigned."""
    thread = f"sod-{rehash}"
    with Warden.open(db_url, ephemeral_keys=True) as w:
        g = build(w, effects)
        w.start_run(thread, owner=OWNER, intent="settle orders", risk_tier="high")
        (intr,) = ask(g, thread, "wire:o1")["__interrupt__"]
        assert intr.value["requires_signature"] and intr.value["separation_of_duties"]

        def clear(p: dict) -> None:
            p["request"]["requires_signature"] = False
            p["request"]["separation_of_duties"] = False

        attacker.edit(w.saver.engine, thread, attacker.seq_of(w.saver.engine, thread, "approval.requested"), clear,
                      rehash=rehash)
    forged = {**intr.value, "requires_signature": False, "separation_of_duties": False}
    with Warden.open(db_url, ephemeral_keys=True) as w:
        g = build(w, effects)
        with pytest.raises(IntegrityError):
            resume(g, thread, {intr.id: approve(forged, OWNER)})
    assert effects.count("wire") == 0
    audit_fails(db_url, thread)


# --------------------------------------------------------------------------- 3. a completed call


@pytest.mark.parametrize("renumber", [False, True])
def test_deleted_completion_does_not_rerun_the_call(db_url, effects, renumber):
    """The first call's decision, start and completion are deleted (early in the history, before
    every later checkpoint), and the checkpoints after it too, so a resume would run its tool step
    again. ``renumber``: the later events are re-sequenced and re-chained (no key: not re-signed)."""
    thread = f"deleted-{renumber}"
    _history(db_url, effects, thread)
    with Warden.open(db_url, ephemeral_keys=True) as w:
        eng = w.saver.engine
        doomed = [r["seq"] for r in attacker.rows(eng, thread)
                  if r["doc"]["payload"].get("tool_call_id") == "call-o1" and r["kind"] in
                  ("policy.decided", "tool.started", "tool.completed")]
        assert len(doomed) == 3 and doomed[-1] < attacker.rows(eng, thread)[-1]["seq"] - 5
        attacker.delete_events(eng, thread, doomed)
        if renumber:
            from sqlalchemy import text

            with eng.begin() as conn:
                left = [int(s) for (s,) in conn.execute(
                    text("SELECT seq FROM warden_events WHERE thread_id = :t ORDER BY seq"), {"t": thread})]
                for new, old in enumerate(left, 1):
                    conn.execute(text("UPDATE warden_events SET seq = :n WHERE thread_id = :t AND seq = :o"),
                                 {"n": -new, "t": thread, "o": old})
                conn.execute(text("UPDATE warden_events SET seq = -seq WHERE thread_id = :t"), {"t": thread})
            first = attacker.rows(eng, thread)[doomed[0] - 1]["seq"]
            attacker.edit(eng, thread, first, lambda p: None, rehash="rechain")
    with Warden.open(db_url, ephemeral_keys=True) as w:
        g = build(w, effects)
        with pytest.raises(IntegrityError):
            ask(g, thread, "charge:o1")  # the same call id: would run again on a history without its record
    assert effects.count("charge") == 2  # o1 and o2, once each
    audit_fails(db_url, thread)


# --------------------------------------------------------------------------- 4. the newest checkpoint


def test_deleted_newest_checkpoint_is_refused_not_skipped(db_url, effects):
    """The run is paused for approval; its newest checkpoint (holding the pending approval) is
    deleted with its writes. Resume must refuse, not continue from the checkpoint before it."""
    thread = "newest"
    with Warden.open(db_url, ephemeral_keys=True) as w:
        g = build(w, effects)
        w.start_run(thread, owner=OWNER, intent="settle orders", risk_tier="medium")
        (intr,) = ask(g, thread, "wire:o1")["__interrupt__"]
        gone = attacker.delete_newest_checkpoint(w.saver.engine, thread)
    with Warden.open(db_url, ephemeral_keys=True) as w:
        g = build(w, effects)
        with pytest.raises(IntegrityError) as refused:
            resume(g, thread, {intr.id: approve(intr.value, "bob@example.com")})
        assert refused.value.reason == "checkpoint_missing" and refused.value.checkpoint_id == gone
        with pytest.raises(IntegrityError):
            g.get_state({"configurable": {"thread_id": thread}})
    assert effects.count("wire") == 0
    audit_fails(db_url, thread)


# --------------------------------------------------------------------------- 5. a cut-back history


def _approved_and_run(db_url: str, effects: SideEffects, thread: str, **open_kw: Any) -> int:
    """Approve and run an irreversible call; return the seq of its approval.granted (a signed head)."""
    with Warden.open(db_url, ephemeral_keys=True, **open_kw) as w:
        g = build(w, effects)
        w.start_run(thread, owner=OWNER, intent="settle orders", risk_tier="medium")
        (intr,) = ask(g, thread, "wire:o1")["__interrupt__"]
        assert resume(g, thread, {intr.id: approve(intr.value, "bob@example.com")})["messages"][-1].content == "done: wired o1"
        granted = attacker.seq_of(w.saver.engine, thread, "approval.granted")
        assert [r for r in attacker.rows(w.saver.engine, thread) if r["seq"] == granted][0]["signed"]
        return granted


def test_cut_back_history_caught_with_a_head_store(db_url, effects, tmp_path):
    """The history is cut back to just after the approval was granted (before the tool started):
    a valid, signed, shorter chain in which the approval looks unused. The head store outside the
    database holds a later head, so the resume refuses and the approval is not used again."""
    store = FileHeadStore(tmp_path / "heads")
    granted = _approved_and_run(db_url, effects, "cut", head_store=store)
    saved = store.load("cut")
    assert saved is not None and saved.seq > granted
    with Warden.open(db_url, ephemeral_keys=True) as w:
        attacker.cut_back(w.saver.engine, "cut", granted)
    with Warden.open(db_url, ephemeral_keys=True, head_store=store) as w:
        g = build(w, effects)
        with pytest.raises(IntegrityError) as refused:
            resume(g, "cut")
        assert refused.value.reason == "truncated"
    assert effects.count("wire") == 1
    res = runner.invoke(app, ["audit", "verify", "--db", db_url, "--thread", "cut", "--head-store", str(tmp_path / "heads")])
    assert res.exit_code == 1, res.output


def test_cut_back_history_without_an_anchor_is_not_caught(db_url, effects):
    """The stated limit: without an anchor outside the database the shorter history verifies and
    the cut-off approval is used again. (This is why ``head_store=`` exists.)"""
    granted = _approved_and_run(db_url, effects, "cut-blind")
    with Warden.open(db_url, ephemeral_keys=True) as w:
        attacker.cut_back(w.saver.engine, "cut-blind", granted)
    with Warden.open(db_url, ephemeral_keys=True) as w:
        assert w.verify("cut-blind").ok
        resume(build(w, effects), "cut-blind")
    assert effects.count("wire") == 2


# --------------------------------------------------------------------------- 6. the attacker's own key


def _resigned(db_url: str, effects: SideEffects, thread: str) -> None:
    _history(db_url, effects, thread, allowed_tools=["charge"])
    with Warden.open(db_url, ephemeral_keys=True) as w:
        eng = w.saver.engine
        key = attacker.attacker_key(eng)

        def widen(p: dict) -> None:
            p["charter"]["allowed_tools"] = None
            p["charter"]["profile"]["require_approval_for"] = []

        attacker.edit(eng, thread, attacker.seq_of(eng, thread, "run.started"), widen, rehash="rechain", sign_with=key)


def test_history_resigned_with_a_registered_attacker_key_caught_by_trusted_key_ids(db_url, effects):
    keys = EphemeralKeyStore()
    thread = "resigned"
    workload = EphemeralWorkloadKeyStore()
    with Warden.open(db_url, key_store=keys, workload_key_store=workload) as w:
        trusted = [w.ledger.signing_key().key_id]
    # The run itself is signed by `keys`; the attacker re-signs it with a key of their own.
    with Warden.open(db_url, key_store=keys, workload_key_store=workload) as w:
        g = build(w, effects)
        w.start_run(thread, owner=OWNER, intent="settle orders", risk_tier="medium", allowed_tools=["charge"])
        ask(g, thread, "charge:o1")
        eng = w.saver.engine
        key = attacker.attacker_key(eng)

        def widen(p: dict) -> None:
            p["charter"]["allowed_tools"] = None
            p["charter"]["profile"]["require_approval_for"] = []

        attacker.edit(eng, thread, attacker.seq_of(eng, thread, "run.started"), widen, rehash="rechain", sign_with=key)
    with Warden.open(db_url, ephemeral_keys=True, trusted_key_ids=trusted) as w:
        g = build(w, effects)
        with pytest.raises(IntegrityError) as refused:
            ask(g, thread, "wire:o3")
        assert refused.value.reason == "untrusted_key"
    assert effects.count("wire") == 0
    res = runner.invoke(app, ["audit", "verify", "--db", db_url, "--thread", thread, "--trust-key", trusted[0]])
    assert res.exit_code == 1, res.output


def test_history_resigned_with_a_registered_attacker_key_without_pinned_keys_is_not_caught(db_url, effects):
    """The stated limit: a key registered in the database is accepted unless keys are pinned."""
    _resigned(db_url, effects, "resigned-blind")
    with Warden.open(db_url, ephemeral_keys=True) as w:
        assert w.verify("resigned-blind").ok
        ask(build(w, effects), "resigned-blind", "wire:o3")
    assert effects.count("wire") == 1


# --------------------------------------------------------------------------- 7. a process that verified already


def test_edit_after_verification_does_not_change_this_process_decisions(db_url, effects):
    """A process that verified the thread keeps deciding on what it verified: an edit made behind
    its back afterwards (the charter, widened) changes nothing it decides; the audit catches it."""
    thread = "live"
    with Warden.open(db_url, ephemeral_keys=True) as w:
        g = build(w, effects)
        w.start_run(thread, owner=OWNER, intent="settle orders", risk_tier="medium", allowed_tools=["charge"])
        ask(g, thread, "charge:o1")

        def widen(p: dict) -> None:
            p["charter"]["allowed_tools"] = None

        attacker.edit(w.saver.engine, thread, attacker.seq_of(w.saver.engine, thread, "run.started"), widen,
                      rehash="recompute")
        out = ask(g, thread, "wire:o2")
        assert "outside_intent" in out["messages"][-1].content
        assert not w.audit(thread).verified
    assert effects.count("wire") == 0
