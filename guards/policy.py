"""The policy engine contract: one input document, one decision document, fail closed.

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

**Version 1** (selectable with ``input_version=1`` for a policy that truly needs every
entry): ``history`` is every earlier call of the thread and ``approvals`` every prior
approval. Its cost grows with the thread — building, hashing and converting the
document, and any rule that iterates it (the v1 default policy took 0.37 ms with no
history and 44 ms at 1,000 prior calls):

.. code-block:: text

    "history": [{"tool": str, "decision": "allow" | "deny" | "require_approval",
                 "outcome": str | null, "ts": str | null}, ...],   # earlier calls, oldest first
    "approvals": [{...}, ...],  # every prior approval of this run, JSON objects

The decision document every engine returns (``data.warden.decision`` in Rego):

.. code-block:: text

    {"allow": bool, "require_approval": bool, "reasons": [str], "scopes": [str],
     "ttl_seconds": int >= 0, "obligations": {...}}

Fail closed: anything that is not exactly a decision document — an exception
from a native binding, an undefined result, a missing key, a wrong type — becomes
a deny whose reason says why (``policy_error:<Type>``, ``policy_undefined``,
``policy_unavailable``, ``malformed_decision``); so does an input of another version
than the engine's (``policy_input_version_mismatch``).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from langgraph_warden import canonical
from langgraph_warden.errors import ConfigurationError, WardenError

from .tools import ToolSpec, unknown_tool_dict

__all__ = [
    "POLICY_INPUT_VERSION",
    "POLICY_INPUT_VERSIONS",
    "DEFAULT_HISTORY_WINDOW",
    "HISTORY_COUNTERS",
    "DATA_CLASS_COUNTERS",
    "REASON_INPUT_VERSION_MISMATCH",
    "empty_history_v2",
    "empty_counters_v2",
    "check_input_version",
    "input_version_arg",
    "APPROVAL_TRIGGERS",
    "approval_triggers",
    "RISK_TIERS",
    "HISTORY_DECISIONS",
    "DECISION_KEYS",
    "REASON_POLICY_UNAVAILABLE",
    "REASON_POLICY_UNDEFINED",
    "REASON_MALFORMED_DECISION",
    "PolicyLoadError",
    "UnsupportedBuiltinError",
    "MalformedDecisionError",
    "PolicyDecision",
    "PolicyEngine",
    "build_policy_input",
    "validate_policy_input",
    "decision_from_document",
    "fail_closed",
    "is_fatal",
    "safe_input_digest",
    "DEFAULT_REGO_POLICY",
    "DEFAULT_CEDAR_POLICY",
]

log = logging.getLogger(__name__)

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

#: The shipped default policies (package data of ``langgraph_warden.guards``).
DEFAULT_REGO_POLICY: Path = Path(__file__).resolve().parent / "policies" / "default.rego"
DEFAULT_CEDAR_POLICY: Path = Path(__file__).resolve().parent / "policies" / "default.cedar"
RISK_TIERS: tuple[str, ...] = ("low", "medium", "high")
HISTORY_DECISIONS: tuple[str, ...] = ("allow", "deny", "require_approval")
DECISION_KEYS: frozenset[str] = frozenset(
    {"allow", "require_approval", "reasons", "scopes", "ttl_seconds", "obligations"}
)

REASON_POLICY_UNAVAILABLE = "policy_unavailable"
REASON_POLICY_UNDEFINED = "policy_undefined"
REASON_MALFORMED_DECISION = "malformed_decision"
REASON_INPUT_VERSION_MISMATCH = "policy_input_version_mismatch"

#: Exceptions an engine wrapper must never swallow: they mean "stop", not "deny".
_FATAL: tuple[type[BaseException], ...] = (
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
    asyncio.CancelledError,
)


class PolicyLoadError(ConfigurationError):
    """A policy could not be loaded; the message names the file, line and column."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 column: int | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.line = line
        self.column = column


class UnsupportedBuiltinError(PolicyLoadError):
    """The policy calls a builtin the engine does not implement (it would evaluate to undefined)."""

    def __init__(self, message: str, *, builtins: Sequence[str], file: str | None = None,
                 line: int | None = None, column: int | None = None) -> None:
        super().__init__(message, file=file, line=line, column=column)
        self.builtins = tuple(builtins)


class MalformedDecisionError(WardenError, ValueError):
    """An engine answered with something that is not a decision document."""


def is_fatal(exc: BaseException) -> bool:
    """True for exceptions that must propagate (interrupts, exits, cancellation)."""
    return isinstance(exc, _FATAL)


# --------------------------------------------------------------------------- decision


@dataclass(frozen=True, slots=True)
class PolicyDecision:
    """One authorisation decision, with what is needed to audit it.

    Invariant: a deny never requires approval and grants no scopes, so callers
    can branch on ``allow`` first without second-guessing the other fields.
    """

    allow: bool
    require_approval: bool
    reasons: tuple[str, ...]
    scopes: tuple[str, ...]
    ttl_seconds: int
    obligations: Mapping[str, Any]
    engine: str
    policy_revision: str
    input_digest: str
    decision_id: str | None = None

    def __post_init__(self) -> None:
        if not self.allow and (self.require_approval or self.scopes):
            raise MalformedDecisionError(
                "PolicyDecision: a deny cannot require approval or grant scopes; "
                "set allow=True or clear require_approval/scopes"
            )
        if type(self.ttl_seconds) is not int or self.ttl_seconds < 0:
            raise MalformedDecisionError(
                f"PolicyDecision.ttl_seconds: expected an int >= 0, got {self.ttl_seconds!r}"
            )
        object.__setattr__(self, "obligations", MappingProxyType(dict(self.obligations)))

    @property
    def denied(self) -> bool:
        return not self.allow

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as recorded in the ``policy.decided`` event and printed by the CLI."""
        return {
            "allow": self.allow,
            "require_approval": self.require_approval,
            "reasons": list(self.reasons),
            "scopes": list(self.scopes),
            "ttl_seconds": self.ttl_seconds,
            "obligations": _thaw(self.obligations),
            "engine": self.engine,
            "policy_revision": self.policy_revision,
            "decision_id": self.decision_id,
            "input_digest": self.input_digest,
        }


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return value


def _str_list(doc: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = doc[key]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise MalformedDecisionError(f"decision.{key}: expected a list of strings, got {value!r}")
    return tuple(value)


def decision_from_document(
    doc: Any,
    *,
    engine: str,
    policy_revision: str,
    input_digest: str,
    decision_id: str | None = None,
) -> PolicyDecision:
    """Parse an engine's decision document strictly.

    Raises :class:`MalformedDecisionError` naming the offending key for a missing
    key, an unknown key (a typo such as ``alow`` must not pass silently), or a
    wrong type; the engine wrappers turn that into a deny.
    """
    if not isinstance(doc, Mapping):
        raise MalformedDecisionError(f"decision: expected an object, got {type(doc).__name__}")
    missing = DECISION_KEYS - doc.keys()
    if missing:
        raise MalformedDecisionError(f"decision: missing key(s) {', '.join(sorted(missing))}")
    extra = doc.keys() - DECISION_KEYS
    if extra:
        raise MalformedDecisionError(
            f"decision: unknown key(s) {', '.join(sorted(map(str, extra)))}; "
            f"allowed keys are {', '.join(sorted(DECISION_KEYS))}"
        )
    for key in ("allow", "require_approval"):
        if type(doc[key]) is not bool:
            raise MalformedDecisionError(f"decision.{key}: expected true/false, got {doc[key]!r}")
    ttl = doc["ttl_seconds"]
    if type(ttl) is float and ttl.is_integer():  # JSON engines may hand back 60.0
        ttl = int(ttl)
    if type(ttl) is not int or ttl < 0:
        raise MalformedDecisionError(f"decision.ttl_seconds: expected an integer >= 0, got {ttl!r}")
    obligations = doc["obligations"]
    if not isinstance(obligations, Mapping):
        raise MalformedDecisionError(f"decision.obligations: expected an object, got {obligations!r}")
    allow = doc["allow"]
    return PolicyDecision(
        allow=allow,
        # Deny dominates: a policy that says deny + approval means deny.
        require_approval=doc["require_approval"] and allow,
        reasons=_str_list(doc, "reasons"),
        scopes=_str_list(doc, "scopes") if allow else (),
        ttl_seconds=ttl if allow else 0,
        obligations=obligations,
        engine=engine,
        policy_revision=policy_revision,
        input_digest=input_digest,
        decision_id=decision_id,
    )


def safe_input_digest(policy_input: Any) -> str:
    """Canonical digest of the input, or ``unavailable:<Type>`` if it cannot be encoded.

    Used on the failure path, which must never raise.
    """
    try:
        return canonical.digest(policy_input)
    except Exception as exc:  # noqa: BLE001 - failure path must not raise
        return f"unavailable:{type(exc).__name__}"


def fail_closed(
    engine: Any,
    policy_input: Any,
    exc: BaseException | None = None,
    *,
    reason: str | None = None,
    detail: str | None = None,
    input_digest: str | None = None,
) -> PolicyDecision:
    """A deny for an engine that could not decide.

    ``reason`` defaults to ``policy_error:<exception type>``; ``detail`` is an
    optional second, more specific reason (e.g. ``opa_timeout``). Fatal
    exceptions (interrupts, cancellation) are re-raised, never turned into denies.
    """
    if exc is not None and is_fatal(exc):
        raise exc
    if reason is None:
        reason = f"policy_error:{type(exc).__name__}" if exc is not None else REASON_POLICY_UNAVAILABLE
    if exc is not None:
        # One line per failure; the traceback only at DEBUG (a dead OPA must not flood the log).
        log.warning("policy engine %s failed closed (%s): %s", getattr(engine, "name", engine), reason, exc)
        log.debug("policy engine failure detail", exc_info=exc)
    reasons = (reason,) if detail is None else (reason, detail)
    return PolicyDecision(
        allow=False,
        require_approval=False,
        reasons=reasons,
        scopes=(),
        ttl_seconds=0,
        obligations={},
        engine=str(getattr(engine, "name", engine)),
        policy_revision=str(getattr(engine, "revision", "unknown")),
        input_digest=input_digest if input_digest is not None else safe_input_digest(policy_input),
        decision_id=None,
    )


# --------------------------------------------------------------------------- engine protocol


@runtime_checkable
class PolicyEngine(Protocol):
    """What the guard needs from an engine. ``decide`` never raises for a policy
    problem: it returns a deny (see :func:`fail_closed`). ``input_version`` (1 or 2)
    tells the guard which input document to build; the engine refuses any other."""

    @property
    def name(self) -> str: ...

    @property
    def revision(self) -> str: ...

    @property
    def input_version(self) -> int: ...

    def decide(self, policy_input: Mapping[str, Any]) -> PolicyDecision: ...

    async def adecide(self, policy_input: Mapping[str, Any]) -> PolicyDecision: ...


def input_version_arg(value: Any, owner: str) -> int:
    """Check an engine's ``input_version`` argument: a typo must not pick a shape the policy does not read."""
    if type(value) is not int or value not in POLICY_INPUT_VERSIONS:
        raise ConfigurationError(
            f"{owner} input_version: expected one of {', '.join(map(str, POLICY_INPUT_VERSIONS))}, got {value!r}"
        )
    return value


def check_input_version(engine: Any, policy_input: Any) -> PolicyDecision | None:
    """A deny when ``policy_input`` is not of ``engine.input_version``, else ``None``.

    Why refuse rather than evaluate: a policy written for one shape reads absent fields
    in the other, and a rule on an absent field (a rate limit, say) silently stops
    matching — failing open.
    """
    expected = engine.input_version
    got = policy_input.get("version") if isinstance(policy_input, Mapping) else None
    if type(got) is int and got == expected:
        return None
    log.warning("policy engine %s (input version %s) refused an input of version %.40r",
                getattr(engine, "name", engine), expected, got)
    return fail_closed(engine, policy_input, reason=REASON_INPUT_VERSION_MISMATCH,
                       detail=f"expected_input_version_{expected}")


# --------------------------------------------------------------------------- input document


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


def _history_v2(value: Any) -> dict[str, Any]:
    """Check and copy a version-2 ``history`` (a copy: the caller keeps updating its own)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Mapping):
        raise ConfigurationError(
            "policy input history: version 2 expects an object (window, run, tools, data_classes, recent), "
            f"got {type(value).__name__}; a list of entries is version 1"
        )
    value = _exact_keys(value, "history", _HISTORY_V2_KEYS, "an object")
    window = _window(value["window"], "history.window")
    recent = value["recent"]
    if isinstance(recent, (str, bytes)) or not isinstance(recent, Sequence):
        raise ConfigurationError(f"policy input history.recent: expected a list of entries, got {type(recent).__name__}")
    if len(recent) > window:
        raise ConfigurationError(
            f"policy input history.recent: {len(recent)} entries, more than history.window ({window})"
        )
    return {
        "window": window,
        "run": _counters(value["run"], "history.run", True),
        "tools": _named_counters(value["tools"], "history.tools", True),
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
    args_json = _json_value(dict(args or {}), "args")
    if target is _UNSET:
        target = args_json.get(tool_spec.target_arg) if tool_spec and tool_spec.target_arg else None
    approvals = _approvals(approvals)
    history_doc: dict[str, Any] | list[dict[str, Any]]
    if version == 2:
        history_doc = _history_v2(history) if history is not None else empty_history_v2()
        window = history_doc["window"]
        approvals = approvals[len(approvals) - window:] if len(approvals) > window else approvals
    else:
        history_doc = _history_v1(history) if history is not None else []
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


#: What can make a call need approval (the run charter's tier profile picks from these).
APPROVAL_TRIGGERS: tuple[str, ...] = ("escalates", "irreversible", "external", "sensitive_data")


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


_TOOL_BOOLS = ("known", "irreversible", "external", "escalates", "idempotent")


def validate_policy_input(doc: Any) -> dict[str, Any]:
    """Check a hand-written input document (e.g. for ``warden policy eval``), of either version.

    Returns it unchanged; raises :class:`ConfigurationError` naming the first
    field that does not match the shape of the document's ``version``. Agrees with
    :func:`langgraph_warden.guards.policy_schema.policy_input_schema`, which cannot
    express one rule checked here: version 2's ``recent`` and ``approvals`` hold at
    most ``history.window`` entries.
    """
    def need(cond: bool, where: str, what: str) -> None:
        if not cond:
            raise ConfigurationError(f"policy input {where}: {what}")

    need(isinstance(doc, Mapping), "$", "expected a JSON object")
    version = doc.get("version")
    need(type(version) is int and version in POLICY_INPUT_VERSIONS, "version",
         f"expected one of {', '.join(map(str, POLICY_INPUT_VERSIONS))}, got {version!r}")
    for key in ("workload", "run", "tool", "args"):
        need(isinstance(doc.get(key), Mapping), key, "expected an object")
    need(isinstance(doc["workload"].get("id"), str), "workload.id", "expected a string")
    run = doc["run"]
    need(isinstance(run.get("thread_id"), str), "run.thread_id", "expected a string")
    need(run.get("risk_tier") in RISK_TIERS, "run.risk_tier", f"expected one of {', '.join(RISK_TIERS)}")
    for key in ("owner", "intent", "purpose"):
        need(run.get(key) is None or isinstance(run.get(key), str), f"run.{key}", "expected a string or null")
    for key in ("allowed_tools", "allowed_data_classes"):
        value = run.get(key)
        need(value is None or (isinstance(value, list) and all(isinstance(v, str) for v in value)),
             f"run.{key}", "expected a list of strings or null")
    profile = run.get("profile")
    need(profile is None or (isinstance(profile, Mapping) and isinstance(profile.get("require_approval_for"), list)
                             and all(t in APPROVAL_TRIGGERS for t in profile["require_approval_for"])),
         "run.profile", f"expected null or an object whose require_approval_for is drawn from {list(APPROVAL_TRIGGERS)}")
    tool = doc["tool"]
    need(isinstance(tool.get("name"), str), "tool.name", "expected a string")
    for key in _TOOL_BOOLS:
        need(type(tool.get(key)) is bool, f"tool.{key}", "expected true/false")
    need(isinstance(tool.get("sensitivity"), str), "tool.sensitivity", "expected a string")
    for key in ("data_classes", "scopes"):
        value = tool.get(key)
        need(isinstance(value, list) and all(isinstance(v, str) for v in value), f"tool.{key}",
             "expected a list of strings")
    need(tool.get("target_arg") is None or isinstance(tool["target_arg"], str), "tool.target_arg",
         "expected a string or null")
    if version == 2:
        need("history" in doc, "history", "expected an object")
        window = _history_v2(doc["history"])["window"]
    else:
        need(isinstance(doc.get("history"), list), "history", "expected a list")
        _history_v1(doc["history"])
    need(isinstance(doc.get("approvals"), list), "approvals", "expected a list")
    _approvals(doc["approvals"])
    if version == 2:
        need(len(doc["approvals"]) <= window, "approvals",
             f"{len(doc['approvals'])} entries, more than history.window ({window})")
    need(isinstance(doc.get("now"), str), "now", "expected an ISO-8601 string")
    return dict(doc)
