"""`warden audit show` and `warden audit export` on a real governed run."""

from __future__ import annotations

import json

from langchain_core.messages import HumanMessage
from langgraph.types import Command
from sqlalchemy import text
from typer.testing import CliRunner

from langgraph_warden.cli import app
from langgraph_warden.guards import approval as approvals
from langgraph_warden.warden import Warden

from .support.agents import SideEffects, call, turn
from .test_guard import build

runner = CliRunner()


def _governed_run(db_url: str, tmp_path) -> str:
    with Warden.open(db_url, ephemeral_keys=True) as warden:
        g = build(
            warden,
            SideEffects(tmp_path / "fx.jsonl"),
            [
                turn(
                    call("lookup_customer", {"customer_id": "c-1"}, "c1"),
                    call("issue_refund", {"order_id": "o-1", "amount": 7}, "r1"),
                    call("delete_everything", {}, "d1"),
                ),
                turn(text="done"),
            ],
        )
        cfg = warden.start_run("t-cli", owner="alice@example.com", intent="refund o-1")
        req = g.invoke({"messages": [HumanMessage("x")]}, cfg)["__interrupt__"][0].value
        g.invoke(Command(resume=approvals.approve(req, "bob@example.com")), cfg)
    return "t-cli"


def test_audit_show_renders_the_trail(db_url, tmp_path):
    thread = _governed_run(db_url, tmp_path)
    res = runner.invoke(app, ["audit", "show", "--db", db_url, thread], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    out = res.output
    for needle in ("issue_refund", "authorised+completed", "bob@example.com", "delete_everything", "denied",
                   "replayed 1", "ran without authorisation 0", "verified"):
        assert needle in out, (needle, out)


def test_audit_show_fails_on_tampering_and_unknown_thread(db_url, tmp_path):
    thread = _governed_run(db_url, tmp_path)
    res = runner.invoke(app, ["audit", "show", "--db", db_url, "no-such-thread"])
    assert res.exit_code == 2 and "no recorded events" in res.output
    from sqlalchemy import create_engine

    from langgraph_warden.checkpointers.engine import parse_url

    eng = create_engine(parse_url(db_url))
    with eng.begin() as conn:
        conn.execute(text("DELETE FROM warden_events WHERE thread_id = :t AND seq = 3"), {"t": thread})
    eng.dispose()
    res = runner.invoke(app, ["audit", "show", "--db", db_url, thread], env={"COLUMNS": "200"})
    assert res.exit_code == 1
    assert "NOT verified" in res.output and "event_deleted" in res.output


def test_audit_export_jsonl(db_url, tmp_path):
    thread = _governed_run(db_url, tmp_path)
    out_file = tmp_path / "events.jsonl"
    res = runner.invoke(app, ["audit", "export", "--db", db_url, "--thread", thread, "--format", "jsonl", "-o", str(out_file)])
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert all(r["chain"]["hash"].startswith("sha256:") and r["verified"] for r in records)
    for a, b in zip(records, records[1:]):
        assert b["chain"]["prev_hash"] == a["chain"]["hash"]
    kinds = {r["kind"] for r in records}
    assert {"run.started", "policy.decided", "tool.started", "tool.completed", "tool.replayed", "approval.granted",
            "credential.issued", "credential.revoked", "tool.denied"} <= kinds
    res = runner.invoke(app, ["audit", "export", "--db", db_url, "--format", "csv"])
    assert res.exit_code == 2
    stdout = runner.invoke(app, ["audit", "export", "--db", db_url])
    assert stdout.exit_code == 0 and len(stdout.output.strip().splitlines()) == len(records)
