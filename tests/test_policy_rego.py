"""Embedded Rego engine, the policy documents, and the tool registry."""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from typing import Any

import pytest
from langchain_core.tools import tool

from langgraph_warden import canonical
from langgraph_warden.errors import ConfigurationError
from langgraph_warden.guards.policy import (
    DEFAULT_REGO_POLICY,
    MalformedDecisionError,
    PolicyDecision,
    PolicyEngine,
    PolicyLoadError,
    UnsupportedBuiltinError,
    build_policy_input,
    decision_from_document,
    fail_closed,
    validate_policy_input,
)
from langgraph_warden.guards.rego import RegoEngine
from langgraph_warden.guards.tools import ToolRegistry, ToolSpec
from tests.support.history_v2 import aggregate


def make_input(spec: ToolSpec | None = None, *, tool_name: str | None = None, **run: Any) -> dict[str, Any]:
    spec = spec if spec is not None or tool_name else ToolSpec("lookup", sensitivity="public")
    kwargs: dict[str, Any] = {"owner": "alice", "risk_tier": "low"}
    kwargs.update(run)
    return build_policy_input(
        workload_id="spiffe://example.org/agent", thread_id="t-1",
        tool_name=tool_name or spec.name, tool_spec=spec, args={"q": "x"},
        now="2025-01-01T00:00:00Z", **kwargs,
    )


OK_DECISION = ('{"allow": true, "require_approval": false, "reasons": [], "scopes": ["s"], '
               '"ttl_seconds": 30, "obligations": {}}')


@pytest.fixture(scope="module")
def default_engine() -> RegoEngine:
    return RegoEngine(DEFAULT_REGO_POLICY)


# ---------------------------------------------------------------- default policy


def test_default_policy_allows_a_plain_call(default_engine: RegoEngine) -> None:
    spec = ToolSpec("lookup", sensitivity="public", scopes=("kb:read",))
    d = default_engine.decide(make_input(spec))
    assert (d.allow, d.require_approval, d.reasons, d.scopes, d.ttl_seconds) == (True, False, (), ("kb:read",), 300)
    assert d.engine == "rego" and d.policy_revision == default_engine.revision
    assert d.input_digest == canonical.digest(make_input(spec))
    assert isinstance(default_engine, PolicyEngine)


def test_default_policy_denies_unknown_tool(default_engine: RegoEngine) -> None:
    d = default_engine.decide(make_input(None, tool_name="rm_rf"))
    assert not d.allow and d.reasons == ("unknown_tool",) and d.scopes == () and d.ttl_seconds == 0


def test_default_policy_rate_limit_reads_data(default_engine: RegoEngine) -> None:
    engine = RegoEngine(DEFAULT_REGO_POLICY, data={"warden_config": {"limits": {"per_tool": 2}}})
    history = aggregate([{"tool": "lookup", "decision": "allow", "outcome": "completed", "ts": None}] * 2)
    assert engine.decide(make_input(history=history)).reasons == ("rate_limited",)
    # denied calls do not count, and the default limit (20) is not reached
    denied = aggregate([{"tool": "lookup", "decision": "deny", "outcome": "denied", "ts": None}] * 5)
    assert engine.decide(make_input(history=denied)).allow
    assert default_engine.decide(make_input(history=history)).allow
    d = engine.decide(make_input())
    assert d.obligations["rate_limit"] == {"per_tool": 2, "per_run": 100}


def test_ttl_overrides_from_data() -> None:
    engine = RegoEngine(DEFAULT_REGO_POLICY, data={"warden_config": {"ttl_seconds": {"low": 7}}})
    assert engine.decide(make_input()).ttl_seconds == 7
    assert engine.decide(make_input(risk_tier="medium")).ttl_seconds == 120


# ---------------------------------------------------------------- load-time checks


def test_policy_calling_missing_builtin_is_refused(tmp_path) -> None:
    path = tmp_path / "net.rego"
    path.write_text(
        "package warden\n"
        "import rego.v1\n"
        "internal_ip if net.cidr_contains(\"10.0.0.0/8\", input.target)\n"
        "decision := {\"allow\": internal_ip}\n"
    )
    with pytest.raises(UnsupportedBuiltinError) as info:
        RegoEngine(path)
    err = info.value
    assert err.builtins == ("net.cidr_contains",)
    assert "net.cidr_contains" in str(err) and f"{path}:3:16" in str(err)
    assert (err.file, err.line, err.column) == (str(path), 3, 16)


def test_loading_a_policy_never_writes_its_files(tmp_path) -> None:
    # regopy's save_bundle (used to compile the plan that checks builtins) writes each module back
    # to its module name as a path; named by the user's path, the policy file was truncated and
    # rewritten in place, so a second process loading it at that moment read an empty file.
    path = tmp_path / "policy.rego"
    path.write_text(DEFAULT_REGO_POLICY.read_text())
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = path.stat()
    RegoEngine(path, data={"revision_salt": str(tmp_path)})  # a fresh revision: the plan is compiled
    after = path.stat()
    assert (after.st_mtime_ns, after.st_ino, after.st_size) == (before.st_mtime_ns, before.st_ino, before.st_size)


def test_missing_builtin_in_unreached_function_is_still_refused() -> None:
    source = (
        "package warden\nimport rego.v1\n"
        "fetch(u) := http.send({\"method\": \"get\", \"url\": u})\n"
        "decision := {\"allow\": false}\n"
    )
    with pytest.raises(UnsupportedBuiltinError, match="http.send"):
        RegoEngine.from_source(source)


def test_malformed_policy_reports_file_line_column(tmp_path) -> None:
    path = tmp_path / "bad.rego"
    path.write_text("package warden\n\ndecision := {\"allow\": true} if {\n    input.a == == 1\n}\n")
    with pytest.raises(PolicyLoadError) as info:
        RegoEngine(path)
    err = info.value
    assert (err.file, err.line, err.column) == (str(path), 4, 13)
    assert f"{path}:4:13" in str(err) and "Invalid boolean operator" in str(err)


def test_missing_policy_file_and_bad_query(tmp_path) -> None:
    with pytest.raises(PolicyLoadError, match="does not exist"):
        RegoEngine(tmp_path / "nope.rego")
    with pytest.raises(PolicyLoadError, match="data.<package>.<rule>"):
        RegoEngine(DEFAULT_REGO_POLICY, query="warden.decision")


def test_directory_of_policies_and_custom_query(tmp_path) -> None:
    (tmp_path / "a.rego").write_text("package custom\nimport rego.v1\nok := data.custom.doc\n")
    (tmp_path / "b.rego").write_text(f"package custom\nimport rego.v1\ndoc := {OK_DECISION}\n")
    d = RegoEngine(tmp_path, query="data.custom.ok").decide(make_input())
    assert d.allow and d.scopes == ("s",) and d.ttl_seconds == 30


# ---------------------------------------------------------------- fail closed


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("package warden\nimport rego.v1\ndecision := {\"allow\": true} if input.never\n", "policy_undefined"),
        ("package warden\ndecision := {\"allow\": true}\n", "malformed_decision"),
        ("package warden\ndecision := {\"allow\": \"yes\", \"require_approval\": false, \"reasons\": [], "
         "\"scopes\": [], \"ttl_seconds\": 1, \"obligations\": {}}\n", "malformed_decision"),
        ("package warden\ndecision := " + OK_DECISION[:-1] + ", \"alow\": true}\n", "malformed_decision"),
        # conflicting complete rules: an evaluation error
        ("package warden\ndecision := 1\ndecision := 2\n", "policy_error:RegoEvaluationError"),
        # strict builtin errors: to_number fails at runtime
        ("package warden\ndecision := to_number(\"abc\")\n", "policy_error:RegoEvaluationError"),
    ],
)
def test_bad_results_deny(source: str, reason: str) -> None:
    d = RegoEngine.from_source(source).decide(make_input())
    assert not d.allow and not d.require_approval and d.reasons == (reason,)


class NativePanic(BaseException):
    """Stands in for a native binding raising a BaseException subclass."""


def test_base_exception_from_native_binding_denies(default_engine: RegoEngine, monkeypatch) -> None:
    def boom(_input: Any) -> Any:
        raise NativePanic("rust panic")

    monkeypatch.setattr(default_engine, "evaluate", boom)
    d = default_engine.decide(make_input())
    assert not d.allow and d.reasons == ("policy_error:NativePanic",)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(1), asyncio.CancelledError()])
def test_interrupts_are_not_swallowed(default_engine: RegoEngine, monkeypatch, exc: BaseException) -> None:
    def boom(_input: Any) -> Any:
        raise exc

    monkeypatch.setattr(default_engine, "evaluate", boom)
    with pytest.raises(type(exc)):
        default_engine.decide(make_input())
    with pytest.raises(type(exc)):
        fail_closed(default_engine, {}, exc)


def test_unencodable_input_denies(default_engine: RegoEngine) -> None:
    d = default_engine.decide({"version": 2, "args": {"x": object()}})
    assert not d.allow and d.reasons[0].startswith("policy_error:")
    assert d.input_digest.startswith("unavailable:")


# ---------------------------------------------------------------- engine behaviour


async def test_adecide_matches_decide(default_engine: RegoEngine) -> None:
    spec = ToolSpec("pay", irreversible=True)
    sync, async_ = default_engine.decide(make_input(spec)), await default_engine.adecide(make_input(spec))
    assert sync == async_ and sync.require_approval and sync.reasons == ("irreversible",)


def test_concurrent_decisions_are_isolated(default_engine: RegoEngine) -> None:
    """The native interpreter is shared; the lock must keep inputs from mixing."""
    specs = [ToolSpec("lookup"), ToolSpec("pay", irreversible=True)]
    expected = [default_engine.decide(make_input(s)) for s in specs]
    errors: list[str] = []

    def work(i: int) -> None:
        for _ in range(30):
            got = default_engine.decide(make_input(specs[i % 2]))
            if got != expected[i % 2]:
                errors.append(f"{i}: {got}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_revision_tracks_policy_and_data() -> None:
    a = RegoEngine.from_source(f"package warden\ndecision := {OK_DECISION}\n")
    b = RegoEngine.from_source(f"package warden\ndecision := {OK_DECISION}\n# changed\n")
    c = RegoEngine.from_source(f"package warden\ndecision := {OK_DECISION}\n", data={"x": 1})
    assert len({a.revision, b.revision, c.revision}) == 3


def test_evaluation_time_is_reported(default_engine: RegoEngine) -> None:
    """Measured, not asserted tightly: a regression to per-call compilation (~10x) fails it."""
    history = aggregate([{"tool": "other", "decision": "allow", "outcome": "completed", "ts": None}] * 50)
    for n, hist in (("0", None), ("50", history)):
        inp = make_input(history=hist)
        samples = []
        for _ in range(50):
            t0 = time.perf_counter()
            default_engine.decide(inp)
            samples.append(time.perf_counter() - t0)
        p50 = statistics.median(samples) * 1e6
        print(f"rego decide p50 with history={n}: {p50:.0f} us")
        assert p50 < 50_000


# ---------------------------------------------------------------- documents


def test_decision_parser_is_strict() -> None:
    good = {"allow": True, "require_approval": True, "reasons": ["x"], "scopes": ["s"], "ttl_seconds": 60.0,
            "obligations": {"k": 1}}
    d = decision_from_document(good, engine="e", policy_revision="r", input_digest="sha256:0", decision_id="id")
    assert d.ttl_seconds == 60 and d.decision_id == "id" and d.to_dict()["obligations"] == {"k": 1}
    # a deny cannot carry approval or scopes
    d = decision_from_document({**good, "allow": False}, engine="e", policy_revision="r", input_digest="x")
    assert (d.require_approval, d.scopes, d.ttl_seconds) == (False, (), 0)
    for bad, field in [
        ([], "object"), ({**good, "reasons": "x"}, "reasons"), ({**good, "ttl_seconds": -1}, "ttl_seconds"),
        ({**good, "ttl_seconds": True}, "ttl_seconds"), ({**good, "obligations": []}, "obligations"),
        ({k: v for k, v in good.items() if k != "scopes"}, "scopes"), ({**good, "extra": 1}, "extra"),
    ]:
        with pytest.raises(MalformedDecisionError, match=field):
            decision_from_document(bad, engine="e", policy_revision="r", input_digest="x")
    with pytest.raises(MalformedDecisionError):
        PolicyDecision(False, True, (), (), 0, {}, "e", "r", "x")


def test_build_policy_input_shape_and_errors() -> None:
    """Version 1 (still selectable); version 2 is covered in test_policy_v2."""
    spec = ToolSpec("crm_get", sensitivity="confidential", data_classes={"pii"}, target_arg="customer")
    doc = build_policy_input(
        workload_id="spiffe://e/a", thread_id="t", tool_name="crm_get", tool_spec=spec,
        args={"customer": "c-7"}, owner="o", intent="support", risk_tier="high",
        allowed_tools=["crm_get", "a"], history=[{"tool": "a", "decision": "allow"}],
        approvals=[{"approver": "bob"}], now="2025-01-01T00:00:00Z", version=1,
    )
    assert doc["version"] == 1
    assert validate_policy_input(doc) == doc
    assert set(doc) == {"version", "workload", "run", "tool", "args", "target", "history", "approvals", "now"}
    assert doc["target"] == "c-7" and doc["run"]["allowed_tools"] == ["a", "crm_get"]
    assert doc["tool"]["known"] and doc["history"][0] == {"tool": "a", "decision": "allow", "outcome": None, "ts": None}
    for kwargs, field in [
        ({"risk_tier": "extreme"}, "run.risk_tier"),
        ({"args": {"x": float("nan")}}, "args"),
        ({"history": [{"tool": "a", "decision": "maybe"}]}, r"history\[0\].decision"),
        ({"owner": 5}, "run.owner"),
        ({"allowed_tools": "crm_get"}, "run.allowed_tools"),
    ]:
        base = dict(workload_id="w", thread_id="t", tool_name="crm_get", tool_spec=spec, version=1)
        with pytest.raises(ConfigurationError, match=field):
            build_policy_input(**{**base, **kwargs})
    with pytest.raises(ConfigurationError, match="tool.known"):
        validate_policy_input({**doc, "tool": {**doc["tool"], "known": "yes"}})


def test_tool_registry_declare_and_validate() -> None:
    registry = ToolRegistry()

    @registry.declare(sensitivity="confidential", data_classes={"pii"}, external=True, scopes=["mail:send"])
    @tool
    def send_email(to: str) -> str:
        """Send an email."""
        return to

    @registry.declare(name="wipe", irreversible=True)
    def wipe_disk() -> None: ...

    assert send_email.invoke({"to": "x"}) == "x"  # the tool is unchanged
    spec = registry.get("send_email")
    assert spec == ToolSpec("send_email", "confidential", frozenset({"pii"}), external=True, scopes=("mail:send",))
    assert registry.get("wipe").irreversible and registry.get("nope") is None
    assert set(registry.to_policy_dict()) == {"send_email", "wipe"}
    registry.declare(send_email, sensitivity="confidential", data_classes={"pii"}, external=True,
                     scopes=["mail:send"])  # identical re-declaration is fine
    with pytest.raises(ConfigurationError, match="already declared"):
        registry.declare(send_email, sensitivity="public")
    for kwargs, field in [
        ({"sensitivity": "secret"}, "sensitivity"), ({"irreversible": 1}, "irreversible"),
        ({"data_classes": "pii"}, "data_classes"), ({"scopes": "a"}, "scopes"),
        ({"target_arg": "not an arg"}, "target_arg"),
    ]:
        with pytest.raises(ConfigurationError, match=field):
            ToolSpec("t", **kwargs)
    with pytest.raises(ConfigurationError, match="unknown field"):
        registry.declare(name="x", sensitivty="public")
