"""Cedar engine: mapping, reasons from annotations, load errors, failing closed."""

from __future__ import annotations

import time
from typing import Any

import pytest

from langgraph_warden.guards.cedar import CedarEngine
from langgraph_warden.guards.policy import (
    DEFAULT_CEDAR_POLICY,
    PolicyEngine,
    PolicyLoadError,
    build_policy_input,
)
from langgraph_warden.guards.tools import ToolSpec
from tests.support.history_v2 import aggregate


def make_input(spec: ToolSpec | None = None, **run: Any) -> dict[str, Any]:
    spec = spec or ToolSpec("lookup", sensitivity="public", scopes=("kb:read",))
    kwargs: dict[str, Any] = {"owner": "alice", "risk_tier": "low"}
    kwargs.update(run)
    return build_policy_input(workload_id="spiffe://example.org/agent", thread_id="t-1", tool_name=spec.name,
                              tool_spec=spec, args={"x": 1.5, "y": None}, **kwargs)


@pytest.fixture(scope="module")
def engine() -> CedarEngine:
    return CedarEngine(DEFAULT_CEDAR_POLICY)


def test_default_policy_decisions(engine: CedarEngine) -> None:
    assert isinstance(engine, PolicyEngine)
    d = engine.decide(make_input())
    assert (d.allow, d.require_approval, d.scopes, d.ttl_seconds, d.engine) == (True, False, ("kb:read",), 300, "cedar")
    d = engine.decide(make_input(ToolSpec("pay", irreversible=True, external=True)))
    assert d.allow and d.require_approval and d.reasons == ("external_sharing", "irreversible")


def test_reasons_come_from_id_annotations_or_policy_ids() -> None:
    source = (
        '@id("base") permit (principal, action, resource);\n'
        '@id("no_pay") forbid (principal, action == Action::"call", resource) when { resource.name == "pay" };\n'
        'forbid (principal, action == Action::"call_without_approval", resource) when { resource.external };\n'
    )
    engine = CedarEngine.from_source(source, limits={"per_tool": 3})
    assert engine.decide(make_input(ToolSpec("pay"))).reasons == ("no_pay",)
    d = engine.decide(make_input(ToolSpec("share", external=True)))
    assert d.require_approval and d.reasons == ("policy2",)  # no @id: Cedar's positional id
    assert d.obligations["rate_limit"] == {"per_tool": 3, "per_run": 100}


def test_no_permit_denies_and_missing_approval_permit_requires_approval() -> None:
    only_call = CedarEngine.from_source('permit (principal, action == Action::"call", resource);')
    d = only_call.decide(make_input())
    assert d.allow and d.require_approval and d.reasons == ("approval_required",)
    nothing = CedarEngine.from_source('permit (principal, action == Action::"other", resource);')
    d = nothing.decide(make_input())
    assert not d.allow and d.reasons == ("no_permit",)


def test_context_and_target_reach_the_policy() -> None:
    source = (
        'permit (principal, action, resource);\n'
        '@id("prod_target") forbid (principal, action, resource) when { context has target && context.target like "prod-*" };\n'
        '@id("wrong_workload") forbid (principal, action, resource) unless { context.workload == "spiffe://example.org/agent" };\n'
    )
    engine = CedarEngine.from_source(source)
    spec = ToolSpec("db", target_arg="db")
    mk = lambda target: build_policy_input(  # noqa: E731
        workload_id="spiffe://example.org/agent", thread_id="t", tool_name="db", tool_spec=spec,
        args={"db": target}, owner="a")
    assert engine.decide(mk("prod-eu")).reasons == ("prod_target",)
    assert engine.decide(mk("dev-1")).allow


def test_evaluation_error_fails_closed() -> None:
    """Cedar skips a forbid whose condition errors; the engine must not let that allow."""
    source = (
        'permit (principal, action, resource);\n'
        '@id("typo") forbid (principal, action, resource) when { resource.irreversable };\n'
    )
    d = CedarEngine.from_source(source).decide(make_input())
    assert not d.allow and d.reasons == ("policy_error:CedarEvaluationError",)


def test_malformed_policy_reports_line_and_column(tmp_path) -> None:
    path = tmp_path / "bad.cedar"
    path.write_text(
        "permit (principal, action, resource);\n"
        "// a comment; with a semicolon\n"
        "forbid (principal, action, resource)\n"
        "  when { resource.external && };\n"
    )
    with pytest.raises(PolicyLoadError) as info:
        CedarEngine(path)
    err = info.value
    assert (err.file, err.line, err.column) == (str(path), 4, 31)
    assert f"{path}:4:31" in str(err) and "unexpected token" in str(err)
    with pytest.raises(PolicyLoadError, match="does not exist"):
        CedarEngine(tmp_path / "missing.cedar")
    with pytest.raises(PolicyLoadError, match="no policy"):
        CedarEngine.from_source("// nothing here\n")
    with pytest.raises(PolicyLoadError, match=r"limits\['per_tool'\]"):
        CedarEngine(DEFAULT_CEDAR_POLICY, limits={"per_tool": -1})


class NativePanic(BaseException):
    pass


def test_base_exception_from_binding_denies(engine: CedarEngine, monkeypatch) -> None:
    import cedarpy

    def boom(*_a: Any, **_k: Any) -> Any:
        raise NativePanic("pyo3 panic")

    monkeypatch.setattr(cedarpy, "is_authorized_batch", boom)
    d = engine.decide(make_input())
    assert not d.allow and d.reasons == ("policy_error:NativePanic",)


def test_malformed_input_denies(engine: CedarEngine) -> None:
    d = engine.decide({"version": 2, "run": {}})
    assert not d.allow and d.reasons == ("policy_error:KeyError",)


async def test_adecide(engine: CedarEngine) -> None:
    inp = make_input()
    assert await engine.adecide(inp) == engine.decide(inp)


def test_evaluation_time_is_reported(engine: CedarEngine) -> None:
    history = aggregate([{"tool": "other", "decision": "allow"}] * 50)
    inp = make_input(history=history)
    t0 = time.perf_counter()
    for _ in range(200):
        engine.decide(inp)
    per = (time.perf_counter() - t0) / 200 * 1e6
    print(f"cedar decide with history=50: {per:.0f} us")
    assert per < 50_000
