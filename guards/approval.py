"""Human approval: the interrupt payload, the resume payload, and the checks between them.

Why a typed, digest-bound approval: a person approves *one exact action* — this
tool, these canonical arguments, on this thread, for this tool call. The resume
payload must name the request and the action digest it approves, so an
approval cannot be replayed onto a different or altered action, cannot be used
twice, and cannot come from the run's owner when separation of duties applies.

The run pauses with LangGraph's ``interrupt(request.to_dict())``; a person
resumes it with ``Command(resume=approve(request, "bob"))`` (or
``reject(...)``/``edit(...)``), from Python, the CLI or a notebook.

Several calls paused at once:

* ``create_agent`` (one task per tool call, each with its own interrupt id):
  ``Command(resume={interrupt.id: approve(interrupt.value, "bob"), ...})``.
* ``ToolNode`` with several gated calls in one model turn (one task; LangGraph
  shows only the first interrupt, and its per-task interrupt counter is shared
  by the parallel calls): answer by **request id**, in any order —
  ``Command(resume={request.request_id: approve(request, "bob"), ...})`` for the
  requests of ``warden.pending_approvals(thread)``. Each call picks the answer
  addressed to its own request id (:func:`is_request_map`); a plain payload
  naming another pending request of the thread is left for that call.

The resume value is checked *before* LangGraph records it (it is passed to
``interrupt()`` as its ``response_schema`` validator): a refused answer — bad
shape, unknown or already-used request id (``reason="reused"``), wrong digest,
separation of duties, missing or bad signature — raises
:class:`InvalidApprovalError`, appends ``approval.refused``, and leaves the run
paused at the same interrupt, to be answered again.

Approver names: an unsigned name is *self-declared* — whoever can resume the run
can type any name; only a signed approval (checked against ``approver_keys``)
proves who answered. Names are compared as identities (:func:`normalize_identity`:
NFKC, case-folded), so the owner cannot pass separation of duties by changing case
or width, and a name holding a control or invisible character (or surrounding
whitespace) is refused, naming the field ``approver``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from langgraph_warden import canonical
from langgraph_warden.errors import WardenError
from langgraph_warden.keys import SigningKey, b64u, b64u_decode, verify_signature
from langgraph_warden.names import describe_character, forbidden_characters, identity_key

__all__ = [
    "APPROVAL_REQUEST_KIND",
    "ApprovalRequest",
    "ApprovalDecision",
    "InvalidApprovalError",
    "action_digest",
    "approve",
    "reject",
    "edit",
    "decision_signing_bytes",
    "is_request_map",
    "normalize_identity",
    "same_identity",
    "is_party",
    "RESPONSE_JSON_SCHEMA",
]

APPROVAL_REQUEST_KIND = "langgraph-warden/approval-request/v1"
Decision = Literal["approve", "reject", "edit"]
_DECISIONS = ("approve", "reject", "edit")


class InvalidApprovalError(WardenError, ValueError):
    """A resume payload that cannot be an answer to the pending request. Nothing changes.

    Marked for LangGraph as an invalid resume, so ``ToolNode`` re-raises it and the
    interrupt stays pending, to be answered again correctly.
    """

    def __init__(self, message: str, *, field: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.field = field
        #: machine-readable cause recorded in ``approval.refused``: invalid_payload, unknown_request,
        #: wrong_request, reused, wrong_digest, separation_of_duties, unsigned, bad_signature; on a server with
        #: auth (guards/hitl.py) approver_mismatch, unattributable.
        self.reason = reason or "invalid_payload"
        #: Who sent the refused answer, when it says (set by the guard's resume check; recorded in ``approval.refused``).
        self.approver: str | None = None
        # ToolNode never turns an invalid resume into a tool error message: the run stays paused.
        setattr(self, "_langgraph_invalid_resume", True)


def normalize_identity(name: Any, *, field: str = "approver") -> str:
    """The identity key of an approver's name; raise :class:`InvalidApprovalError` naming ``field`` if it is no name.

    The key is NFKC-normalised and case-folded (whitespace runs collapsed), so ``ALICE@example.com``,
    ``alice@EXAMPLE.com`` and fullwidth ``ａｌｉｃｅ@example.com`` are one person. Refused: a name that
    is not a non-empty string, holds a control, format or other invisible character (a zero-width
    space, a bidi control, a BOM ...; see :mod:`langgraph_warden.names`), or starts or ends with
    whitespace. A refused name is never compared: two strings that look alike must not count as
    two people, and a name must read the same in the record as on the screen.

    The name itself stays as given (it is what a signature covers and what the record shows);
    only comparisons use the key. An unsigned name is self-declared: see authenticated approvals.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidApprovalError(
            f"approval field {field!r} must be a non-empty string (the approver's name)", field=field
        )
    bad = forbidden_characters(name)
    if bad:
        where, ch = bad[0]
        raise InvalidApprovalError(
            f"approval field {field!r}: the name {name!r} holds {describe_character(ch)} at position {where}; "
            "control and invisible characters are not allowed in a name (they make two different names look like "
            "one person): send the name exactly as it is displayed, without them",
            field=field,
        )
    if name != name.strip():
        raise InvalidApprovalError(
            f"approval field {field!r}: the name {name!r} starts or ends with whitespace; send it without",
            field=field,
        )
    return identity_key(name)


def same_identity(a: str | None, b: str | None) -> bool:
    """Whether two names denote the same person (equal identity keys). ``None`` or an empty key is nobody."""
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    ka, kb = identity_key(a), identity_key(b)
    return bool(ka) and ka == kb


def is_party(approver: str, *identities: str | None) -> bool:
    """Whether ``approver`` is one of ``identities`` (e.g. the run's owner and its workload id).

    The approver's name is checked first (:func:`normalize_identity` raises on a name that cannot be
    compared safely); ``identities`` are compared leniently (their invisible characters dropped), so
    the answer errs towards "same person". ``None`` entries are skipped.
    """
    key = normalize_identity(approver)
    return any(isinstance(other, str) and identity_key(other) == key for other in identities)


def is_request_map(value: Any) -> bool:
    """Whether a resume value is the ``{request_id: payload}`` form (answers for several requests)."""
    return (
        isinstance(value, Mapping)
        and bool(value)
        and "request_id" not in value
        and all(isinstance(k, str) and k.startswith("apr_") for k in value)
    )


#: JSON schema of a resume value (shown as the interrupt's ``response_schema``).
_DECISION_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["request_id", "action_digest", "decision", "approver"],
    "properties": {
        "request_id": {"type": "string"},
        "action_digest": {"type": "string"},
        "decision": {"enum": list(_DECISIONS)},
        "approver": {"type": "string"},
        "message": {"type": "string"},
        "args": {"type": "object", "description": "edited arguments (decision 'edit' only)"},
        "key_id": {"type": "string"},
        "signature": {"type": "string", "description": "base64url Ed25519 over decision_signing_bytes"},
    },
    "additionalProperties": False,
}
RESPONSE_JSON_SCHEMA: dict[str, Any] = {
    "title": "langgraph-warden approval decision",
    "anyOf": [
        _DECISION_JSON_SCHEMA,
        {"type": "object", "description": "{request_id: decision} for several requests",
         "additionalProperties": _DECISION_JSON_SCHEMA},
    ],
}


def action_digest(tool: str, args: Mapping[str, Any], thread_id: str, tool_call_id: str) -> str:
    """The digest of exactly one action: tool + canonical arguments + thread + tool call id."""
    return canonical.digest(
        {"tool": tool, "args": dict(args), "thread_id": thread_id, "tool_call_id": tool_call_id}
    )


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """What the run shows a person when it pauses (the ``interrupt()`` value)."""

    request_id: str
    thread_id: str
    tool_call_id: str
    tool: str
    args: Mapping[str, Any]
    reasons: tuple[str, ...]
    owner: str | None
    intent: str | None
    risk_tier: str
    action_digest: str
    expires_at: str  # ISO-8601 UTC
    separation_of_duties: bool = False
    requires_signature: bool = False
    retry_of_in_doubt: bool = False
    created_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": APPROVAL_REQUEST_KIND,
            "request_id": self.request_id,
            "thread_id": self.thread_id,
            "tool_call_id": self.tool_call_id,
            "tool": self.tool,
            "args": dict(self.args),
            "reasons": list(self.reasons),
            "owner": self.owner,
            "intent": self.intent,
            "risk_tier": self.risk_tier,
            "action_digest": self.action_digest,
            "expires_at": self.expires_at,
            "separation_of_duties": self.separation_of_duties,
            "requires_signature": self.requires_signature,
            "retry_of_in_doubt": self.retry_of_in_doubt,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ApprovalRequest:
        return cls(
            request_id=doc["request_id"],
            thread_id=doc["thread_id"],
            tool_call_id=doc["tool_call_id"],
            tool=doc["tool"],
            args=dict(doc["args"]),
            reasons=tuple(doc.get("reasons", ())),
            owner=doc.get("owner"),
            intent=doc.get("intent"),
            risk_tier=doc.get("risk_tier", "medium"),
            action_digest=doc["action_digest"],
            expires_at=doc["expires_at"],
            separation_of_duties=bool(doc.get("separation_of_duties", False)),
            requires_signature=bool(doc.get("requires_signature", False)),
            retry_of_in_doubt=bool(doc.get("retry_of_in_doubt", False)),
            created_at=doc.get("created_at", ""),
        )

    @property
    def expired(self) -> bool:
        return datetime.now(UTC) >= datetime.fromisoformat(self.expires_at)


@dataclass(frozen=True, slots=True)
class ApprovalDecision:
    """A person's answer (the ``Command(resume=...)`` value), parsed and type-checked."""

    request_id: str
    action_digest: str
    decision: Decision
    approver: str
    message: str | None = None
    args: Mapping[str, Any] | None = None
    key_id: str | None = None
    signature: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "request_id": self.request_id,
            "action_digest": self.action_digest,
            "decision": self.decision,
            "approver": self.approver,
        }
        if self.message is not None:
            doc["message"] = self.message
        if self.args is not None:
            doc["args"] = dict(self.args)
        if self.key_id is not None:
            doc["key_id"] = self.key_id
            doc["signature"] = self.signature
        return doc

    def record(self) -> dict[str, Any]:
        """What goes into approval events (the signature is kept: it is public evidence)."""
        return self.to_dict()

    @classmethod
    def parse(cls, value: Any) -> ApprovalDecision:
        """Check a resume payload's shape; raise :class:`InvalidApprovalError` naming the field."""
        if not isinstance(value, Mapping):
            raise InvalidApprovalError(
                f"the resume value must be an approval mapping (use langgraph_warden.guards.approve/reject/edit), "
                f"got {type(value).__name__}",
                field="$",
            )
        for name in ("request_id", "action_digest", "decision", "approver"):
            if name not in value:
                raise InvalidApprovalError(f"the approval is missing {name!r}", field=name)
            if not isinstance(value[name], str) or not value[name].strip():
                raise InvalidApprovalError(f"approval field {name!r} must be a non-empty string", field=name)
        if value["decision"] not in _DECISIONS:
            raise InvalidApprovalError(
                f"approval decision {value['decision']!r} is not one of {list(_DECISIONS)}", field="decision"
            )
        args = value.get("args")
        if value["decision"] == "edit":
            if not isinstance(args, Mapping):
                raise InvalidApprovalError("an 'edit' decision needs 'args': the edited arguments object", field="args")
        elif args is not None:
            raise InvalidApprovalError("'args' is only allowed with decision 'edit'", field="args")
        message = value.get("message")
        if message is not None and not isinstance(message, str):
            raise InvalidApprovalError("approval field 'message' must be a string", field="message")
        key_id, signature = value.get("key_id"), value.get("signature")
        if (key_id is None) != (signature is None):
            raise InvalidApprovalError("a signed approval needs both 'key_id' and 'signature'", field="signature")
        unknown = set(value) - {"request_id", "action_digest", "decision", "approver", "message", "args", "key_id", "signature"}
        if unknown:
            raise InvalidApprovalError(f"unknown approval field(s) {sorted(unknown)}", field=sorted(unknown)[0])
        try:
            canonical.encode(dict(args)) if args is not None else None
        except canonical.CanonicalEncodingError as exc:
            raise InvalidApprovalError(f"edited args are not JSON data: {exc}", field="args") from None
        normalize_identity(value["approver"])  # refuses a name that cannot be compared safely
        return cls(
            request_id=value["request_id"],
            action_digest=value["action_digest"],
            decision=value["decision"],
            approver=value["approver"],
            message=message,
            args=dict(args) if args is not None else None,
            key_id=key_id,
            signature=signature,
        )

    def approver_is(self, *identities: str | None) -> bool:
        """Whether this decision's approver is one of ``identities`` (see :func:`is_party`)."""
        return is_party(self.approver, *identities)

    def signature_valid(self, public_key: bytes) -> bool:
        if not self.signature:
            return False
        try:
            sig = b64u_decode(self.signature)
        except ValueError:
            return False
        return verify_signature(public_key, sig, decision_signing_bytes(self))


def decision_signing_bytes(d: ApprovalDecision) -> bytes:
    """What an authenticated approver signs: every field of the decision except the signature."""
    return canonical.encode(
        {
            "domain": "langgraph-warden/approval/v1",
            "request_id": d.request_id,
            "action_digest": d.action_digest,
            "decision": d.decision,
            "approver": d.approver,
            "message": d.message,
            "args": dict(d.args) if d.args is not None else None,
            "key_id": d.key_id,
        }
    )


def _request_fields(request: ApprovalRequest | Mapping[str, Any]) -> tuple[str, str]:
    if isinstance(request, ApprovalRequest):
        return request.request_id, request.action_digest
    if isinstance(request, Mapping) and "request_id" in request and "action_digest" in request:
        return str(request["request_id"]), str(request["action_digest"])
    # An langgraph Interrupt object: its .value is the request dict.
    value = getattr(request, "value", None)
    if isinstance(value, Mapping):
        return _request_fields(value)
    raise InvalidApprovalError("pass the ApprovalRequest (or the interrupt's value) you are answering", field="request")


def _build(
    request: ApprovalRequest | Mapping[str, Any],
    decision: Decision,
    approver: str,
    *,
    message: str | None = None,
    args: Mapping[str, Any] | None = None,
    key: SigningKey | None = None,
) -> dict[str, Any]:
    normalize_identity(approver)  # a bad name is refused here, not first by the paused run
    request_id, digest = _request_fields(request)
    d = ApprovalDecision(
        request_id=request_id,
        action_digest=digest,
        decision=decision,
        approver=approver,
        message=message,
        args=dict(args) if args is not None else None,
        key_id=key.key_id if key is not None else None,
        signature=None,
    )
    if key is not None:
        d = ApprovalDecision(**{**_fields(d), "signature": b64u(key.sign(decision_signing_bytes(d)))})
    return d.to_dict()


def _fields(d: ApprovalDecision) -> dict[str, Any]:
    return {
        "request_id": d.request_id,
        "action_digest": d.action_digest,
        "decision": d.decision,
        "approver": d.approver,
        "message": d.message,
        "args": d.args,
        "key_id": d.key_id,
        "signature": d.signature,
    }


def approve(request: ApprovalRequest | Mapping[str, Any], approver: str, *, message: str | None = None, key: SigningKey | None = None) -> dict[str, Any]:
    """Resume payload approving exactly the requested action (signed when ``key`` is given)."""
    return _build(request, "approve", approver, message=message, key=key)


def reject(request: ApprovalRequest | Mapping[str, Any], approver: str, *, message: str, key: SigningKey | None = None) -> dict[str, Any]:
    """Resume payload rejecting the action; the agent sees ``message``."""
    return _build(request, "reject", approver, message=message, key=key)


def edit(
    request: ApprovalRequest | Mapping[str, Any],
    approver: str,
    args: Mapping[str, Any],
    *,
    message: str | None = None,
    key: SigningKey | None = None,
) -> dict[str, Any]:
    """Resume payload approving the action with changed arguments (which go through the policy again)."""
    return _build(request, "edit", approver, message=message, args=args, key=key)
