"""Policy input version 2: bounded history aggregates, version 1 still selectable, engines refuse the other.

Golden documents (tests/data/policy_inputs/*.json) are hand-written inputs with the decision
the shipped policies (v2_*) or this file's version-1 policies (v1_*) must give; each must also
match the JSON Schema ``warden policy schema`` prints, checked by a small validator below.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from langgraph_warden import canonical
from langgraph_warden.cli_policy import app
from langgraph_warden.errors import ConfigurationError
from langgraph_warden.guards.cedar import CedarEngine
from langgraph_warden.guards.opa import OpaServerEngine
from langgraph_warden.guards.policy import (
    DEFAULT_CEDAR_POLICY,
    DEFAULT_REGO_POLICY,
    POLICY_INPUT_VERSION,
    POLICY_INPUT_VERSIONS,
    PolicyEngine,
    build_policy_input,
    empty_counters_v2,
    empty_history_v2,
    validate_policy_input,
)
from langgraph_warden.guards.policy_schema import DRAFT, policy_input_schema
from langgraph_warden.guards.rego import RegoEngine
from langgraph_warden.guards.tools import ToolSpec
from tests.support.guard_probe import PolicyWrapper
from tests.support.history_v2 import aggregate, calls

GOLDEN_DIR = Path(__file__).parent / "data" / "policy_inputs"
GOLDEN = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(GOLDEN_DIR.glob("*.json"))}
V2_GOLDEN = sorted(k for k in GOLDEN if k.startswith("v2_"))
V1_GOLDEN = sorted(k for k in GOLDEN if k.startswith("v1_"))
MISMATCH = ("policy_input_version_mismatch", "expected_input_version_2")
runner = CliRunner()

#: A version-1 policy that needs the list: at most 3 calls per tool, counted over every entry.
V1_REGO = """package warden
import rego.v1

deny contains "wrong_input_version" if not input.version == 1

deny contains "too_many_calls" if count([h | some h in input.history; h.tool == input.tool.name; h.decision != "deny"]) >= 3

decision := {"allow": true, "require_approval": false, "reasons": [], "scopes": input.tool.scopes,
             "ttl_seconds": 60, "obligations": {}} if count(deny) == 0

decision := {"allow": false, "require_approval": false, "reasons": sort(deny), "scopes": [],
             "ttl_seconds": 0, "obligations": {}} if count(deny) > 0
"""
V1_CEDAR = """@id("baseline") permit (principal, action, resource);
@id("too_many_calls") forbid (principal, action, resource) when { context.calls_of_tool >= context.limits.per_tool };
"""


@pytest.fixture(scope="module")
def default_engines() -> tuple[RegoEngine, CedarEngine]:
    return RegoEngine(DEFAULT_REGO_POLICY), CedarEngine(DEFAULT_CEDAR_POLICY)


@pytest.fixture(scope="module")
def v1_engines() -> tuple[RegoEngine, CedarEngine]:
    return (RegoEngine.from_source(V1_REGO, filename="v1.rego", input_version=1),
            CedarEngine.from_source(V1_CEDAR, limits={"per_tool": 3}, ttl_seconds={"low": 60}, input_version=1))


def make(spec: ToolSpec | None = None, **kwargs: Any) -> dict[str, Any]:
    spec = spec or ToolSpec("lookup", sensitivity="public", scopes=("kb:read",))
    base: dict[str, Any] = {"owner": "alice", "risk_tier": "low", "now": "2025-01-01T00:00:00Z"}
    return build_policy_input(workload_id="spiffe://example.org/agent", thread_id="t-1", tool_name=spec.name,
                              tool_spec=spec, args={"q": "x"}, **{**base, **kwargs})


def outcome(decision: Any) -> dict[str, Any]:
    return {k: decision.to_dict()[k] for k in ("allow", "require_approval", "reasons", "scopes", "ttl_seconds")}


# ------------------------------------------------------------------ a small JSON Schema validator

def schema_errors(schema: dict[str, Any], value: Any, root: dict[str, Any] | None = None, at: str = "$") -> list[str]:
    """Errors of ``value`` against the draft 2020-12 keywords the policy input schemas use.

    Each keyword applies only to values of its type, as JSON Schema specifies (``required`` on
    a null is no error). Integers are ints, not bools.
    """
    root = root or schema
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return schema_errors(root["$defs"][name], value, root, at)
    types = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}

    def is_type(t: str) -> bool:
        return type(value) is int if t == "integer" else isinstance(value, types[t])

    errors: list[str] = []
    if "type" in schema:
        allowed = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(is_type(t) for t in allowed):
            return [f"{at}: not {allowed}"]
    if "const" in schema and not (value == schema["const"] and type(value) is type(schema["const"])):
        errors.append(f"{at}: not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{at}: not in {schema['enum']}")
    if type(value) is int and "minimum" in schema and value < schema["minimum"]:
        errors.append(f"{at}: below {schema['minimum']}")
    if isinstance(value, str) and "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(f"{at}: shorter than {schema['minLength']}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(schema["items"], item, root, f"{at}[{i}]")
    if isinstance(value, dict):
        errors += [f"{at}.{k}: missing" for k in schema.get("required", ()) if k not in value]
        props = schema.get("properties", {})
        for k, item in value.items():
            if "propertyNames" in schema:
                errors += schema_errors(schema["propertyNames"], k, root, f"{at}<key {k!r}>")
            if k in props:
                errors += schema_errors(props[k], item, root, f"{at}.{k}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{at}.{k}: not allowed")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += schema_errors(schema["additionalProperties"], item, root, f"{at}.{k}")
    return errors


def validator_accepts(doc: Any) -> bool:
    try:
        validate_policy_input(doc)
    except ConfigurationError:
        return False
    return True


# ------------------------------------------------------------------ golden documents

def test_golden_set_is_there() -> None:
    assert len(V2_GOLDEN) >= 5 and len(V1_GOLDEN) >= 2


@pytest.mark.parametrize("name", V2_GOLDEN)
def test_golden_v2_decisions(default_engines, name: str) -> None:
    case = GOLDEN[name]
    for engine in default_engines:
        assert outcome(engine.decide(case["input"])) == case["expected"], engine.name


@pytest.mark.parametrize("name", V1_GOLDEN)
def test_golden_v1_decisions_with_a_version_1_policy(v1_engines, default_engines, name: str) -> None:
    """Version 1 stays selectable: engines built with input_version=1 read the whole list."""
    case = GOLDEN[name]
    for engine in v1_engines:
        assert engine.input_version == 1
        assert outcome(engine.decide(case["input"])) == case["expected"], engine.name
    for engine in default_engines:  # ...and the version-2 engines refuse it
        d = engine.decide(case["input"])
        assert not d.allow and d.reasons == MISMATCH, engine.name


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_documents_validate_and_match_the_schema(name: str) -> None:
    doc = GOLDEN[name]["input"]
    assert validate_policy_input(doc) == doc
    assert schema_errors(policy_input_schema(doc["version"]), doc) == []
    other = policy_input_schema(3 - doc["version"])
    assert schema_errors(other, doc)  # and not the other version's


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation: set (or with value ``...`` delete) the key at dotted ``path``."""
    def apply(doc: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if value is ...:
            del node[last]
        else:
            node[int(last) if isinstance(node, list) else last] = value
    return apply


MUTATIONS_V2: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("version_3", _set("version", 3)),
    ("version_true", _set("version", True)),
    ("window_negative", _set("history.window", -1)),
    ("window_string", _set("history.window", "20")),
    ("run_counter_negative", _set("history.run.allowed", -1)),
    ("run_counter_bool", _set("history.run.denied", False)),
    ("run_counter_missing", _set("history.run.replayed", ...)),
    ("run_counter_typo", _set("history.run.alowed", 1)),
    ("run_ts_number", _set("history.run.first_ts", 5)),
    ("run_ts_missing", _set("history.run.last_ts", ...)),
    ("tool_counter_float", _set("history.tools.pay.allowed", 1.5)),
    ("tool_empty_name", _set("history.tools.", dict(empty_counters_v2()))),
    ("tool_not_object", _set("history.tools.pay", 3)),
    ("class_counter_extra", _set("history.data_classes.finance.completed", 1)),
    ("class_counter_missing", _set("history.data_classes.finance.denied", ...)),
    ("recent_bad_decision", _set("history.recent.0.decision", "maybe")),
    ("recent_empty_tool", _set("history.recent.0.tool", "")),
    ("recent_outcome_number", _set("history.recent.1.outcome", 3)),
    ("recent_not_list", _set("history.recent", {})),
    ("history_extra_key", _set("history.entries", [])),
    ("history_missing_key", _set("history.data_classes", ...)),
    ("history_as_list", _set("history", [])),
    ("approval_not_object", _set("approvals.0", "approve")),
    ("tool_target_arg_number", _set("tool.target_arg", 1)),
    ("run_risk_unknown", _set("run.risk_tier", "extreme")),
    ("now_missing", _set("now", ...)),
    # accepted by both: extra keys in a recent entry, a missing target, a null profile
    ("ok_recent_extra_key", _set("history.recent.0.note", "ignored")),
    ("ok_no_target", _set("target", ...)),
    ("ok_null_profile", _set("run.profile", None)),
    ("ok_no_data_classes", _set("history.data_classes", {})),
]


MUTATIONS_V1: list[tuple[str, Callable[[dict[str, Any]], None]]] = [
    ("version_true", _set("version", True)),
    ("version_float", _set("version", 1.5)),
    ("history_as_object", _set("history", {})),
    ("entry_bad_decision", _set("history.0.decision", "maybe")),
    ("entry_missing_tool", _set("history.1.tool", ...)),
    ("approval_not_object", _set("approvals.0", 1)),
    ("tool_known_string", _set("tool.known", "yes")),
    ("ok_entry_without_outcome", _set("history.0.outcome", ...)),
    ("ok_extra_top_level_key", _set("note", "kept")),
]


@pytest.mark.parametrize(
    ("version", "case", "mutate"),
    [(2, *m) for m in MUTATIONS_V2] + [(1, *m) for m in MUTATIONS_V1],
    ids=[f"v2-{m[0]}" for m in MUTATIONS_V2] + [f"v1-{m[0]}" for m in MUTATIONS_V1],
)
def test_validator_and_schema_agree(version: int, case: str, mutate) -> None:
    doc = copy.deepcopy(GOLDEN["v2_irreversible_payment" if version == 2 else "v1_repeat_limit"]["input"])
    mutate(doc)
    accepted = validator_accepts(doc)
    assert accepted is case.startswith("ok_")
    assert (schema_errors(policy_input_schema(version), doc) == []) is accepted


def test_window_bounds_are_checked_by_the_validator() -> None:
    """The one rule the schema cannot state: recent and approvals hold at most window entries."""
    doc = copy.deepcopy(GOLDEN["v2_irreversible_payment"]["input"])
    doc["history"]["window"] = 1
    assert schema_errors(policy_input_schema(2), doc) == []
    with pytest.raises(ConfigurationError, match=r"history\.recent: 2 entries, more than history\.window \(1\)"):
        validate_policy_input(doc)
    doc["history"]["recent"] = doc["history"]["recent"][-1:]
    with pytest.raises(ConfigurationError, match=r"policy input approvals: 2 entries, more than history\.window"):
        validate_policy_input(doc)
    doc["approvals"] = doc["approvals"][-1:]
    assert validate_policy_input(doc) == doc


def test_schemas_are_draft_2020_12_and_cover_both_versions() -> None:
    for version in POLICY_INPUT_VERSIONS:
        schema = policy_input_schema(version)
        assert schema["$schema"] == DRAFT == "https://json-schema.org/draft/2020-12/schema"
        assert schema["properties"]["version"] == {"const": version}
        assert json.loads(json.dumps(schema)) == schema  # plain JSON
    assert policy_input_schema(2)["properties"]["history"]["type"] == "object"
    assert policy_input_schema(1)["properties"]["history"]["type"] == "array"
    policy_input_schema(2)["$defs"]["counters"]["required"].clear()  # a copy each time
    assert "allowed" in policy_input_schema(2)["$defs"]["counters"]["required"]
    with pytest.raises(ConfigurationError, match="version must be one of 1, 2"):
        policy_input_schema(3)


# ------------------------------------------------------------------ building version 2

def test_build_v2_is_the_default_and_copies_the_history() -> None:
    assert POLICY_INPUT_VERSION == 2
    doc = make()
    assert doc["version"] == 2 and doc["approvals"] == []
    assert doc["history"] == {**empty_history_v2(), "tool": empty_counters_v2()}
    assert empty_history_v2(5)["window"] == 5 and empty_history_v2()["window"] == 20
    history = aggregate(calls(3) + calls(2, tool="crm", decision="deny"), window=4, data_classes={"crm": ["pii"]})
    doc = make(history=history)
    assert validate_policy_input(doc) == doc
    assert doc["history"] == {**history, "tool": history["tools"]["lookup"]} and doc["history"] is not history
    assert doc["history"]["tools"]["lookup"] is not history["tools"]["lookup"]
    assert doc["history"]["tool"] is not doc["history"]["tools"]["lookup"]
    assert doc["history"]["data_classes"] == {"pii": {"allowed": 0, "require_approval": 0, "denied": 2}}
    history["tools"]["lookup"]["allowed"] = 99  # the caller keeps folding: the document does not change
    assert doc["history"]["tools"]["lookup"]["allowed"] == 3


def test_build_v2_keeps_the_last_window_approvals() -> None:
    approvals = [{"request_id": f"r{i}"} for i in range(50)]
    doc = make(history=empty_history_v2(3), approvals=approvals)
    assert doc["approvals"] == approvals[-3:]
    assert make(history=empty_history_v2(0), approvals=approvals)["approvals"] == []
    assert make(history=empty_history_v2(), approvals=approvals[:2])["approvals"] == approvals[:2]
    assert len(make(version=1, approvals=approvals)["approvals"]) == 50  # version 1: every approval


def test_build_v2_accepts_datetimes_for_timestamps() -> None:
    from datetime import datetime, timezone

    history = empty_history_v2()
    history["run"]["first_ts"] = datetime(2026, 11, 29, 6, 40, 0, 123456, tzinfo=timezone.utc)
    assert make(history=history)["history"]["run"]["first_ts"] == "2026-11-29T06:40:00.123456Z"


def _bad(path: str, value: Any) -> dict[str, Any]:
    history = aggregate(calls(2), data_classes={"lookup": ["pii"]})
    _set(path, value)({"history": history})
    return history


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"history": _bad("history.window", -1)}, r"history\.window: expected an int >= 0"),
        ({"history": _bad("history.window", True)}, r"history\.window"),
        ({"history": _bad("history.run.allowed", -2)}, r"history\.run\.allowed: expected an int >= 0"),
        ({"history": _bad("history.run.completed", "1")}, r"history\.run\.completed"),
        ({"history": _bad("history.run.rejected", ...)}, r"history\.run\.rejected: missing"),
        ({"history": _bad("history.run.approvals", 0)}, r"history\.run: unknown key\(s\) 'approvals'"),
        ({"history": _bad("history.run.last_ts", 1)}, r"history\.run\.last_ts"),
        ({"history": _bad("history.tools.lookup.failed", None)}, r"history\.tools\['lookup'\]\.failed"),
        ({"history": _bad("history.tools.", empty_counters_v2())}, r"history\.tools: every key must be a non-empty"),
        ({"history": _bad("history.data_classes.pii.allowed", 1.0)}, r"history\.data_classes\['pii'\]\.allowed"),
        ({"history": _bad("history.data_classes.pii.failed", 0)}, r"history\.data_classes\['pii'\]: unknown key"),
        ({"history": _bad("history.recent", calls(21))}, r"history\.recent: 21 entries, more than history\.window"),
        ({"history": _bad("history.recent.1.decision", "maybe")}, r"history\.recent\[1\]\.decision"),
        ({"history": _bad("history.recent", "abc")}, r"history\.recent: expected a list"),
        ({"history": _bad("history.extra", 1)}, r"history: unknown key\(s\) 'extra'"),
        ({"history": _bad("history.tools", ...)}, r"history\.tools: missing"),
        ({"history": calls(2)}, r"history: version 2 expects an object"),
        ({"history": empty_history_v2(), "version": 1}, r"history: version 1 expects a list"),
        ({"version": 3}, r"version: expected one of 1, 2, got 3"),
        ({"approvals": ["x"]}, r"approvals\[0\]: expected an object"),
    ],
)
def test_build_v2_errors_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError, match=field):
        make(**kwargs)


def test_v2_document_does_not_grow_with_the_thread() -> None:
    """Same tools, 50 or 5,000 earlier calls (and approvals): the same size, give or take counter digits."""
    tools = [f"tool_{i}" for i in range(6)]

    def size(n: int, version: int) -> int:
        entries = [{"tool": tools[i % 6], "decision": "allow", "outcome": "completed",
                    "ts": "2026-11-29T06:40:00.123456Z"} for i in range(n)]
        approvals = [{"request_id": f"r-{i}", "approver": "bob"} for i in range(n)]
        history = aggregate(entries) if version == 2 else entries
        return len(canonical.encode(make(history=history, approvals=approvals, version=version)))

    assert size(5000, 2) - size(50, 2) < 100
    assert size(5000, 1) > 50 * size(50, 1) / 2  # version 1 grows with every call


# ------------------------------------------------------------------ engines: versions and refusal

def test_engines_take_and_report_an_input_version() -> None:
    assert RegoEngine(DEFAULT_REGO_POLICY).input_version == 2
    assert CedarEngine(DEFAULT_CEDAR_POLICY, input_version=1).input_version == 1
    opa = OpaServerEngine("http://127.0.0.1:9", input_version=1)
    try:
        assert opa.input_version == 1 and isinstance(opa, PolicyEngine)
    finally:
        opa.close()
    for bad in (3, 0, "2", True, 2.0, None):
        with pytest.raises(ConfigurationError, match="RegoEngine input_version: expected one of 1, 2"):
            RegoEngine.from_source(V1_REGO, input_version=bad)
        with pytest.raises(ConfigurationError, match="CedarEngine input_version"):
            CedarEngine(DEFAULT_CEDAR_POLICY, input_version=bad)
        with pytest.raises(ConfigurationError, match="OpaServerEngine input_version"):
            OpaServerEngine("http://127.0.0.1:9", input_version=bad)


def test_wrappers_forward_the_input_version(v1_engines) -> None:
    assert PolicyWrapper(v1_engines[0]).input_version == 1
    assert isinstance(PolicyWrapper(v1_engines[0]), PolicyEngine)


@pytest.mark.parametrize("which", ["rego", "cedar"])
async def test_engines_refuse_another_version_without_evaluating(default_engines, v1_engines, which, monkeypatch) -> None:
    """A v1 input to a v2 engine (or the reverse) is denied before the policy runs: no half-read rule."""
    v2_engine, v1_engine = (default_engines[0], v1_engines[0]) if which == "rego" else (default_engines[1], v1_engines[1])
    v1_doc, v2_doc = make(version=1), make()
    for engine, doc, expected in ((v2_engine, v1_doc, 2), (v1_engine, v2_doc, 1)):
        monkeypatch.setattr(engine, "evaluate", lambda _doc: pytest.fail("evaluated an input of another version"))
        for d in (engine.decide(doc), await engine.adecide(doc)):
            assert (d.allow, d.require_approval, d.scopes) == (False, False, ())
            assert d.reasons == ("policy_input_version_mismatch", f"expected_input_version_{expected}")
            assert d.input_digest == canonical.digest(doc) and d.engine == engine.name
    for junk in ({"version": "2"}, {"version": True}, {}, None):
        assert v1_engine.decide(junk).reasons[0] == "policy_input_version_mismatch"


def test_history_tool_is_the_called_tools_counters() -> None:
    """history.tool: the called tool's entry of history.tools, zero when the run has not called it;
    derived when a caller leaves it out, refused when it disagrees (engines would read different counts)."""
    history = aggregate(calls(3) + calls(2, tool="crm"))
    assert make(history=history)["history"]["tool"] == history["tools"]["lookup"]
    crm = make(ToolSpec("crm", sensitivity="public"), history=history)
    assert crm["history"]["tool"] == history["tools"]["crm"] and crm["history"]["tool"]["allowed"] == 2
    assert make(ToolSpec("new_tool"), history=history)["history"]["tool"] == empty_counters_v2()
    assert make(history={**history, "tool": dict(history["tools"]["lookup"])})["history"]["tool"]["allowed"] == 3
    with pytest.raises(ConfigurationError, match=r"history.tool: differs from history.tools\['lookup'\]"):
        make(history={**history, "tool": {**history["tools"]["lookup"], "allowed": 0}})
    with pytest.raises(ConfigurationError, match=r"history.tool.rejected: missing"):
        make(history={**history, "tool": {k: v for k, v in history["tools"]["lookup"].items() if k != "rejected"}})
    # A hand-written document without it (warden policy eval): filled in, the rest unchanged.
    doc = make(history=history)
    written = copy.deepcopy(doc)
    del written["history"]["tool"]
    assert validate_policy_input(written) == doc and "tool" not in written["history"]
    stale = copy.deepcopy(doc)
    stale["history"]["tool"]["allowed"] = 0  # would lift the rate limit for a policy reading history.tool
    with pytest.raises(ConfigurationError, match="history.tool: differs"):
        validate_policy_input(stale)


async def test_opa_engine_refuses_another_version_before_the_network() -> None:
    engine = OpaServerEngine("http://127.0.0.1:9", failure_threshold=1)  # nothing listens on port 9
    try:
        for d in (engine.decide(make(version=1)), await engine.adecide(make(version=1))):
            assert d.reasons == MISMATCH
        assert engine.breaker.state == "closed"  # a refusal is not a server failure
        assert engine.decide(make()).reasons[:1] == ("policy_unavailable",)  # a v2 input does go out
    finally:
        engine.close()


def test_default_rego_refuses_other_versions_itself(default_engines) -> None:
    """As an OPA server evaluates it (no engine-side check): the policy denies what it cannot read."""
    rego = default_engines[0]
    for doc in (make(version=1), {**make(), "version": 3}):
        result = rego.evaluate(doc)
        assert result["allow"] is False and "policy_input_version_mismatch" in result["reasons"]


@pytest.mark.parametrize("drop", ["run", "tool"])
def test_default_rego_denies_unreadable_counts(default_engines, drop: str) -> None:
    """A v2 document whose counts are missing must not lift the rate limits."""
    doc = make(history=aggregate(calls(3)))
    del doc["history"][drop]
    result = default_engines[0].evaluate(doc)
    assert result["allow"] is False and "malformed_history" in result["reasons"]


def test_cedar_v2_context_carries_the_counters() -> None:
    source = """@id("base") permit (principal, action, resource);
@id("flaky_tool") forbid (principal, action, resource) when { context.tool_counts.failed >= 3 };
@id("many_rejections") forbid (principal, action, resource) when { context.run_counts.rejected >= 2 };
@id("counted") forbid (principal, action, resource) when { context.calls_of_tool == 7 && context.calls_in_run == 9 };
"""
    engine = CedarEngine.from_source(source)
    history = empty_history_v2()
    history["tools"]["lookup"] = {**empty_counters_v2(), "allowed": 4, "require_approval": 3, "failed": 3}
    history["tools"]["other"] = {**empty_counters_v2(), "allowed": 2}
    history["run"].update(allowed=6, require_approval=3, failed=3, rejected=2)
    assert engine.decide(make(history=history)).reasons == ("counted", "flaky_tool", "many_rejections")
    assert engine.decide(make(ToolSpec("fresh"), history=history)).reasons == ("many_rejections",)
    assert engine.decide(make()).allow  # no entry for the tool: zero counts


def test_v2_counts_what_v1_counted(default_engines) -> None:
    """One thread, stated once as a list: the v2 default policies decide its aggregates as the
    default Cedar policy over the v1 list does (calls not denied, per tool and per run, at the boundary)."""
    v1_cedar = CedarEngine(DEFAULT_CEDAR_POLICY, input_version=1)
    under_tool = calls(12) + calls(7, decision="require_approval") + calls(30, decision="deny")
    under_run = [e for t in "abcde" for e in calls(10, tool=t) + calls(9, tool=t, decision="require_approval")] \
        + calls(4, tool="f") + calls(7, tool="f", decision="deny")
    threads = [
        (under_tool, True), (under_tool + calls(1, decision="require_approval"), False),
        (under_run, True), (under_run + calls(1, tool="g", outcome="failed"), False),
    ]
    for entries, allowed in threads:
        v1 = v1_cedar.decide(make(history=entries, version=1))
        assert (v1.allow, v1.reasons) == ((True, ()) if allowed else (False, ("rate_limited",)))
        for engine in default_engines:
            d = engine.decide(make(history=aggregate(entries)))
            assert (d.allow, d.reasons) == (v1.allow, v1.reasons), (len(entries), engine.name)


# ------------------------------------------------------------------ CLI

@pytest.mark.parametrize("name", V2_GOLDEN)
@pytest.mark.parametrize("engine", ["rego", "cedar"])
def test_cli_eval_version_2(tmp_path, name: str, engine: str) -> None:
    case = GOLDEN[name]
    path = tmp_path / "in.json"
    path.write_text(json.dumps(case["input"]))
    policy = DEFAULT_REGO_POLICY if engine == "rego" else DEFAULT_CEDAR_POLICY
    result = runner.invoke(app, ["eval", "-p", str(policy), "-i", str(path), "-e", engine])
    expected = case["expected"]
    code = 1 if not expected["allow"] else (2 if expected["require_approval"] else 0)
    assert result.exit_code == code, result.output
    assert {k: v for k, v in json.loads(result.stdout).items() if k in expected} == expected


@pytest.mark.parametrize("name", V1_GOLDEN)
def test_cli_eval_version_1(tmp_path, name: str) -> None:
    case = GOLDEN[name]
    inp, rego, cedar = tmp_path / "in.json", tmp_path / "v1.rego", tmp_path / "v1.cedar"
    inp.write_text(json.dumps(case["input"]))
    rego.write_text(V1_REGO)
    result = runner.invoke(app, ["eval", "-p", str(rego), "-i", str(inp)])
    assert result.exit_code == (0 if case["expected"]["allow"] else 1), result.output
    assert json.loads(result.stdout)["reasons"] == case["expected"]["reasons"]
    # The shipped default reads version 2: evaluating a v1 document with it is an error (exit 3), not a verdict.
    result = runner.invoke(app, ["eval", "-p", str(DEFAULT_REGO_POLICY), "-i", str(inp)])
    assert result.exit_code == 3 and "policy_input_version_mismatch" in json.loads(result.stdout)["reasons"]


def test_cli_schema(tmp_path) -> None:
    for args, version in ((["schema"], POLICY_INPUT_VERSION), (["schema", "--version", "1"], 1), (["schema", "-v", "2"], 2)):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == policy_input_schema(version)
    result = runner.invoke(app, ["schema", "--version", "3"])
    assert result.exit_code == 4 and "Invalid value for '--version'" in result.stderr  # a usage error, exit 4
