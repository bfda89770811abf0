"""The audit trail's notebook rendering, its statuses for in-doubt calls, and the CLI on several threads."""

from __future__ import annotations

import json

from langchain_core.messages import HumanMessage
from langgraph.types import Command
from sqlalchemy import text
from typer.testing import CliRunner

from langgraph_warden.audit import reconstruct
from langgraph_warden.cli import app
from langgraph_warden.canonical import digest
from langgraph_warden.events import EventDraft, EventKind
from langgraph_warden.guards import approval as approvals
from langgraph_warden.warden import Warden

from .support.agents import SideEffects, call, turn
from .test_guard import build

runner = CliRunner()


def _run(warden: Warden, effects: SideEffects, thread: str) -> None:
    g = build(
        warden,
        effects,
        [
            turn(
                call("lookup_customer", {"customer_id": "c-1"}, "c1"),
                call("issue_refund", {"order_id": "o-1", "amount": 7}, "r1"),
                call("send_email", {"to": "press@news.example", "body": "x"}, "e1"),
                call("delete_everything", {}, "d1"),
            ),
            turn(text="done"),
        ],
    )
    cfg = warden.start_run(thread, owner="alice@example.com", intent="refund <o-1> & tell")
    g.invoke({"messages": [HumanMessage("x")]}, cfg)
    pending = {p.tool_call_id: p for p in warden.pending_approvals(thread)}
    answers = {
        pending["r1"].request_id: approvals.approve(pending["r1"], "bob@example.com"),
        pending["e1"].request_id: approvals.reject(pending["e1"], "bob@example.com", message="not the press"),
    }
    g.invoke(Command(resume=answers), cfg)


def test_repr_html_shows_every_action_status_and_the_verdict(db_url, tmp_path):
    with Warden.open(db_url, ephemeral_keys=True) as warden:
        _run(warden, SideEffects(tmp_path / "fx.jsonl"), "html")
        trail = warden.audit("html")
        statuses = {a.tool_call_id: a.status for a in trail.actions}
        assert statuses == {"c1": "authorised+completed", "r1": "authorised+completed", "e1": "rejected", "d1": "denied"}
        page = trail._repr_html_()
        for a in trail.actions:
            assert f"<code>{a.tool_call_id}</code>" in page
            assert f"font-weight:600'>{a.status}</td>" in page  # each action's status in its row
        assert "signatures and hash chain verified" in page and "VERIFICATION FAILED" not in page
        assert "bob@example.com" in page and "unknown_tool" in page and "rejected_by_approver" in page
        assert "refund &lt;o-1&gt; &amp; tell" in page  # escaped
        assert "<b>0 ran without authorisation</b>" in page and "1 replayed" in page

        # The verdict follows the signatures: alter one event and the page says so.
        with warden.saver.engine.begin() as conn:
            conn.execute(text("DELETE FROM warden_events WHERE thread_id = 'html' AND seq = 2"))
        tampered = warden.audit("html")
        assert not tampered.verified
        page = tampered._repr_html_()
        assert "VERIFICATION FAILED" in page and "signatures and hash chain verified" not in page


def test_in_doubt_call_refused_retry_stays_aborted_and_keeps_its_authorisation(db_url, tmp_path):
    """started → (crash) → aborted → outcome_unknown: the action reads `aborted`, not `denied`."""
    with Warden.open(db_url, ephemeral_keys=True) as warden:
        g = build(warden, SideEffects(tmp_path / "fx.jsonl"), [turn(call("send_email", {"to": "a@b.c", "body": "x"}, "e1")), turn(text="ok")])
        cfg = warden.start_run("doubt", owner="alice@example.com", intent="mail", risk_tier="low")
        # What a process killed inside the tool leaves behind: its decision and tool.started, committed.
        base = {"tool_call_id": "e1", "tool": "send_email", "args_digest": digest({"to": "a@b.c", "body": "x"})}
        warden.ledger.append("doubt", [
            EventDraft(EventKind.POLICY_DECIDED, {**base, "decision": {"allow": True, "require_approval": False, "reasons": []},
                                                  "enforced": True}, subject="e1"),
            EventDraft(EventKind.TOOL_STARTED, {**base, "attempt": 1, "approval_request_id": None}, subject="e1"),
        ])
        out = g.invoke({"messages": []}, cfg)
        msg = next(m for m in out["messages"] if getattr(m, "tool_call_id", None) == "e1")
        assert msg.status == "error" and "outcome is unknown" in msg.content
        trail = warden.audit("doubt")
        a = trail.action("e1")
        assert (a.status, a.attempts, a.aborted_attempts, a.ran) == ("aborted", 1, 1, False)
        assert a.reasons == ["outcome_unknown"]
        assert trail.summary.aborted == ["e1"] and trail.summary.denied == []
        assert a.authorised and trail.summary.authorised == ["e1"] and trail.summary.ran_without_authorisation == []


def test_reconstruct_flags_an_attempt_started_after_approval_was_required_but_not_granted(db_url, tmp_path):
    """Per-attempt authorisation: an allow-after-approval decision without a granted request is not enough."""
    with Warden.open(db_url, ephemeral_keys=True) as warden:
        _run(warden, SideEffects(tmp_path / "fx.jsonl"), "perattempt")
        events = list(warden.ledger.events("perattempt"))
        trail = reconstruct("perattempt", events, warden.verify(thread_id="perattempt").threads["perattempt"])
        assert trail.summary.ran_without_authorisation == [] and trail.verified
        # Drop the approval.granted event from the view: the refund's start is now unauthorised.
        without = [e for e in events if not (e.kind == EventKind.APPROVAL_GRANTED and e.payload["tool_call_id"] == "r1")]
        assert reconstruct("perattempt", without, None).summary.ran_without_authorisation == ["r1"]


def test_cli_export_every_thread_and_show(db_url, tmp_path):
    with Warden.open(db_url, ephemeral_keys=True) as warden:
        _run(warden, SideEffects(tmp_path / "a.jsonl"), "cli-a")
        _run(warden, SideEffects(tmp_path / "b.jsonl"), "cli-b")
    out = tmp_path / "all.jsonl"
    res = runner.invoke(app, ["audit", "export", "--db", db_url, "--format", "jsonl", "--output", str(out)])
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    by_thread: dict[str, list[dict]] = {}
    for r in records:
        by_thread.setdefault(r["thread_id"], []).append(r)
    assert sorted(by_thread) == ["cli-a", "cli-b"]
    for recs in by_thread.values():
        assert [r["chain"]["seq"] for r in recs] == list(range(1, len(recs) + 1))
        assert recs[0]["chain"]["prev_hash"] == "sha256:" + "0" * 64
        assert all(b["chain"]["prev_hash"] == a["chain"]["hash"] for a, b in zip(recs, recs[1:]))
        assert all(r["verified"] is True for r in recs)
    res = runner.invoke(app, ["audit", "show", "--db", db_url, "cli-b"], env={"COLUMNS": "220"})
    assert res.exit_code == 0, res.output
    for needle in ("authorised+completed", "rejected", "denied", "bob@example.com", "ran without authorisation 0", "verified"):
        assert needle in res.output, needle


def test_warden_repr_and_threads_for_notebooks(db_url, tmp_path):
    with Warden.open(db_url, ephemeral_keys=True) as warden:
        assert warden.threads() == []
        _run(warden, SideEffects(tmp_path / "fx.jsonl"), "t-b")
        warden.start_run("t-a", owner="alice@example.com", intent="nothing yet")
        assert warden.threads() == ["t-a", "t-b"]
        shown = repr(warden)
        assert shown.startswith("<Warden ") and shown.endswith(">")
        assert f"workload={warden.ledger.workload_id}" in shown and "policy=rego@sha256:" in shown
        assert "tools=3" in shown and "mode=enforce" in shown and "credentials=on" in shown
        url = warden.saver.engine.url
        assert url.password is None or str(url.password) not in shown  # never the password
