"""The policy engine contract: one input document, one decision document, fail closed.

Why one contract: the same facts reach every engine (embedded Rego, an OPA server,
Cedar) as one versioned input document (:mod:`langgraph_warden.guards.policy_input`,
which describes both versions), are hashed into the ``policy.decided`` event and can be
replayed by ``warden policy eval``. An engine is built for one ``input_version`` and
refuses the other.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol, runtime_checkable

from langgraph_warden import canonical
from langgraph_warden.errors import ConfigurationError, WardenError

from .policy_input import (  # re-exported: engines, the guard and the CLI import the input document from here
    APPROVAL_TRIGGERS,
    DATA_CLASS_COUNTERS,
    DEFAULT_HISTORY_WINDOW,
    HISTORY_COUNTERS,
    HISTORY_DECISIONS,
    POLICY_INPUT_VERSION,
    POLICY_INPUT_VERSIONS,
    RISK_TIERS,
    approval_triggers,
    build_policy_input,
    empty_counters_v2,
    empty_history_v2,
)
from .policy_input_check import validate_policy_input

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

#: The shipped default policies (package data of ``langgraph_warden.guards``).
DEFAULT_REGO_POLICY: Path = Path(__file__).resolve().parent / "policies" / "default.rego"
DEFAULT_CEDAR_POLICY: Path = Path(__file__).resolve().parent / "policies" / "default.cedar"
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

    ``engine`` is read defensively (``getattr`` with defaults, not the protocol): this is the path
    for an engine that is broken, and a broken engine without a ``name`` must still yield a deny.

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
