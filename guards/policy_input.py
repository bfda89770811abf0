"""The policy input document: one versioned document built (and checked) for every engine.

Why one versioned input document: the same facts must reach every engine (embedded
Rego, an OPA server, Cedar), be hashed into the ``policy.decided`` event and be
replayable by ``warden policy eval``. Policy authors write against one of two
versions (``warden policy schema --version N`` prints each as a JSON Schema); an
engine is built for one (``input_version``) and refuses the other. Both share:

.. code-block:: text

    {
      "version": 1 | 2,
      "workload": {"id": "spiffe://example.org/agent"},
      "run": {"thread_id": str, "owner": str | null, "intent": str | null,
              "purpose": str | null, "risk_tier": "low" | "medium" | "high",
              "allowed_tools": [str] | null,          # null = not restricted
              "allowed_data_classes": [str] | null,   # null = not restricted
              "profile": {"require_approval_for": ["escalates" | "irreversible" |
                                                   "external" | "sensitive_data"], ...} | null},
      "tool": {"name": str, "known": bool, "sensitivity": str, "data_classes": [str],
               "irreversible": bool, "external": bool, "escalates": bool,
               "idempotent": bool, "scopes": [str], "target_arg": str | null},
      "args": {...},            # the call's arguments, JSON
      "target": any,            # args[tool.target_arg], or what the caller names
      "history": ...,           # per version, below
      "approvals": [{...}, ...],
      "now": "2025-01-01T00:00:00.000000Z"
    }

**Version 2** (the default, and what the shipped policies read): the step history is
aggregates the guard maintains incrementally, so a call costs the same however long
the thread is — the document is bounded by the number of distinct tools and data
classes the run used and by the window ``K``:

.. code-block:: text

    "history": {
      "window": K,                          # int >= 0 (default 20): the size of "recent"
      "run":   {<counters>, "first_ts": str | null, "last_ts": str | null},
      "tools": {"<tool>": {<counters>, "first_ts": str | null, "last_ts": str | null}},
      "tool":  {<counters>, "first_ts": str | null, "last_ts": str | null},   # this call's tool
      "data_classes": {"<class>": {"allowed": int, "require_approval": int, "denied": int}},
      "recent": [{"tool": str, "decision": "allow" | "deny" | "require_approval",
                  "outcome": str | null, "ts": str | null}, ...]     # at most K, oldest first
    },
    "approvals": [{...}, ...]     # the last K approvals of this run, oldest first

``<counters>`` are ints >= 0 counting *events* of the run / tool: ``allowed``,
``require_approval``, ``denied`` (decisions made), ``completed``, ``failed``,
``aborted``, ``replayed`` (outcomes recorded), ``approved`` (granted or edited) and
``rejected``. Data classes count decisions only. Calls that were not denied (what a
rate limit counts) are ``allowed + require_approval``.

``history.tool`` is ``history.tools[tool.name]`` (zero counters, null times, when the run
has not called the tool yet), always present in a document the guard builds. Why a copy: a
rule that reads the called tool's counters through it names a fixed path, so an embedded
engine is handed that one entry (``rego_projection``) instead of every tool's — the
decision then costs the same whether the run used 3 tools or 300. Given by a caller, it
must agree with ``history.tools``; left out, it is derived from it.

**Version 1** (selectable with ``input_version=1`` for a policy that truly needs every
entry): ``history`` is every earlier call of the thread and ``approvals`` every prior
approval. Its cost grows with the thread — building, hashing and converting the
document, and any rule that iterates it (the v1 default policy took 0.37 ms with no
history and 44 ms at 1,000 prior calls):

.. code-block:: text

    "history": [{"tool": str, "decision": "allow" | "deny" | "require_approval",
                 "outcome": str | null, "ts": str | null}, ...],   # earlier calls, oldest first
    "approvals": [{...}, ...],  # every prior approval of this run, JSON objects

The decision document an engine answers with, and fail-closed handling, are in
:mod:`langgraph_warden.guards.policy`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from langgraph_warden import canonical
from langgraph_warden.errors import ConfigurationError

from .tools import ToolSpec, unknown_tool_dict

__all__ = [
    "POLICY_INPUT_VERSION",
    "POLICY_INPUT_VERSIONS",
    "DEFAULT_HISTORY_WINDOW",
    "HISTORY_COUNTERS",
    "DATA_CLASS_COUNTERS",
    "RISK_TIERS",
    "HISTORY_DECISIONS",
    "APPROVAL_TRIGGERS",
    "approval_triggers",
    "default_approval_triggers",
    "empty_history_v2",
    "empty_counters_v2",
    "build_policy_input",
]

#: Versions of the input document an engine can be built for (see the module docstring).
POLICY_INPUT_VERSIONS: tuple[int, ...] = (1, 2)
#: The default: bounded aggregates instead of the whole step history.
POLICY_INPUT_VERSION = 2
#: Version 2: how many recent calls and approvals the document carries by default.
DEFAULT_HISTORY_WINDOW = 20
#: Version 2: what is counted per tool and for the run (events, not calls).
HISTORY_COUNTERS: tuple[str, ...] = (
    "allowed", "require_approval", "denied", "completed", "failed", "aborted", "replayed", "approved", "rejected",
)
#: Version 2: what is counted per data class (decisions only).
DATA_CLASS_COUNTERS: tuple[str, ...] = ("allowed", "require_approval", "denied")
RISK_TIERS: tuple[str, ...] = ("low", "medium", "high")
HISTORY_DECISIONS: tuple[str, ...] = ("allow", "deny", "require_approval")
#: What can make a call need approval (the run charter's tier profile picks from these).
APPROVAL_TRIGGERS: tuple[str, ...] = ("escalates", "irreversible", "external", "sensitive_data")


def _utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _iso(value: Any, field_name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ConfigurationError(f"policy input {field_name}: naive datetime; pass a timezone-aware one")
        return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    raise ConfigurationError(f"policy input {field_name}: expected an ISO-8601 string or datetime, got {value!r}")


def _opt_str(value: Any, field_name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(f"policy input {field_name}: expected a string or None, got {value!r}")
    return value


def _opt_str_list(value: Iterable[str] | None, field_name: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ConfigurationError(f"policy input {field_name}: expected a list of strings or None, got {value!r}")
    items = list(value)
    if not all(isinstance(v, str) for v in items):
        raise ConfigurationError(f"policy input {field_name}: every entry must be a string, got {items!r}")
    return sorted(set(items))


class _NotPlain(Exception):
    pass


def _plain_copy(value: Any) -> Any:
    """A copy of ``value`` when it is already plain JSON, i.e. exactly what the canonical round trip
    returns: ASCII strings, ints, bools, None, finite floats, lists/tuples (as lists) and dicts
    whose keys are ASCII strings not starting with ``$``. Raises ``_NotPlain`` otherwise."""
    t = type(value)
    if t is str:
        if value.isascii():
            return value
        raise _NotPlain
    if value is None or t is int or t is bool:
        return value
    if t is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str or not k.isascii() or k.startswith("$"):
                raise _NotPlain
            out[k] = _plain_copy(v)
        return out
    if t is list or t is tuple:
        return [_plain_copy(v) for v in value]
    if t is float and math.isfinite(value):
        return value
    raise _NotPlain


def _json_value(value: Any, field_name: str) -> Any:
    """Round-trip through canonical JSON so engines see plain JSON and the digest is defined.

    Values that are plain JSON already (the usual arguments, profile, approvals) are copied
    directly: same result, without encoding and parsing them.
    """
    try:
        return _plain_copy(value)
    except _NotPlain:
        pass
    try:
        return canonical.decode(canonical.encode(value))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"policy input {field_name}: not JSON-encodable ({exc})") from exc


def _history_entry(entry: Any, index: int, field: str = "history") -> dict[str, Any]:
    if type(entry) is dict:  # fast path: an entry that is already well formed is copied as is
        tool, decision, outcome, ts = entry.get("tool"), entry.get("decision"), entry.get("outcome"), entry.get("ts")
        if (
            type(tool) is str and tool and decision in HISTORY_DECISIONS
            and (outcome is None or type(outcome) is str) and (ts is None or type(ts) is str)
        ):
            return {"tool": tool, "decision": decision, "outcome": outcome, "ts": ts}
    where = f"{field}[{index}]"
    if not isinstance(entry, Mapping):
        raise ConfigurationError(f"policy input {where}: expected an object with tool/decision/outcome/ts")
    tool = entry.get("tool")
    if not isinstance(tool, str) or not tool:
        raise ConfigurationError(f"policy input {where}.tool: expected the tool name, got {tool!r}")
    decision = entry.get("decision")
    if decision not in HISTORY_DECISIONS:
        raise ConfigurationError(
            f"policy input {where}.decision: {decision!r} is not one of {', '.join(HISTORY_DECISIONS)}"
        )
    return {
        "tool": tool,
        "decision": decision,
        "outcome": _opt_str(entry.get("outcome"), f"{where}.outcome"),
        "ts": _iso(entry.get("ts"), f"{where}.ts"),
    }


_UNSET: Any = object()
_HISTORY_V2_KEYS = frozenset({"window", "run", "tools", "data_classes", "recent"})
_HISTORY_V2_KEYS_WITH_TOOL = _HISTORY_V2_KEYS | {"tool"}
_TIMESTAMPS = ("first_ts", "last_ts")
_COUNTER_KEYS = frozenset(HISTORY_COUNTERS).union(_TIMESTAMPS)
_CLASS_KEYS = frozenset(DATA_CLASS_COUNTERS)


def empty_counters_v2() -> dict[str, Any]:
    """Zero counters of a tool or of the run (version 2), timestamps unset: what a first event adds to."""
    return {**dict.fromkeys(HISTORY_COUNTERS, 0), "first_ts": None, "last_ts": None}


def empty_history_v2(window: int = DEFAULT_HISTORY_WINDOW) -> dict[str, Any]:
    """The version-2 ``history`` of a thread with no earlier call (for callers that have none)."""
    _window(window, "history.window")
    return {"window": window, "run": empty_counters_v2(), "tools": {}, "data_classes": {}, "recent": []}


def _window(value: Any, where: str) -> int:
    if type(value) is not int or value < 0:
        raise ConfigurationError(f"policy input {where}: expected an int >= 0, got {value!r}")
    return value


def _exact_keys(value: Any, where: str, keys: frozenset[str], what: str) -> Mapping[str, Any]:
    """``value`` as a mapping holding exactly ``keys``: a typo'd or missing counter is named, not read as 0."""
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"policy input {where}: expected {what}, got {type(value).__name__}")
    if value.keys() != keys:
        missing = sorted(keys - value.keys())
        if missing:
            raise ConfigurationError(f"policy input {where}.{missing[0]}: missing")
        extra = sorted(map(repr, value.keys() - keys))
        raise ConfigurationError(f"policy input {where}: unknown key(s) {', '.join(extra)}")
    return value


def _counters(value: Any, where: str, timestamps: bool) -> dict[str, Any]:
    keys = _COUNTER_KEYS if timestamps else _CLASS_KEYS
    value = _exact_keys(value, where, keys, "an object of counters")
    out: dict[str, Any] = {}
    for name in HISTORY_COUNTERS if timestamps else DATA_CLASS_COUNTERS:
        n = value[name]
        if type(n) is not int or n < 0:
            raise ConfigurationError(f"policy input {where}.{name}: expected an int >= 0, got {n!r}")
        out[name] = n
    if timestamps:
        for name in _TIMESTAMPS:
            out[name] = _iso(value[name], f"{where}.{name}")
    return out


def _named_counters(value: Any, where: str, timestamps: bool) -> dict[str, dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"policy input {where}: expected an object keyed by name, got {type(value).__name__}")
    out: dict[str, dict[str, Any]] = {}
    for name, counters in value.items():
        if type(name) is not str or not name:
            raise ConfigurationError(f"policy input {where}: every key must be a non-empty string, got {name!r}")
        out[name] = _counters(counters, f"{where}[{name!r}]", timestamps)
    return out


def _history_v2(value: Any, tool_name: str) -> dict[str, Any]:
    """Check and copy a version-2 ``history`` for a call to ``tool_name`` (a copy: the caller keeps
    updating its own), with ``tool`` derived from ``tools`` (or checked against it when given)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Mapping):
        raise ConfigurationError(
            "policy input history: version 2 expects an object (window, run, tools, data_classes, recent), "
            f"got {type(value).__name__}; a list of entries is version 1"
        )
    given_tool = "tool" in value
    value = _exact_keys(value, "history", _HISTORY_V2_KEYS_WITH_TOOL if given_tool else _HISTORY_V2_KEYS, "an object")
    window = _window(value["window"], "history.window")
    recent = value["recent"]
    if isinstance(recent, (str, bytes)) or not isinstance(recent, Sequence):
        raise ConfigurationError(f"policy input history.recent: expected a list of entries, got {type(recent).__name__}")
    if len(recent) > window:
        raise ConfigurationError(
            f"policy input history.recent: {len(recent)} entries, more than history.window ({window})"
        )
    tools = _named_counters(value["tools"], "history.tools", True)
    this_tool = dict(tools[tool_name]) if tool_name in tools else empty_counters_v2()
    if given_tool and _counters(value["tool"], "history.tool", True) != this_tool:
        raise ConfigurationError(
            f"policy input history.tool: differs from history.tools[{tool_name!r}] (the called tool's counters, "
            "zero when the run has not called it); leave it out to have it derived"
        )
    return {
        "window": window,
        "run": _counters(value["run"], "history.run", True),
        "tools": tools,
        "tool": this_tool,
        "data_classes": _named_counters(value["data_classes"], "history.data_classes", False),
        "recent": [_history_entry(e, i, "history.recent") for i, e in enumerate(recent)],
    }


def _history_v1(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigurationError(
            f"policy input history: version 1 expects a list of entries, got {type(value).__name__}"
        )
    return [_history_entry(e, i) for i, e in enumerate(value)]


def _approvals(value: Any) -> Sequence[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ConfigurationError("policy input approvals: expected a list of objects")
    for i, approval in enumerate(value):
        if not isinstance(approval, Mapping):
            raise ConfigurationError(f"policy input approvals[{i}]: expected an object, got {approval!r}")
    return value


def _check_call(
    version: Any, workload_id: Any, thread_id: Any, tool_name: Any, tool_spec: ToolSpec | None, risk_tier: Any
) -> None:
    """Raise :class:`ConfigurationError` naming the first of the call's identifying fields that is wrong."""
    if type(version) is not int or version not in POLICY_INPUT_VERSIONS:
        raise ConfigurationError(
            f"policy input version: expected one of {', '.join(map(str, POLICY_INPUT_VERSIONS))}, got {version!r}"
        )
    if not isinstance(workload_id, str) or not workload_id:
        raise ConfigurationError(f"policy input workload.id: expected a non-empty string, got {workload_id!r}")
    if not isinstance(thread_id, str) or not thread_id:
        raise ConfigurationError(f"policy input run.thread_id: expected a non-empty string, got {thread_id!r}")
    if not isinstance(tool_name, str) or not tool_name:
        raise ConfigurationError(f"policy input tool.name: expected a non-empty string, got {tool_name!r}")
    if risk_tier not in RISK_TIERS:
        raise ConfigurationError(
            f"policy input run.risk_tier: {risk_tier!r} is not one of {', '.join(RISK_TIERS)}"
        )
    if tool_spec is not None and tool_spec.name != tool_name:
        raise ConfigurationError(
            f"policy input tool: spec is for {tool_spec.name!r} but the call is to {tool_name!r}"
        )


def _history_and_approvals(
    version: int, history: Any, approvals: Sequence[Any], tool_name: str
) -> tuple[dict[str, Any] | list[dict[str, Any]], Sequence[Any]]:
    """The checked ``history`` of ``version``, and the approvals it carries (version 2: the last ``window``)."""
    if version != 2:
        return (_history_v1(history) if history is not None else []), approvals
    history_doc = _history_v2(history if history is not None else empty_history_v2(), tool_name)
    window = history_doc["window"]
    return history_doc, (approvals[len(approvals) - window:] if len(approvals) > window else approvals)


def build_policy_input(
    *,
    workload_id: str,
    thread_id: str,
    tool_name: str,
    tool_spec: ToolSpec | None,
    args: Mapping[str, Any] | None = None,
    owner: str | None = None,
    intent: str | None = None,
    purpose: str | None = None,
    risk_tier: str = "medium",
    allowed_tools: Iterable[str] | None = None,
    allowed_data_classes: Iterable[str] | None = None,
    target: Any = _UNSET,
    history: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    approvals: Sequence[Mapping[str, Any]] = (),
    now: datetime | str | None = None,
    profile: Mapping[str, Any] | None = None,
    version: int = POLICY_INPUT_VERSION,
) -> dict[str, Any]:
    """Build the policy input document of ``version`` (see the module docstring).

    ``history``: for version 2 the aggregates mapping (``None``: :func:`empty_history_v2`),
    for version 1 the list of earlier calls (``None``: empty). ``approvals``: version 2
    keeps the last ``history["window"]`` of them, so the caller may pass its whole list
    and the document stays bounded. ``tool_spec=None`` means the tool was never
    declared: it is sent with ``known: false``. ``target`` defaults to
    ``args[tool_spec.target_arg]``. Raises :class:`ConfigurationError` naming the field
    for a bad value, so a caller bug is never mistaken for a policy deny.
    """
    _check_call(version, workload_id, thread_id, tool_name, tool_spec, risk_tier)
    args_json = _json_value(dict(args or {}), "args")
    if target is _UNSET:
        target = args_json.get(tool_spec.target_arg) if tool_spec and tool_spec.target_arg else None
    history_doc, approvals = _history_and_approvals(version, history, _approvals(approvals), tool_name)
    return {
        "version": version,
        "workload": {"id": workload_id},
        "run": {
            "thread_id": thread_id,
            "owner": _opt_str(owner, "run.owner"),
            "intent": _opt_str(intent, "run.intent"),
            "purpose": _opt_str(purpose, "run.purpose"),
            "risk_tier": risk_tier,
            "allowed_tools": _opt_str_list(allowed_tools, "run.allowed_tools"),
            "allowed_data_classes": _opt_str_list(allowed_data_classes, "run.allowed_data_classes"),
            "profile": _profile(profile),
        },
        "tool": tool_spec.to_policy_dict() if tool_spec is not None else unknown_tool_dict(tool_name),
        "args": args_json,
        "target": _json_value(target, "target"),
        "history": history_doc,
        "approvals": _json_value([dict(a) for a in approvals], "approvals"),
        "now": _iso(now, "now") if now is not None else _utc_now_iso(),
    }


def default_approval_triggers(risk_tier: str) -> list[str]:
    """Triggers used when the input carries no profile (hand-written inputs)."""
    base = ["escalates", "external", "irreversible"]
    return sorted([*base, "sensitive_data"]) if risk_tier == "high" else base


def approval_triggers(run: Mapping[str, Any]) -> list[str]:
    profile = run.get("profile")
    if isinstance(profile, Mapping) and isinstance(profile.get("require_approval_for"), list):
        return sorted(profile["require_approval_for"])
    return default_approval_triggers(run.get("risk_tier", "medium"))


def _profile(profile: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if profile is None:
        return None
    if not isinstance(profile, Mapping):
        raise ConfigurationError("policy input run.profile: expected an object or null")
    triggers = profile.get("require_approval_for")
    if not isinstance(triggers, (list, tuple, set, frozenset)) or not all(t in APPROVAL_TRIGGERS for t in triggers):
        raise ConfigurationError(
            f"policy input run.profile.require_approval_for: expected a list drawn from {list(APPROVAL_TRIGGERS)}"
        )
    return {**_json_value(dict(profile), "run.profile"), "require_approval_for": sorted(triggers)}
