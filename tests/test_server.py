"""LangGraph Agent Server: a real ``langgraph dev`` (in memory, offline) running the example project
(``examples/agent_server``) with the warden checkpointer on a SQLite file, driven through langgraph-sdk.

Two servers start once per module, side by side: one without auth (owners from run metadata,
approvers named in the answer) and one with the example's custom auth (owners and approvers are
the authenticated users).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver
from typer.testing import CliRunner

pytest.importorskip("langgraph_api", reason="needs the server extra: pip install -e '.[server]'")

from langgraph_sdk import get_sync_client
from langgraph_sdk.errors import NotFoundError

from langgraph_warden.checkpointers import WardenSaver
from langgraph_warden.checkpointers.readonly import open_existing
from langgraph_warden.cli import app
from langgraph_warden.events import EventKind

from .conftest import pg_schema_url, requires_pg

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "agent_server"
TOKENS = {"alice-token": "alice@example.com", "bob-token": "bob@example.com"}
runner = CliRunner()


@dataclass
class Server:
    url: str
    db_url: str
    outbox: Path
    log: Path
    proc: subprocess.Popen[bytes]

    def client(self, token: str | None = None) -> Any:
        return get_sync_client(url=self.url, headers={"Authorization": f"Bearer {token}"} if token else None)

    def refunds(self) -> list[str]:
        return self.outbox.read_text().splitlines() if self.outbox.exists() else []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(root: Path, *, auth: bool, **extra_env: str) -> Server:
    root.mkdir(exist_ok=True)
    config: dict[str, Any] = {
        "dependencies": [str(EXAMPLE)],
        "graphs": {"agent": f"{EXAMPLE / 'agent.py'}:agent"},
        "checkpointer": {"path": "langgraph_warden.server.checkpointer"},
    }
    if auth:
        config["auth"] = {"path": f"{EXAMPLE / 'auth.py'}:auth"}
    (root / "langgraph.json").write_text(json.dumps(config))
    db_url = extra_env.get("WARDEN_DATABASE_URL") or f"sqlite:///{root / 'warden.db'}"
    env = {**os.environ, "WARDEN_DATABASE_URL": db_url, "WARDEN_EPHEMERAL_KEYS": "1",
           "WARDEN_EXAMPLE_OUTBOX": str(root / "refunds.log"), "WARDEN_EXAMPLE_TOKENS": json.dumps(TOKENS),
           "LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGSMITH_TRACING": "false", **extra_env}
    port = _free_port()
    log = root / "server.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [shutil.which("langgraph") or "langgraph", "dev", "--no-browser", "--no-reload", "--host", "127.0.0.1",
             "--port", str(port)],
            cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    return Server(f"http://127.0.0.1:{port}", db_url, root / "refunds.log", log, proc)


def _ready(server: Server, deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"langgraph dev exited {server.proc.returncode}:\n{server.log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(server.url + "/ok", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"langgraph dev did not become ready:\n{server.log.read_text()[-4000:]}")


def _stop(server: Server) -> None:
    if server.proc.poll() is None:
        os.killpg(server.proc.pid, signal.SIGTERM)  # the group this test started (start_new_session)
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.proc.pid, signal.SIGKILL)
            server.proc.wait()


#: The refund of the crash test keeps running this long after its side effect (the kill's window).
REFUND_DELAY = "3"


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[list[Server]]:
    root = tmp_path_factory.mktemp("agent-server")
    started = [_launch(root / "plain", auth=False), _launch(root / "auth", auth=True),
               _launch(root / "crash", auth=True, WARDEN_EXAMPLE_REFUND_DELAY=REFUND_DELAY)]
    try:
        deadline = time.monotonic() + 90
        for server in started:
            _ready(server, deadline)
        yield started
    finally:
        for server in started:
            _stop(server)


@pytest.fixture(scope="module")
def plain(servers) -> Server:
    return servers[0]


@pytest.fixture(scope="module")
def authed(servers) -> Server:
    return servers[1]


@pytest.fixture(scope="module")
def crashy(servers) -> Server:
    return servers[2]


MEDIUM = {"configurable": {"intent": "refund a duplicate charge", "risk_tier": "medium"}}


def _start(server: Server, *, token: str | None = None, metadata: dict[str, Any] | None = None,
           config: dict[str, Any] | None = None) -> tuple[Any, str, dict[str, Any]]:
    """A new thread whose run pauses at the refund's approval: (client, thread id, interrupt)."""
    client = server.client(token)
    thread = client.threads.create()["thread_id"]
    out = client.runs.wait(thread, "agent", input={"messages": [{"role": "user", "content": "refund O-77"}]},
                           metadata=metadata, config=config if config is not None else MEDIUM)
    (pending,) = out["__interrupt__"]
    return client, thread, pending


def _resume(client: Any, thread: str, interrupt_id: str, answer: Any) -> dict[str, Any]:
    return client.runs.wait(thread, "agent", command={"resume": {interrupt_id: answer}}, raise_error=False)


def _tool_message(out: dict[str, Any], call_id: str = "call_refund") -> str:
    return next(m["content"] for m in out["messages"] if m.get("tool_call_id") == call_id)


def _events(server: Server, thread: str, kind: str) -> list[Any]:
    saver = open_existing(server.db_url)
    try:
        return saver.ledger.events(thread, kinds=[kind])
    finally:
        saver.close()


def _pending_ids(client: Any, thread: str) -> list[str]:
    """Still pending in the checkpoint (a refused answer leaves the thread 'error' but its interrupt stands)."""
    return [i["value"]["request_id"] for i in client.threads.get_state(thread).get("interrupts") or []]


# ----------------------------------------------------------------------------------- tests
def test_server_probe_finds_every_checkpointer_capability(plain):
    # The server's probe (langgraph_api._checkpointer._adapter: a method overriding BaseCheckpointSaver's,
    # or present where the base has none); importing it here would need the server's environment.
    for name in ("aget_iter", "adelete_thread", "adelete_for_runs", "acopy_thread", "aprune"):
        assert getattr(WardenSaver, name) is not getattr(BaseCheckpointSaver, name, None), name
    log = plain.log.read_text()
    assert "Using custom checkpointer: WardenSaver" in log
    assert "Custom checkpointer missing" not in log, log


def test_a_run_without_owner_is_refused(plain):
    client = plain.client()
    thread = client.threads.create()["thread_id"]
    before = plain.refunds()
    out = client.runs.wait(thread, "agent", input={"messages": [{"role": "user", "content": "refund O-77"}]},
                           config=MEDIUM)
    assert "__interrupt__" not in out
    refused = _tool_message(out)
    assert "Denied (no_owner)" in refused and "metadata={'owner'" in refused
    assert plain.refunds() == before


def test_hitl_approve_resumes_once_and_a_reused_answer_is_refused(plain):
    client, thread, pending = _start(plain, metadata={"owner": "alice@example.com"})
    value = pending["value"]
    assert value["action_requests"] == [{"name": "issue_refund", "args": {"order_id": "O-77"},
                                         "description": value["action_requests"][0]["description"]}]
    assert value["review_configs"] == [{"action_name": "issue_refund", "allowed_decisions": ["approve", "edit", "reject"]}]
    assert value["owner"] == "alice@example.com" and value["intent"] == "refund a duplicate charge"
    first = {"type": "approve", "approver": "bob@example.com",
             "request_id": value["request_id"], "action_digest": value["action_digest"]}

    before = len(plain.refunds())
    out = _resume(client, thread, pending["id"], {"decisions": [first]})
    assert _tool_message(out).startswith("refunded O-77")
    assert plain.refunds()[before:] == ["refund O-77"]

    # A second request on the thread; the first answer, sent again, is refused and nothing runs.
    again = client.runs.wait(thread, "agent", input={"messages": [{"role": "user", "content": "also refund O-78"}]})
    (second,) = again["__interrupt__"]
    refused = _resume(client, thread, second["id"], {"decisions": [first]})
    assert "already decided" in json.dumps(refused.get("__error__"))
    assert _pending_ids(client, thread) == [second["value"]["request_id"]]
    assert len(plain.refunds()) == before + 1
    (granted,) = _events(plain, thread, EventKind.APPROVAL_GRANTED)
    assert granted.payload["approver"] == "bob@example.com"
    refusals = _events(plain, thread, EventKind.APPROVAL_REFUSED)
    assert [r.payload["reason"] for r in refusals] == ["reused"]


def test_hitl_mismatched_digest_is_refused_then_edit_and_reject_work(plain):
    client, thread, pending = _start(plain, metadata={"owner": "alice@example.com"})
    before = len(plain.refunds())
    wrong = _resume(client, thread, pending["id"],
                    {"decisions": [{"type": "approve", "approver": "bob", "action_digest": "sha256:" + "0" * 64}]})
    assert "action_digest" in json.dumps(wrong.get("__error__"))
    other_tool = _resume(client, thread, pending["id"], {"decisions": [
        {"type": "edit", "approver": "bob", "edited_action": {"name": "lookup_order", "args": {"order_id": "O-1"}}}]})
    assert "not the requested tool" in json.dumps(other_tool.get("__error__"))
    assert len(plain.refunds()) == before and _pending_ids(client, thread) == [pending["value"]["request_id"]]

    out = _resume(client, thread, pending["id"], {"decisions": [
        {"type": "edit", "approver": "bob", "edited_action": {"name": "issue_refund", "args": {"order_id": "O-77-A"}}}]})
    assert _tool_message(out).startswith("refunded O-77-A")
    assert plain.refunds()[before:] == ["refund O-77-A"]
    (edited,) = _events(plain, thread, EventKind.APPROVAL_EDITED)
    assert edited.payload["edited_args"] == {"order_id": "O-77-A"}

    client, thread, pending = _start(plain, metadata={"owner": "alice@example.com"})
    out = _resume(client, thread, pending["id"], {"type": "reject", "approver": "bob", "message": "not this one"})
    assert "Rejected by bob: not this one" in _tool_message(out)
    assert len(plain.refunds()) == before + 1


def test_auth_user_is_owner_and_approver(authed):
    _client, thread, pending = _start(authed, token="alice-token", metadata={"owner": "mallory@example.com"})
    assert pending["value"]["owner"] == "alice@example.com"  # the authenticated user, not the claimed owner
    bob = authed.client("bob-token")
    before = len(authed.refunds())
    posing = _resume(bob, thread, pending["id"], {"decisions": [{"type": "approve", "approver": "carol@example.com"}]})
    assert "not the authenticated user" in json.dumps(posing.get("__error__"))
    out = _resume(bob, thread, pending["id"], {"decisions": [{"type": "approve"}]})
    assert _tool_message(out).startswith("refunded O-77") and authed.refunds()[before:] == ["refund O-77"]

    (started,) = _events(authed, thread, EventKind.RUN_STARTED)
    assert started.payload["charter"]["owner"] == "alice@example.com" and started.payload["source"] == "run"
    (granted,) = _events(authed, thread, EventKind.APPROVAL_GRANTED)
    assert granted.payload["approver"] == "bob@example.com"
    assert [r.payload["reason"] for r in _events(authed, thread, EventKind.APPROVAL_REFUSED)] == ["approver_mismatch"]
    verified = runner.invoke(app, ["audit", "verify", "--db", authed.db_url, "--thread", thread])
    assert verified.exit_code == 0, verified.output


def test_cli_lists_and_decides_through_the_server(authed):
    _client, thread, pending = _start(authed, token="alice-token")
    rid = pending["value"]["request_id"]
    listed = runner.invoke(app, ["approvals", "list", "--server", authed.url, "--token", "bob-token", "--format", "json"])
    assert listed.exit_code == 0, listed.output
    rows = {r["request_id"]: r for r in json.loads(listed.output)}
    assert rows[rid]["thread_id"] == thread and rows[rid]["owner"] == "alice@example.com"
    assert rows[rid]["interrupt_id"] == pending["id"]
    assert "bob-token" not in listed.output

    no_token = runner.invoke(app, ["approvals", "list", "--server", authed.url])
    assert no_token.exit_code == 2 and "--token" in no_token.output

    before = len(authed.refunds())
    decided = runner.invoke(app, ["approvals", "decide", thread, rid, "--server", authed.url, "--token", "bob-token",
                                  "--approve"])
    assert decided.exit_code == 0, decided.output
    assert "tool result: refunded O-77" in decided.output and f"still pending on {thread}: none" in decided.output
    assert len(authed.refunds()) == before + 1
    (granted,) = _events(authed, thread, EventKind.APPROVAL_GRANTED)
    assert granted.payload["approver"] == "bob@example.com"

    twice = runner.invoke(app, ["approvals", "decide", thread, rid, "--server", authed.url, "--token", "bob-token",
                                "--approve"])
    assert twice.exit_code == 2 and "no pending approval request" in twice.output
    assert len(authed.refunds()) == before + 1


def test_concurrent_threads_each_pause_and_run_once(plain):
    client = plain.client()
    before = len(plain.refunds())
    threads = [client.threads.create()["thread_id"] for _ in range(4)]
    runs = [client.runs.create(t, "agent", input={"messages": [{"role": "user", "content": "refund O-77"}]},
                               metadata={"owner": f"owner-{i}@example.com"}, config=MEDIUM)
            for i, t in enumerate(threads)]
    paused = [client.runs.join(t, r["run_id"])["__interrupt__"][0] for t, r in zip(threads, runs, strict=True)]
    assert len({p["value"]["request_id"] for p in paused}) == 4
    resumed = [client.runs.create(t, "agent", command={"resume": {p["id"]: {"type": "approve", "approver": "bob"}}})
               for t, p in zip(threads, paused, strict=True)]
    for t, r in zip(threads, resumed, strict=True):
        assert _tool_message(client.runs.join(t, r["run_id"])).startswith("refunded O-77")
    assert len(plain.refunds()) == before + 4
    for i, t in enumerate(threads):
        (started,) = _events(plain, t, EventKind.RUN_STARTED)
        assert started.payload["charter"]["owner"] == f"owner-{i}@example.com"
        assert len(_events(plain, t, EventKind.TOOL_COMPLETED)) == 2  # lookup + refund, once each


def test_server_killed_mid_refund_resumes_without_repeating_it(crashy):
    bob = crashy.client("bob-token")
    _, thread, pending = _start(crashy, token="alice-token")
    bob.runs.create(thread, "agent", command={"resume": {pending["id"]: {"decisions": [{"type": "approve"}]}}})
    deadline = time.monotonic() + 20
    while not crashy.refunds() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert crashy.refunds() == ["refund O-77"]  # the side effect happened; the tool is still running
    os.killpg(crashy.proc.pid, signal.SIGKILL)
    crashy.proc.wait()

    restarted = _launch(Path(crashy.log).parent, auth=True, WARDEN_EXAMPLE_REFUND_DELAY=REFUND_DELAY)
    crashy.url, crashy.proc = restarted.url, restarted.proc  # the fixture stops the new process
    _ready(crashy, time.monotonic() + 60)
    alice = crashy.client("alice-token")
    # `langgraph dev` keeps its thread records in memory (lost with the process); the checkpoints are
    # warden's, on disk. Re-create the record and continue the thread from its last checkpoint.
    alice.threads.create(thread_id=thread, if_exists="do_nothing")
    out = alice.runs.wait(thread, "agent", input=None)
    assert "started but never finished" in _tool_message(out)
    assert crashy.refunds() == ["refund O-77"]  # not repeated

    (aborted,) = _events(crashy, thread, EventKind.TOOL_ABORTED)
    assert aborted.payload["tool_call_id"] == "call_refund"
    (granted,) = _events(crashy, thread, EventKind.APPROVAL_GRANTED)
    assert granted.payload["approver"] == "bob@example.com"
    (started,) = _events(crashy, thread, EventKind.RUN_STARTED)
    assert started.payload["charter"]["owner"] == "alice@example.com"
    verified = runner.invoke(app, ["audit", "verify", "--db", crashy.db_url])
    assert verified.exit_code == 0, verified.output
    shown = runner.invoke(app, ["audit", "show", "--db", crashy.db_url, thread])
    assert "alice@example.com" in shown.output and "bob@example.com" in shown.output and "aborted" in shown.output


def test_thread_copy_and_delete_go_through_the_warden_saver(plain):
    client, thread, pending = _start(plain, metadata={"owner": "alice@example.com"})
    _resume(client, thread, pending["id"], {"type": "approve", "approver": "bob"})
    copy = client.threads.copy(thread)["thread_id"]  # the saver's acopy_thread
    assert len(client.threads.get_state(copy)["values"]["messages"]) == len(
        client.threads.get_state(thread)["values"]["messages"])
    client.threads.delete(thread)  # the saver's adelete_thread
    with pytest.raises(NotFoundError):
        client.threads.get_state(thread)
    verified = runner.invoke(app, ["audit", "verify", "--db", plain.db_url])
    assert verified.exit_code == 0, verified.output



@pytest.mark.postgres
@requires_pg
def test_server_on_postgresql(tmp_path):
    """The production shape: the warden checkpointer on PostgreSQL (migrated at start-up), server auth."""
    server = _launch(tmp_path / "pg", auth=True, WARDEN_DATABASE_URL=pg_schema_url("srv"))
    try:
        _ready(server, time.monotonic() + 60)
        assert "Custom checkpointer missing" not in server.log.read_text()
        _, thread, pending = _start(server, token="alice-token")
        out = _resume(server.client("bob-token"), thread, pending["id"], {"decisions": [{"type": "approve"}]})
        assert _tool_message(out).startswith("refunded O-77") and server.refunds() == ["refund O-77"]
        (granted,) = _events(server, thread, EventKind.APPROVAL_GRANTED)
        assert granted.payload["approver"] == "bob@example.com"
        verified = runner.invoke(app, ["audit", "verify", "--db", server.db_url, "--thread", thread])
        assert verified.exit_code == 0, verified.output
    finally:
        _stop(server)
