"""``warden approvals list`` and ``warden approvals decide`` against a real graph module
(``tests/support/graphs_approval.py``), on SQLite and (when configured) PostgreSQL."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from langchain_core.messages import HumanMessage
from typer.testing import CliRunner

from langgraph_warden.cli import app
from langgraph_warden.events import EventKind
from langgraph_warden.keys import SigningKey
from langgraph_warden.warden import Warden

from .support.agents import SideEffects
from .support.graphs_approval import DEFAULT_SCRIPT, EFFECTS_ENV, PARALLEL_SCRIPT, build
from .support.schedules import every_call_starts, tool_node

GRAPH = "tests.support.graphs_approval:graph"
runner = CliRunner()


@pytest.fixture
def env(tmp_path, monkeypatch):
    effects_path = tmp_path / "effects.jsonl"
    monkeypatch.setenv(EFFECTS_ENV, str(effects_path))
    return SideEffects(effects_path)


def pause(db_url, effects, thread, script=DEFAULT_SCRIPT, **run):
    with Warden.open(db_url, ephemeral_keys=True) as w:
        g = build(w, effects.path, script)
        cfg = w.start_run(thread, owner="alice@example.com", intent="refund o-1 and notify", **run)
        g.invoke({"messages": [HumanMessage("go")]}, cfg)
        return [r for r in w.pending_approvals(thread)]


def cli(*args: str):
    return runner.invoke(app, ["approvals", *args])


def test_list_shows_pending_across_threads(db_url, env):
    (a,) = pause(db_url, env, "t-list-a")
    (b,) = pause(db_url, env, "t-list-b", risk_tier="high")
    res = cli("list", "--db", db_url, "--format", "json")
    assert res.exit_code == 0, res.output
    rows = {r["request_id"]: r for r in json.loads(res.output)}
    assert set(rows) == {a.request_id, b.request_id}
    row = rows[b.request_id]
    assert row["thread_id"] == "t-list-b" and row["tool"] == "issue_refund"
    assert row["args"] == {"order_id": "o-1", "amount": 10} and row["owner"] == "alice@example.com"
    assert row["risk_tier"] == "high" and row["reasons"] == ["irreversible"] and row["expires_at"]

    table = cli("list", "--db", db_url)
    assert table.exit_code == 0, table.output
    for text in ("t-list-a", "t-list-b", a.request_id, "issue_refund", "alice@example.com", "irreversible", "high"):
        assert text in table.output
    one = cli("list", "--db", db_url, "--thread", "t-list-a", "--format", "json")
    assert [r["request_id"] for r in json.loads(one.output)] == [a.request_id]


def test_decide_approve_reject_and_edit_resume_the_run(db_url, env):
    (req,) = pause(db_url, env, "t-cli")
    common = ["--db", db_url, "--graph", GRAPH, "--ephemeral-keys", "--format", "json"]
    res = cli("decide", "t-cli", req.request_id, "--approve", "--as", "bob@example.com", *common)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["result"] == "refunded 10 on o-1" and doc["decision"] == "approve"
    assert env.count("issue_refund") == 1
    (email,) = doc["pending"]  # the run moved on to the next gated call

    rej = cli("decide", "t-cli", email, "--reject", "--message", "not yet", "--as", "bob@example.com", *common)
    assert rej.exit_code == 0, rej.output
    assert "not yet" in json.loads(rej.output)["result"] and env.count("send_email") == 0
    with Warden.open(db_url, ephemeral_keys=True) as w:
        assert [e.payload["approver"] for e in w.ledger.events("t-cli", kinds=[EventKind.APPROVAL_GRANTED])] == ["bob@example.com"]
        assert len(w.ledger.events("t-cli", kinds=[EventKind.APPROVAL_REJECTED])) == 1
        assert w.audit("t-cli").verified

    (req2,) = pause(db_url, env, "t-cli-edit")
    ed = cli("decide", "t-cli-edit", req2.request_id, "--edit-args", '{"order_id": "o-1", "amount": 3}', "--as", "bob", *common)
    assert ed.exit_code == 0, ed.output
    assert json.loads(ed.output)["result"] == "refunded 3 on o-1"
    assert [e["amount"] for e in env.entries() if e["tool"] == "issue_refund"] == [10, 3]


def test_decide_refusals_and_usage_errors(db_url, env):
    (req,) = pause(db_url, env, "t-cli-sod", risk_tier="high")
    common = ["--db", db_url, "--graph", GRAPH, "--ephemeral-keys"]
    # The run's owner cannot approve a high-tier action: refused, exit 1, still pending.
    res = cli("decide", "t-cli-sod", req.request_id, "--approve", "--as", "alice@example.com", *common)
    assert res.exit_code == 1 and "separation_of_duties" in res.output
    assert env.count("issue_refund") == 0
    # Unsigned approval by someone else: refused too (high tier requires signatures).
    res = cli("decide", "t-cli-sod", req.request_id, "--approve", "--as", "bob@example.com", *common)
    assert res.exit_code == 1 and "unsigned" in res.output
    # Usage errors: exit 2, nothing happens.
    assert cli("decide", "t-cli-sod", "apr_nope", "--approve", "--as", "bob", *common).exit_code == 2
    assert cli("decide", "t-cli-sod", req.request_id, "--approve", "--reject", "--as", "bob", *common).exit_code == 2
    assert cli("decide", "t-cli-sod", req.request_id, "--reject", "--as", "bob", *common).exit_code == 2
    bad_graph = cli("decide", "t-cli-sod", req.request_id, "--approve", "--as", "bob", "--db", db_url,
                    "--graph", "tests.support.graphs_approval", "--ephemeral-keys")
    assert bad_graph.exit_code == 2 and "module:attribute" in bad_graph.output
    with Warden.open(db_url, ephemeral_keys=True) as w:
        assert [p.request_id for p in w.pending_approvals("t-cli-sod")] == [req.request_id]
        assert [e.payload["reason"] for e in w.ledger.events("t-cli-sod", kinds=[EventKind.APPROVAL_REFUSED])] == [
            "separation_of_duties", "unsigned"
        ]


def test_decide_signed_with_key_file(db_url, env, tmp_path):
    (req,) = pause(db_url, env, "t-cli-signed", risk_tier="high")
    private = Ed25519PrivateKey.generate()  # the approver's own key, kept in their key file
    key = SigningKey.from_private(private, "file")
    seed = private.private_bytes_raw()
    key_file = tmp_path / "bob.key"
    key_file.write_text(base64.b64encode(seed).decode())
    approver_keys = tmp_path / "approvers.json"
    approver_keys.write_text(json.dumps({"bob@example.com": base64.b64encode(key.public_key).decode()}))
    res = cli(
        "decide", "t-cli-signed", req.request_id, "--approve", "--as", "bob@example.com", "--key", str(key_file),
        "--approver-keys", str(approver_keys), "--db", db_url, "--graph", GRAPH, "--ephemeral-keys",
    )
    assert res.exit_code == 0, res.output
    assert "(signed)" in res.output and "refunded 10 on o-1" in res.output
    with Warden.open(db_url, ephemeral_keys=True) as w:
        (granted,) = w.ledger.events("t-cli-signed", kinds=[EventKind.APPROVAL_GRANTED])
        assert granted.payload["authenticated"] is True and granted.payload["answer"]["key_id"] == key.key_id


def test_decide_parallel_toolnode_calls_by_request_id(db_url, env, monkeypatch):
    monkeypatch.setenv("WARDEN_TEST_SCRIPT", "parallel")
    monkeypatch.setattr(tool_node, "get_executor_for_config", every_call_starts)  # both calls ask (see schedules)
    pending = pause(db_url, env, "t-cli-par", script=PARALLEL_SCRIPT)
    assert len(pending) == 2
    common = ["--db", db_url, "--graph", GRAPH, "--ephemeral-keys", "--format", "json"]
    # Answer the one LangGraph did NOT surface first, then the other.
    with Warden.open(db_url, ephemeral_keys=True) as w:
        surfaced = build(w, env.path, PARALLEL_SCRIPT).get_state({"configurable": {"thread_id": "t-cli-par"}}).interrupts
    (shown,) = surfaced
    order = sorted(pending, key=lambda r: r.request_id == shown.value["request_id"])
    for n, r in enumerate(order):
        res = cli("decide", "t-cli-par", r.request_id, "--approve", "--as", "bob@example.com", *common)
        assert res.exit_code == 0, res.output
        assert len(json.loads(res.output)["pending"]) == 1 - n
    assert env.count("issue_refund") == 1 and env.count("send_email") == 1
