"""Warden's approval interrupt in LangChain's human-in-the-loop format, and its answers.

Why: the UIs that drive LangGraph Agent Server (Agent Chat UI, Studio) and LangChain's own
``HumanInTheLoopMiddleware`` speak one format — an interrupt value with ``action_requests`` and
``review_configs`` (``HITLRequest``) answered by ``{"decisions": [...]}`` (``HITLResponse``). The
guard's interrupt value is warden's request *plus* those two fields, so such a UI shows it; and an
answer in that format is translated here into warden's own decision for exactly the request it was
delivered to, then checked like any other answer (digest, used once, separation of duties,
signatures, edits decided again by the policy).

An HITL decision may carry warden's fields along (``request_id``, ``action_digest``, ``approver``,
``key_id``, ``signature``); when it does they must match — a decision naming another or an already
answered request, or another action digest, is refused. A client that copies ``request_id`` and
``action_digest`` from the interrupt value (as ``warden approvals decide --server`` does) gets the
same binding as warden's native format; a bare ``{"type": "approve"}`` is bound to the request
whose interrupt it resumes.

The approver: when the server authenticated the user who sent the resume (custom auth), that user
*is* the approver — a decision naming anyone else is refused, never believed. Without auth the
decision must name its ``approver`` (self-declared, as with warden's unsigned approvals).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langgraph_warden.guards.approval import (
    RESPONSE_JSON_SCHEMA,
    ApprovalRequest,
    InvalidApprovalError,
    is_request_map,
    same_identity,
)

__all__ = [
    "HITL_DECISIONS",
    "HITL_RESPONSE_JSON_SCHEMA",
    "hitl_request",
    "is_hitl_answer",
    "bind_resume",
]

#: The HITL decision types a warden approval accepts (``respond`` would skip the tool unrecorded).
HITL_DECISIONS = ("approve", "edit", "reject")
_DECISION_FIELDS = {"type", "message", "edited_action", "request_id", "action_digest", "approver", "key_id", "signature"}

_HITL_DECISION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"enum": list(HITL_DECISIONS)},
        "message": {"type": "string"},
        "edited_action": {"type": "object", "required": ["name", "args"],
                          "properties": {"name": {"type": "string"}, "args": {"type": "object"}}},
        "request_id": {"type": "string"}, "action_digest": {"type": "string"}, "approver": {"type": "string"},
        "key_id": {"type": "string"}, "signature": {"type": "string"},
    },
}
#: The answers a warden approval interrupt accepts: warden's decision, or LangChain's HITL response.
HITL_RESPONSE_JSON_SCHEMA: dict[str, Any] = {
    "title": "langgraph-warden approval decision (warden or LangChain HITL format)",
    "anyOf": [
        *RESPONSE_JSON_SCHEMA["anyOf"],
        {"type": "object", "required": ["decisions"],
         "properties": {"decisions": {"type": "array", "minItems": 1, "maxItems": 1, "items": _HITL_DECISION_SCHEMA}}},
        _HITL_DECISION_SCHEMA,
    ],
}


def hitl_request(req: ApprovalRequest) -> dict[str, Any]:
    """The interrupt value: warden's request with LangChain's ``HITLRequest`` fields added."""
    description = f"{req.tool} needs approval ({', '.join(req.reasons) or 'policy'}); risk tier {req.risk_tier}"
    if req.owner:
        description += f", run owned by {req.owner}"
    if req.intent:
        description += f" for: {req.intent}"
    if req.separation_of_duties:
        description += ". The owner cannot approve it"
    if req.requires_signature:
        description += ". Signed approvals only"
    return {
        **req.to_dict(),
        "action_requests": [{"name": req.tool, "args": dict(req.args), "description": description + "."}],
        "review_configs": [{"action_name": req.tool, "allowed_decisions": list(HITL_DECISIONS)}],
    }


def is_hitl_answer(value: Any) -> bool:
    """Whether a resume value is in LangChain's format: ``{"decisions": [...]}`` or one bare decision."""
    return isinstance(value, Mapping) and ("decisions" in value or ("type" in value and "decision" not in value))


def _one_decision(value: Mapping[str, Any]) -> Mapping[str, Any]:
    if "decisions" not in value:
        return value
    extra = set(value) - {"decisions"}
    if extra:
        raise InvalidApprovalError(f"unknown field(s) {sorted(extra)} next to 'decisions'", field=sorted(extra)[0])
    decisions = value["decisions"]
    if not isinstance(decisions, list) or len(decisions) != 1 or not isinstance(decisions[0], Mapping):
        raise InvalidApprovalError(
            "'decisions' must be a list of exactly one decision object: a warden approval request holds one action "
            "(its 'action_requests' has one entry)", field="decisions",
        )
    return decisions[0]


def _from_hitl(value: Mapping[str, Any], req: ApprovalRequest, identity: str | None) -> dict[str, Any]:
    d = _one_decision(value)
    kind = d.get("type")
    if kind not in HITL_DECISIONS:
        raise InvalidApprovalError(
            f"decision type {kind!r} is not allowed for a warden approval; use one of {list(HITL_DECISIONS)} "
            "(the request's review_configs.allowed_decisions)", field="type",
        )
    unknown = set(d) - _DECISION_FIELDS
    if unknown:
        raise InvalidApprovalError(f"unknown decision field(s) {sorted(unknown)}", field=sorted(unknown)[0])
    approver = d.get("approver") if identity is None else identity
    if identity is not None and d.get("approver") is not None and not same_identity(str(d["approver"]), identity):
        raise InvalidApprovalError(
            f"approval field 'approver': {d['approver']!r} is not the authenticated user {identity!r} who sent this "
            "answer; on a server with auth the approver is the user who answers (leave 'approver' out)",
            field="approver", reason="approver_mismatch",
        )
    if approver is None:
        raise InvalidApprovalError(
            "approval field 'approver': this server has no auth, so the decision must name who answers: "
            '{"type": "approve", "approver": "bob@example.com"} (self-declared; configure custom auth to make it the '
            "authenticated user)", field="approver",
        )
    doc: dict[str, Any] = {
        "request_id": d.get("request_id", req.request_id),
        "action_digest": d.get("action_digest", req.action_digest),
        "decision": kind,
        "approver": approver,
    }
    if d.get("message") is not None:
        doc["message"] = d["message"]
    if kind == "edit":
        action = d.get("edited_action")
        if not isinstance(action, Mapping) or not isinstance(action.get("args"), Mapping):
            raise InvalidApprovalError(
                "an 'edit' decision needs 'edited_action': {\"name\": tool, \"args\": {...}}", field="edited_action"
            )
        if action.get("name", req.tool) != req.tool:
            raise InvalidApprovalError(
                f"edited_action.name {action.get('name')!r} is not the requested tool {req.tool!r}: an approval can change "
                "the arguments, not the tool (ask the agent for a new call instead)", field="edited_action",
            )
        doc["args"] = dict(action["args"])
    elif "edited_action" in d:
        raise InvalidApprovalError("'edited_action' is only allowed with type 'edit'", field="edited_action")
    for name in ("key_id", "signature"):
        if d.get(name) is not None:
            doc[name] = d[name]
    return doc


def _bound_approver(value: Any, identity: str) -> Any:
    """A warden-format answer under auth: its approver must be the authenticated user (filled in if left out)."""
    if not isinstance(value, Mapping):
        return value
    named = value.get("approver")
    if named is None:
        return {**value, "approver": identity}
    if not isinstance(named, str) or not same_identity(named, identity):
        raise InvalidApprovalError(
            f"approval field 'approver': {named!r} is not the authenticated user {identity!r} who sent this answer; "
            "on a server with auth the approver is the user who answers",
            field="approver", reason="approver_mismatch",
        )
    return value


def bind_resume(value: Any, req: ApprovalRequest, identity: str | None, *, sent_now: bool = True) -> Any:
    """The resume value as warden's decision (or ``{request_id: decision}`` map) for ``req``.

    ``identity``: the authenticated user of the run validating it (``None`` without server auth).
    HITL answers are translated; warden answers pass unchanged except that, with ``identity``, their
    approver must be that user. Raises :class:`InvalidApprovalError` naming the field.

    ``sent_now``: whether this run sent the value. One LangGraph recorded in an earlier run that
    ended before the guard recorded the answer (a crash in between) is checked again by whichever
    run continues the thread — under auth, that run's user is not who sent it, so such an answer is
    refused (``unattributable``) and the request waits for a new one.
    """
    if identity is not None and not sent_now:
        raise InvalidApprovalError(
            "this answer was sent by an earlier run that ended before the answer was recorded; who sent it cannot "
            f"be established now (this run is {identity!r}'s), so it is not used: answer request {req.request_id!r} again",
            field="approver", reason="unattributable",
        )
    if is_hitl_answer(value):
        return _from_hitl(value, req, identity)
    if identity is None:
        return value
    if is_request_map(value):
        return {rid: _bound_approver(v, identity) for rid, v in value.items()}
    return _bound_approver(value, identity)
