"""``langgraph_warden.server`` without a server: settings from the environment, the checkpointer
context manager and the graph factory (the server itself: tests/test_server.py)."""

from __future__ import annotations

import asyncio

import pytest

from langgraph_warden import server
from langgraph_warden.checkpointers import WardenSaver
from langgraph_warden.errors import ConfigurationError
from langgraph_warden.guards.run_charter import charter_from_run


def test_missing_database_url_says_what_to_set():
    with pytest.raises(ConfigurationError, match=r"WARDEN_DATABASE_URL is not set.*langgraph\.json"):
        server.ServerSettings.from_env({})


@pytest.mark.parametrize(("env", "match"), [
    ({"WARDEN_EPHEMERAL_KEYS": "1", "WARDEN_KEY_DIR": "/k"}, "not both"),
    ({"WARDEN_MODE": "audit"}, "WARDEN_MODE"),
])
def test_contradictory_settings_are_refused(env, match):
    with pytest.raises(ConfigurationError, match=match):
        server.ServerSettings.from_env({"WARDEN_DATABASE_URL": "sqlite:///x.db", **env})


def test_settings_read_every_variable(tmp_path):
    keys = tmp_path / "approvers.json"
    keys.write_text('{"bob": "AAAA"}')
    s = server.ServerSettings.from_env({
        "WARDEN_DATABASE_URL": " sqlite:///x.db ", "WARDEN_TRUSTED_KEY_IDS": "k1, k2,", "WARDEN_MODE": "monitor",
        "WARDEN_WORKLOAD_ID": "spiffe://example.org/agent", "WARDEN_APPROVER_KEYS": str(keys),
    })
    assert (s.database_url, s.trusted_key_ids, s.mode, s.workload_id) == (
        "sqlite:///x.db", ("k1", "k2"), "monitor", "spiffe://example.org/agent")
    assert s.approver_keys() == {"bob": b"\x00\x00\x00"}
    keys.write_text("[1]")
    with pytest.raises(ConfigurationError, match="WARDEN_APPROVER_KEYS"):
        s.approver_keys()


def test_checkpointer_and_graph_factory_share_one_warden(tmp_path, monkeypatch):
    monkeypatch.setenv("WARDEN_DATABASE_URL", f"sqlite:///{tmp_path / 'w.db'}")
    monkeypatch.setenv("WARDEN_EPHEMERAL_KEYS", "1")
    built = []

    @server.graph_factory
    def graph(warden):
        built.append(warden)
        return object()

    async def scenario():
        async with server.checkpointer() as saver:
            assert isinstance(saver, WardenSaver)
            first, second = await graph({}), await graph({})
            assert first is second and len(built) == 1  # built once per process
            assert built[0].checkpointer is saver  # one saver: the guard and the server share the history
            assert built[0].guard.charter_source.func is charter_from_run
        assert server._warden is None  # closed with the last user
        async with server.checkpointer() as reopened:
            assert await graph({}) is not first and built[1].checkpointer is reopened  # rebuilt on the new Warden

    asyncio.run(scenario())


def test_with_server_auth_only_an_authenticated_user_owns_a_run():
    env = {"WARDEN_DATABASE_URL": "sqlite:///x.db"}
    assert not server.ServerSettings.from_env(env).server_auth
    assert server.ServerSettings.from_env({**env, "LANGGRAPH_AUTH": '{"path": "./auth.py:auth"}'}).server_auth
    claimed = {"configurable": {"intent": "x"}, "metadata": {"owner": "mallory"}}
    assert charter_from_run(claimed, require_auth=True) is None  # refused (no_owner), not owned by the claim
    authed = {**claimed, "configurable": {"intent": "x", "langgraph_auth_user_id": "alice"}}
    assert charter_from_run(authed, require_auth=True).owner == "alice"
