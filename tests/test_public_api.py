"""The public API from the top-level package, loaded lazily (issue 19, item 1); the testing module."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import langgraph_warden

REPO = Path(__file__).resolve().parents[1]

#: What `import langgraph_warden` must not pull in: each costs tens to hundreds of milliseconds.
HEAVY = ("langgraph", "langchain", "langchain_core", "sqlalchemy", "cryptography", "keyring", "jwt", "regopy",
         "cedarpy", "rich", "typer")


def test_the_quickstart_names_import_from_the_top_level():
    from langgraph_warden import (  # noqa: F401
        CedarEngine,
        EphemeralKeyStore,
        FileHeadStore,
        KeyStoreError,
        OpaServerEngine,
        RegoEngine,
        ToolSpec,
        Warden,
        WardenError,
        WardenSaver,
        approve,
        current_credential,
        edit,
        reject,
    )
    from langgraph_warden.guards.approval import approve as approve_in_module
    from langgraph_warden.warden import Warden as warden_in_module

    assert Warden is warden_in_module and approve is approve_in_module


def test_import_is_cheap():
    code = f"import sys, json, langgraph_warden; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    loaded = set(json.loads(proc.stdout))
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_every_exported_name_resolves_to_its_module_object():
    for name, module in langgraph_warden._EXPORTS.items():
        expected = getattr(importlib.import_module(module, "langgraph_warden"), name)
        assert getattr(langgraph_warden, name) is expected, name
    assert set(langgraph_warden._EXPORTS) <= set(dir(langgraph_warden))
    assert set(langgraph_warden.__all__) == {"__version__", *langgraph_warden._EXPORTS}
    with pytest.raises(AttributeError, match="has no attribute 'Wardn'"):
        langgraph_warden.Wardn  # noqa: B018


def test_type_checkers_see_exactly_the_exported_names():
    """The ``if TYPE_CHECKING:`` imports and the lazy table cannot drift apart."""
    tree = ast.parse((REPO / "plugin" / "__init__.py").read_text(encoding="utf-8"))
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    seen = {
        alias.asname or alias.name: "." * node.level + (node.module or "")
        for node in block.body if isinstance(node, ast.ImportFrom) for alias in node.names
    }
    assert seen == langgraph_warden._EXPORTS


def test_star_import_gives_the_public_api():
    namespace: dict[str, object] = {}
    exec("from langgraph_warden import *", namespace)
    assert {"Warden", "ToolSpec", "approve", "current_credential", "RegoEngine"} <= set(namespace)


def test_scripted_model_lives_in_testing_and_drives_create_agent(tmp_path):
    from langchain.agents import create_agent
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool

    from langgraph_warden import ToolSpec, Warden
    from langgraph_warden.demo import ScriptedChatModel as demo_model
    from langgraph_warden.testing import ScriptedChatModel, tool_call

    assert demo_model is ScriptedChatModel  # the demo uses it; production modules do not define it

    @tool
    def lookup(customer_id: str) -> str:
        """Read a customer."""
        return f"customer {customer_id}"

    model = ScriptedChatModel(script=[
        AIMessage("", tool_calls=[tool_call("lookup", {"customer_id": "C-1"}, "call_1")]),
        AIMessage("done"),
    ])
    with Warden.open(f"sqlite:///{tmp_path / 'a.db'}", ephemeral_keys=True) as warden:
        warden.tools.register(ToolSpec("lookup", idempotent=True))
        agent = create_agent(model, [lookup], middleware=[warden.middleware()], checkpointer=warden.checkpointer)
        config = warden.start_run("t", owner="alice@example.com", intent="look a customer up")
        out = agent.invoke({"messages": [("user", "who is C-1?")]}, config)
        assert out["messages"][-1].content == "done"
        assert [(a.tool, a.status) for a in warden.audit("t").actions] == [("lookup", "authorised+completed")]
