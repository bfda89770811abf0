"""Every tampering the signed history must catch, performed on real SQLite and PostgreSQL databases.

Each test runs a real LangGraph graph through WardenSaver, changes the database
behind its back with plain SQL (as an attacker with database access would), and
asserts the verifier — Python API and `warden` CLI — names what happened.
"""

from __future__ import annotations

import hashlib
import json
import operator
from typing import Annotated, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt
from sqlalchemy import text
from typer.testing import CliRunner

from langgraph_warden.checkpointers import WardenSaver
from langgraph_warden.cli import app
from langgraph_warden.errors import IntegrityError
from langgraph_warden.events import EventDraft, head_signing_bytes
from langgraph_warden.keys import EphemeralKeyStore, b64u

from .conftest import sqlite_url

runner = CliRunner()


class S(TypedDict):
    amount: int
    log: Annotated[list[str], operator.add]


def _graph(saver: WardenSaver, paid: list[int] | None = None):
    def plan(state: S) -> dict:
        return {"log": ["plan"]}

    def approve(state: S) -> dict:
        decision = interrupt({"question": f"pay {state['amount']}?"})
        return {"log": [f"approved:{decision}"]}

    def pay(state: S) -> dict:
        if paid is not None:
            paid.append(state["amount"])
        return {"log": [f"paid:{state['amount']}"]}

    b = StateGraph(S)
    b.add_node("plan", plan)
    b.add_node("approve", approve)
    b.add_node("pay", pay)
    b.add_edge(START, "plan")
    b.add_edge("plan", "approve")
    b.add_edge("approve", "pay")
    b.add_edge("pay", END)
    return b.compile(checkpointer=saver)


@pytest.fixture
def saver(db_url):
    with WardenSaver.from_url(db_url, key_store=EphemeralKeyStore()) as s:
        yield s


def _run_complete(saver: WardenSaver, thread: str = "t1") -> dict:
    g = _graph(saver)
    cfg = {"configurable": {"thread_id": thread}}
    g.invoke({"amount": 10, "log": []}, cfg)
    return g.invoke(Command(resume="yes"), cfg)


def _reasons(saver: WardenSaver, **kw) -> set[str]:
    report = saver.ledger.verify(**kw)
    return {f.reason for f in report.findings}


def _exec(saver: WardenSaver, sql: str, **params) -> None:
    with saver.engine.begin() as conn:
        conn.execute(text(sql), params)


def _cli_verify(saver: WardenSaver, *args: str):
    url = saver.engine.url.render_as_string(hide_password=False)
    return runner.invoke(app, ["audit", "verify", "--db", url, *args])


def test_untouched_history_verifies(saver):
    out = _run_complete(saver)
    assert out["log"][-1] == "paid:10"
    report = saver.ledger.verify()
    assert report.ok, report.findings
    assert report.events >= 6
    res = _cli_verify(saver)
    assert res.exit_code == 0, res.output
    assert "OK" in res.output


def test_changed_event_detected(saver):
    _run_complete(saver)
    with saver.engine.connect() as conn:
        body = bytes(conn.execute(text("SELECT body FROM warden_events WHERE thread_id='t1' AND seq=2")).scalar_one())
    doc = json.loads(body)
    doc["payload"]["checkpoint_id"] = "someone-else"
    forged = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    _exec(saver, "UPDATE warden_events SET body=:b WHERE thread_id='t1' AND seq=2", b=forged)
    assert "event_changed" in _reasons(saver)
    res = _cli_verify(saver)
    assert res.exit_code == 1
    assert "event_changed" in res.output and "seq 2" in res.output


@pytest.mark.parametrize("forged", [b"[]", b"not json", b"42"])
def test_event_body_that_is_not_an_object_is_reported_not_a_crash(saver, forged):
    _run_complete(saver)
    digest = "sha256:" + hashlib.sha256(forged).hexdigest()  # the attacker fixes the row's hash too
    _exec(saver, "UPDATE warden_events SET body=:b, hash=:h WHERE thread_id='t1' AND seq=2", b=forged, h=digest)
    reasons = _reasons(saver)
    assert "event_corrupt" in reasons and "chain_broken" in reasons
    res = _cli_verify(saver)
    assert res.exit_code == 1 and "event_corrupt" in res.output


def test_event_body_stored_as_text_is_checked_like_bytes(saver):
    _run_complete(saver)
    with saver.engine.connect() as conn:
        body = bytes(conn.execute(text("SELECT body FROM warden_events WHERE thread_id='t1' AND seq=2")).scalar_one())
    forged = body.decode().replace('"checkpoint_ns":""', '"checkpoint_ns":"x"')
    _exec(saver, "UPDATE warden_events SET body=:b WHERE thread_id='t1' AND seq=2", b=forged)  # TEXT, not a BLOB
    assert "event_changed" in _reasons(saver)


def test_event_row_with_a_non_numeric_seq_is_reported_not_a_crash(tmp_path):
    # SQLite only: its BIGINT column stores the text as given; PostgreSQL refuses it.
    with WardenSaver.from_url(sqlite_url(tmp_path), key_store=EphemeralKeyStore()) as saver:
        _run_complete(saver)
        _exec(saver, "UPDATE warden_events SET seq='x' WHERE thread_id='t1' AND seq=3")
        reasons = _reasons(saver)
        assert "event_corrupt" in reasons and "event_deleted" in reasons
        res = _cli_verify(saver)
        assert res.exit_code == 1 and "event_corrupt" in res.output


def test_resume_refuses_a_checkpoint_whose_event_row_has_a_non_numeric_seq(tmp_path):
    url, keys = sqlite_url(tmp_path), EphemeralKeyStore()
    with WardenSaver.from_url(url, key_store=keys) as saver:
        _graph(saver).invoke({"amount": 10, "log": []}, {"configurable": {"thread_id": "pay-x"}})
        _exec(
            saver,
            "UPDATE warden_events SET seq='x' WHERE thread_id='pay-x' AND seq = "
            "(SELECT max(seq) FROM warden_events WHERE thread_id='pay-x' AND kind='checkpoint.saved')",
        )
    paid: list[int] = []
    with WardenSaver.from_url(url, key_store=keys) as fresh:  # a new process: nothing trusted yet
        with pytest.raises(IntegrityError) as info:
            _graph(fresh, paid).invoke(Command(resume="yes"), {"configurable": {"thread_id": "pay-x"}})
    assert info.value.reason == "event_corrupt" and paid == []


def test_deleted_event_detected(saver):
    _run_complete(saver)
    _exec(saver, "DELETE FROM warden_events WHERE thread_id='t1' AND seq=3")
    reasons = _reasons(saver)
    assert "event_deleted" in reasons and "chain_broken" in reasons


def test_inserted_event_detected(saver):
    _run_complete(saver)
    # Make room at seq 3 and insert a forged copy of event 2 there.
    _exec(saver, "UPDATE warden_events SET seq = seq + 1000 WHERE thread_id='t1' AND seq >= 3")
    _exec(saver, "UPDATE warden_events SET seq = seq - 999 WHERE thread_id='t1' AND seq >= 1003")
    _exec(
        saver,
        "INSERT INTO warden_events (thread_id, seq, checkpoint_ns, kind, subject, ts, body, hash) "
        "SELECT thread_id, 3, checkpoint_ns, kind, subject, ts, body, hash FROM warden_events WHERE thread_id='t1' AND seq=2",
    )
    reasons = _reasons(saver)
    assert reasons & {"event_moved", "chain_broken"}


def test_reordered_events_detected(saver):
    _run_complete(saver)
    _exec(saver, "UPDATE warden_events SET seq = -1 WHERE thread_id='t1' AND seq=2")
    _exec(saver, "UPDATE warden_events SET seq = 2 WHERE thread_id='t1' AND seq=3")
    _exec(saver, "UPDATE warden_events SET seq = 3 WHERE thread_id='t1' AND seq=-1")
    reasons = _reasons(saver)
    assert "event_moved" in reasons and "chain_broken" in reasons


def test_changed_checkpoint_row_detected(saver):
    _run_complete(saver)
    _exec(
        saver,
        "UPDATE warden_checkpoints SET metadata_type = 'json' WHERE thread_id='t1' AND checkpoint_id = "
        "(SELECT MIN(checkpoint_id) FROM warden_checkpoints WHERE thread_id='t1')",
    )
    assert "checkpoint_changed" in _reasons(saver)


def test_changed_write_row_detected(saver):
    g = _graph(saver)
    cfg = {"configurable": {"thread_id": "t1"}}
    g.invoke({"amount": 10, "log": []}, cfg)  # paused: the interrupt write is pending
    _exec(saver, "UPDATE warden_writes SET channel = 'forged' WHERE thread_id='t1'")
    assert "write_changed" in _reasons(saver)
    with pytest.raises(IntegrityError) as info:
        g.invoke(Command(resume="yes"), cfg)
    assert info.value.reason == "writes_changed"


def test_deleted_checkpoint_row_detected(saver):
    _run_complete(saver)
    _exec(
        saver,
        "DELETE FROM warden_checkpoints WHERE thread_id='t1' AND checkpoint_id = "
        "(SELECT MIN(checkpoint_id) FROM warden_checkpoints WHERE thread_id='t1')",
    )
    assert "checkpoint_deleted" in _reasons(saver)


def test_unknown_key_detected(saver):
    _run_complete(saver)
    _exec(saver, "UPDATE warden_events SET key_id='ed25519:not-registered' WHERE thread_id='t1' AND signature IS NOT NULL")
    assert "unknown_key" in _reasons(saver)


def test_wrong_key_signature_detected(saver):
    _run_complete(saver)
    with saver.engine.connect() as conn:
        head = conn.execute(
            text("SELECT seq, hash, key_id, key_store FROM warden_events WHERE thread_id='t1' ORDER BY seq DESC LIMIT 1")
        ).one()
    other = EphemeralKeyStore().signing_key()
    forged = b64u(other.sign(head_signing_bytes("t1", head.seq, head.hash, head.key_id, head.key_store)))
    _exec(saver, "UPDATE warden_events SET signature=:s WHERE thread_id='t1' AND seq=:q", s=forged, q=head.seq)
    assert "bad_signature" in _reasons(saver)
    assert "bad_signature" in _reasons(saver, signatures="all")


def test_history_resigned_by_attacker_key_needs_trust_anchor(saver, db_url):
    _run_complete(saver)
    trusted = saver.ledger.signing_key().key_id
    # An attacker with database access registers their own key and appends signed events with it.
    with WardenSaver.from_url(db_url, key_store=EphemeralKeyStore()) as attacker:
        attacker.ledger.append("t1", [EventDraft(kind="tool.completed", payload={"forged": True})])
    assert saver.ledger.verify().ok  # the database alone cannot tell: its key table was written too
    res = _cli_verify(saver, "--trust-key", trusted)
    assert res.exit_code == 1
    assert "untrusted_key" in res.output


def test_truncated_tail_detected_against_saved_head(saver, tmp_path):
    _run_complete(saver)
    url = saver.engine.url.render_as_string(hide_password=False)
    head = runner.invoke(app, ["audit", "head", "--db", url])
    assert head.exit_code == 0, head.output
    head_file = tmp_path / "head.json"
    head_file.write_text(head.output)
    assert json.loads(head.output)["heads"][0]["thread_id"] == "t1"
    res = _cli_verify(saver, "--against", str(head_file))
    assert res.exit_code == 0, res.output
    # Cut the tail at an earlier signed head (one transaction's; a group commit signs only the last
    # head it leaves on a thread): the remaining chain is still internally valid and signed...
    with saver.engine.connect() as conn:
        cut = conn.execute(
            text(
                "SELECT max(seq) FROM warden_events WHERE thread_id='t1' AND signature IS NOT NULL "
                "AND seq < (SELECT max(seq) FROM warden_events WHERE thread_id='t1')"
            )
        ).scalar_one()
    assert cut is not None and cut >= 2
    _exec(saver, "DELETE FROM warden_events WHERE thread_id='t1' AND seq > :cut", cut=cut)
    _exec(saver, "DELETE FROM warden_checkpoints WHERE thread_id='t1'")
    _exec(saver, "DELETE FROM warden_writes WHERE thread_id='t1'")
    # ...apart from rows, so check the chain alone: only the saved head reveals the truncation.
    chain_only = saver.ledger.verify(check_rows=False)
    assert chain_only.ok, chain_only.findings
    res = _cli_verify(saver, "--against", str(head_file))
    assert res.exit_code == 1
    assert "truncated" in res.output


def test_rewritten_history_detected_against_saved_head(saver, tmp_path):
    _run_complete(saver)
    saved = saver.ledger.head("t1")
    assert saved is not None
    with saver.engine.begin() as conn:
        conn.execute(text("DELETE FROM warden_events WHERE thread_id='t1' AND seq >= :s"), {"s": saved.seq - 1})
        conn.execute(
            text("UPDATE warden_heads SET seq = :s, hash = (SELECT hash FROM warden_events WHERE thread_id='t1' AND seq = :s) WHERE thread_id='t1'"),
            {"s": saved.seq - 2},
        )
    drafts = [EventDraft(kind="note", payload={"n": 1}), EventDraft(kind="note", payload={"n": 2})]
    # The process that wrote (and so verified) the newer head refuses to append after the cut...
    with pytest.raises(IntegrityError) as refused:
        saver.ledger.append("t1", drafts)
    assert refused.value.reason == "truncated"
    # ...but a process that never saw it does: new, properly signed events now occupy the old seqs.
    url = saver.engine.url.render_as_string(hide_password=False)
    with WardenSaver.from_url(url, key_store=saver.key_store) as other:
        other.ledger.append("t1", drafts)
    report = saver.ledger.verify(check_rows=False, against=[saved])
    assert {f.reason for f in report.findings} == {"rewritten"}


def test_resume_refuses_edited_pending_checkpoint(saver):
    """A payment approved for 10 cannot be paid as 1,000,000 by editing the paused checkpoint."""
    paid: list[int] = []
    g = _graph(saver, paid)
    cfg = {"configurable": {"thread_id": "pay-1"}}
    g.invoke({"amount": 10, "log": []}, cfg)
    assert g.get_state(cfg).next == ("approve",)
    with saver.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT checkpoint_id, type, checkpoint FROM warden_checkpoints WHERE thread_id='pay-1' "
                "ORDER BY checkpoint_id DESC LIMIT 1"
            )
        ).one()
    cp = saver.serde.loads_typed((row.type, bytes(row.checkpoint)))
    assert cp["channel_values"]["amount"] == 10
    cp["channel_values"]["amount"] = 1_000_000
    type_, blob = saver.serde.dumps_typed(cp)
    _exec(
        saver,
        "UPDATE warden_checkpoints SET checkpoint=:b, type=:t WHERE thread_id='pay-1' AND checkpoint_id=:c",
        b=blob,
        t=type_,
        c=row.checkpoint_id,
    )
    with pytest.raises(IntegrityError) as info:
        g.invoke(Command(resume="yes"), cfg)
    err = info.value
    assert err.thread_id == "pay-1" and err.checkpoint_id == row.checkpoint_id
    assert err.reason == "checkpoint_changed"
    assert "pay-1" in str(err) and row.checkpoint_id in str(err)
    assert paid == []  # no node ran


async def test_async_resume_refuses_edited_pending_checkpoint(saver):
    paid: list[int] = []
    g = _graph(saver, paid)
    cfg = {"configurable": {"thread_id": "pay-2"}}
    await g.ainvoke({"amount": 10, "log": []}, cfg)
    _exec(
        saver,
        "UPDATE warden_checkpoints SET parent_checkpoint_id = NULL WHERE thread_id='pay-2' AND checkpoint_id = "
        "(SELECT MAX(checkpoint_id) FROM warden_checkpoints WHERE thread_id='pay-2')",
    )
    with pytest.raises(IntegrityError):
        await g.ainvoke(Command(resume="yes"), cfg)
    assert paid == []


def test_inserted_checkpoint_row_refused(saver):
    _run_complete(saver)
    _exec(
        saver,
        "INSERT INTO warden_checkpoints (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, run_id, type, checkpoint, metadata_type, metadata, digest) "
        "SELECT thread_id, checkpoint_ns, 'zzzz-forged', checkpoint_id, run_id, type, checkpoint, metadata_type, metadata, digest "
        "FROM warden_checkpoints WHERE thread_id='t1' ORDER BY checkpoint_id DESC LIMIT 1",
    )
    assert "checkpoint_unrecorded" in _reasons(saver)
    with pytest.raises(IntegrityError) as info:
        saver.get_tuple({"configurable": {"thread_id": "t1"}})
    assert info.value.reason == "checkpoint_unrecorded"
