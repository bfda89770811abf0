"""The approval flow of one call: ask (LangGraph ``interrupt``), check the answer on resume, record it.

A call whose decision requires approval records ``approval.requested`` and pauses the run with
``interrupt(hitl_request(...))``. On resume every value is checked inside ``interrupt()`` (its
``response_schema``) before LangGraph records it, so a refused answer never counts and the
interrupt stays pending. Answers are recorded (granted, rejected, edited, expired), and a
refusal also as ``tool.denied`` so that a re-run of the task returns the same refusal.

LangGraph internals used (``langgraph._internal``), each because no public API says it:

* the task's *scratchpad* (``CONFIG_KEY_SCRATCHPAD``): it identifies one ToolNode task, whose
  calls share one interrupt counter (so they must ask one at a time and remember which resume
  values they already took), and its ``get_null_resume`` tells whether a value was sent now;
* the run's *resume map* (``CONFIG_KEY_RESUME_MAP``): ``{interrupt id: value}`` sent with
  ``Command(resume={...})``, the other way a value is new to this invocation.

Whether a value is new matters for one check only: a reused or unknown request id is refused
in a value sent now, but tolerated in one LangGraph recorded earlier (it was checked then).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, cast

from langchain_core.messages import ToolMessage
from langgraph.types import interrupt
from pydantic import PlainValidator, WithJsonSchema

from langgraph_warden.charter import RunCharter, TierProfile
from langgraph_warden.event_payloads import ApprovalAnswered, ApprovalRequested
from langgraph_warden.events import EventDraft, EventKind, EventSummary
from langgraph_warden.keys import key_id_for

from .approval import (
    ApprovalDecision,
    ApprovalRequest,
    InvalidApprovalError,
    action_digest,
    is_request_map,
    same_identity,
)
from .guard_settings import GuardSettings
from .hitl import HITL_RESPONSE_JSON_SCHEMA, bind_resume, hitl_request
from .policy import PolicyDecision
from .recorder import Recorder
from .retries import Origin
from .run_charter import authenticated_user
from .thread_view import _APPROVAL_FINAL, _CallRecord

__all__ = ["ApprovalFlow"]

try:  # LangGraph internals (see the module docstring for why each is needed)
    from langgraph._internal._constants import CONFIG_KEY_RESUME_MAP as _CONFIG_KEY_RESUME_MAP
    from langgraph._internal._constants import CONFIG_KEY_SCRATCHPAD as _CONFIG_KEY_SCRATCHPAD
except ImportError:  # pragma: no cover - older layouts
    _CONFIG_KEY_SCRATCHPAD = "__pregel_scratchpad"
    _CONFIG_KEY_RESUME_MAP = "__pregel_resume_map"

_NOT_MINE = object()
#: Tasks whose taken resume values a guard remembers (least recent dropped first).
_WALKED_TASKS = 256


@dataclass(frozen=True, slots=True)
class _Answer:
    decision: ApprovalDecision | None  # None: the answer came after the request expired
    approver: str | None = None


class _Refusal(Exception):
    """Carries an InvalidApprovalError out of the resume validator unwrapped (pydantic wraps ValueErrors)."""

    def __init__(self, error: InvalidApprovalError) -> None:
        super().__init__(str(error))
        self.error = error


def _approver_of(value: Any) -> str | None:
    approver = value.get("approver") if isinstance(value, Mapping) else None
    return approver if isinstance(approver, str) else None


def _addressed_to(value: Any, request_id: str) -> Any:
    """The part of a resume value that answers ``request_id`` (``None`` if it answers another request)."""
    if is_request_map(value):
        return value.get(request_id)
    if isinstance(value, Mapping) and isinstance(value.get("request_id"), str) and value["request_id"] != request_id:
        return None
    return value  # addressed to this request, or malformed (then parse names the field)


def _is_new_resume(value: Any, scratchpad: Any, conf: Mapping[str, Any]) -> bool:
    """Whether ``value`` was sent by this invocation (not recorded by an earlier one).

    LangGraph internals: the scratchpad's ``get_null_resume`` (a value sent as a bare
    ``Command(resume=...)``) and the resume map (values sent by interrupt id).
    """
    if scratchpad is not None:
        try:
            if value is scratchpad.get_null_resume(False):
                return True
        except Exception:  # pragma: no cover - defensive: internal API
            pass
    resume_map = conf.get(_CONFIG_KEY_RESUME_MAP) or {}
    return any(value is v for v in resume_map.values()) if isinstance(resume_map, Mapping) else False


def refusal_of(req: ApprovalRequest, answer: ApprovalDecision | None) -> str | None:
    """What the call returns instead of running, if ``answer`` (``None``: expired) stops it."""
    if answer is None:
        return (
            f"The approval request {req.request_id} for {req.tool!r} expired at {req.expires_at}; the tool was not run. "
            "Ask again to get a new approval request."
        )
    if answer.decision == "reject":
        return f"Rejected by {answer.approver}: {answer.message or 'no reason given'}. The tool was not run."
    return None


def closing_drafts(
    base: Mapping[str, Any], req: ApprovalRequest, answer: ApprovalDecision | None, approver: str | None
) -> list[EventDraft]:
    """The events that close ``req`` with ``answer`` (``None``: it came after expiry). A refusal
    (see :func:`refusal_of`) is also recorded as ``tool.denied``: final for the call, so a re-run
    of its task returns the same refusal (see guards/decision.py)."""
    tcid = base["tool_call_id"]
    refusal = refusal_of(req, answer)
    if answer is None:
        drafts = [EventDraft(EventKind.APPROVAL_EXPIRED, {**base, "request_id": req.request_id, "expires_at": req.expires_at,
                                                          "approver": approver}, subject=tcid)]
        reason = "approval_expired"
    else:
        kind = {"approve": EventKind.APPROVAL_GRANTED, "reject": EventKind.APPROVAL_REJECTED, "edit": EventKind.APPROVAL_EDITED}[answer.decision]
        payload = {
            **base,
            "request_id": req.request_id,
            "approver": answer.approver,
            "decision": answer.decision,
            "message": answer.message,
            "authenticated": answer.signature is not None,
            "answer": answer.record(),
            "original_action_digest": req.action_digest,
        }
        if answer.decision == "edit":
            payload["edited_args"] = dict(answer.args or {})
            payload["edited_action_digest"] = action_digest(req.tool, answer.args or {}, req.thread_id, tcid)
        drafts = [EventDraft(kind, payload, subject=tcid)]
        reason = "rejected_by_approver"
    if refusal is not None:
        drafts.append(EventDraft(EventKind.TOOL_DENIED, {**base, "reasons": [reason], "message": refusal, "decision_id": None},
                                 subject=tcid))
    return drafts


class ApprovalFlow:
    """Asks for, checks and records the approvals of the calls one guard handles."""

    def __init__(self, settings: GuardSettings, recorder: Recorder) -> None:
        self._settings = settings
        self._recorder = recorder
        #: The calls of one ToolNode task share its interrupt counter: they ask one at a time. Per
        #: guard, not process-wide: a task's calls all pass through the one guard its node was built
        #: with, so tasks of other guards have nothing to wait for. Reentrant: a validator runs
        #: inside ``interrupt()`` on the asking thread.
        self._ask_lock = threading.RLock()
        #: Resume values each task's calls already took from LangGraph (per scratchpad; bounded).
        self._walked_by_task: OrderedDict[int, tuple[Any, list[Any]]] = OrderedDict()

    def approval(
        self,
        thread_id: str,
        base: Mapping[str, Any],
        args: Mapping[str, Any],
        decision: PolicyDecision,
        charter: RunCharter | None,
        profile: TierProfile,
        rec: _CallRecord,
        retry_of_in_doubt: bool,
        origin: Origin | None = None,
    ) -> tuple[ApprovalDecision, Mapping[str, Any]] | ToolMessage:
        """The approved (maybe edited) action and its arguments, or the message that stops the call."""
        tool, tool_call_id = base["tool"], base["tool_call_id"]
        if rec.approval_requested is not None and (rec.approval_final is None or rec.approval_final.kind != EventKind.APPROVAL_EXPIRED):
            req = ApprovalRequest.from_dict(cast(ApprovalRequested, rec.approval_requested.payload)["request"])
        else:
            req = self._request(thread_id, base, args, decision, charter, profile, rec, retry_of_in_doubt)
            self._recorder.append(thread_id, EventKind.APPROVAL_REQUESTED, tool_call_id, {
                **base, "request_id": req.request_id, "request": req.to_dict(),
                "origin": origin.to_dict() if origin is not None else None})
        # Already decided (the task re-ran: a sibling call paused, or the process died after the
        # decision was recorded): the recorded decision stands, and no event is appended again.
        decided = rec.approval_final if (
            rec.approval_final is not None and cast(ApprovalAnswered, rec.approval_final.payload).get("request_id") == req.request_id
        ) else None
        try:
            got = self._await_answer(thread_id, req, charter, decided)
        except InvalidApprovalError as exc:
            self._recorder.append(
                thread_id,
                EventKind.APPROVAL_REFUSED,
                tool_call_id,
                {**base, "request_id": req.request_id, "reason": exc.reason, "field": exc.field, "detail": str(exc),
                 "approver": exc.approver},  # set by the validator when it knows who sent it
            )
            raise
        answer = got.decision
        if decided is None:
            self._recorder.commit(thread_id, *self._recorder.drafts(thread_id, tool_call_id, closing_drafts(base, req, answer, got.approver)))
        refusal = refusal_of(req, answer)
        if refusal is not None:
            return ToolMessage(content=refusal, name=tool, tool_call_id=tool_call_id, status="error")
        assert answer is not None
        return answer, (dict(answer.args or {}) if answer.decision == "edit" else args)

    def _request(
        self, thread_id: str, base: Mapping[str, Any], args: Mapping[str, Any], decision: PolicyDecision,
        charter: RunCharter | None, profile: TierProfile, rec: _CallRecord, retry_of_in_doubt: bool,
    ) -> ApprovalRequest:
        """A new approval request for the call, bound to its action digest."""
        tool, tool_call_id = base["tool"], base["tool_call_id"]
        digest = action_digest(tool, args, thread_id, tool_call_id)
        seed = f"{thread_id}\0{tool_call_id}\0{digest}\0{rec.decided.seq if rec.decided else 0}\0{time.time_ns()}"
        return ApprovalRequest(
            request_id="apr_" + hashlib.sha256(seed.encode()).hexdigest()[:24],
            thread_id=thread_id,
            tool_call_id=tool_call_id,
            tool=tool,
            args=dict(args),
            reasons=tuple(decision.reasons),
            owner=charter.owner if charter else None,
            intent=charter.intent if charter else None,
            risk_tier=charter.risk_tier if charter else "medium",
            action_digest=digest,
            expires_at=(datetime.now(UTC) + timedelta(seconds=profile.approval_ttl_seconds)).isoformat(),
            separation_of_duties=profile.separation_of_duties,
            requires_signature=profile.authenticated_approvals,
            retry_of_in_doubt=retry_of_in_doubt,
        )

    def _walked(self, scratchpad: Any) -> list[Any]:
        """The resume values this task's calls already took (caller holds the ask lock)."""
        if scratchpad is None:
            return []
        key = id(scratchpad)
        entry = self._walked_by_task.get(key)
        if entry is None or entry[0] is not scratchpad:
            entry = self._walked_by_task[key] = (scratchpad, [])
            while len(self._walked_by_task) > _WALKED_TASKS:
                self._walked_by_task.popitem(last=False)
        return entry[1]

    def _approval_requests(
        self, thread_id: str
    ) -> tuple[dict[str, tuple[ApprovalRequest, dict[str, Any]]], set[str]]:
        """The thread's open approval requests (by id, with their call: ``tool_call_id``, ``tool``,
        ``args_digest``) and the ids already decided."""
        open_: dict[str, tuple[ApprovalRequest, dict[str, Any]]] = {}
        final: set[str] = set()
        for e in self._settings.guard_sink.events(thread_id, kinds=[EventKind.APPROVAL_REQUESTED, *_APPROVAL_FINAL]):
            rid: Any = cast(ApprovalAnswered, e.payload).get("request_id")  # every kind read here names its request
            if e.kind == EventKind.APPROVAL_REQUESTED:
                p = cast(ApprovalRequested, e.payload)
                open_[rid] = (ApprovalRequest.from_dict(p["request"]),
                              {"tool_call_id": p["tool_call_id"], "tool": p["tool"], "args_digest": p["args_digest"]})
            else:
                open_.pop(rid, None)
                final.add(rid)
        return open_, final

    def _await_answer(
        self, thread_id: str, req: ApprovalRequest, charter: RunCharter | None, decided: EventSummary | None
    ) -> _Answer:
        """Pause for (or find) the answer to ``req``; a ``None`` decision means it arrived after expiry.

        ``decided``: the answer the ledger already holds for ``req`` (this call's task re-ran after a
        sibling paused or the process died, or a sibling took the answer from LangGraph and recorded
        it, see ``_validate_resume``). It stands, and nothing is asked: the resume value that brought
        it may be gone (consumed by the sibling, or never saved by a process that died).

        Every resume value is checked inside ``interrupt()`` (its ``response_schema``), so a
        refused one is never recorded by LangGraph and the interrupt stays pending. The calls
        of one ToolNode task share one interrupt counter, so they ask one at a time (a lock)
        and each takes the answer addressed to its own request id, whichever index it sits at.
        """
        if decided is not None:
            given = cast(ApprovalAnswered, decided.payload)
            answer = None if decided.kind == EventKind.APPROVAL_EXPIRED else ApprovalDecision.parse(given["answer"])
            return _Answer(answer, given.get("approver"))
        from langgraph.config import get_config

        conf = get_config().get("configurable", {})
        scratchpad = conf.get(_CONFIG_KEY_SCRATCHPAD)  # LangGraph internal: identifies this task (module docstring)
        with self._ask_lock:
            walked = self._walked(scratchpad)
            # 1. answers another call of this task already took from LangGraph (recorded).
            for raw in walked:
                mine = _addressed_to(raw, req.request_id)
                if mine is not None:
                    return _Answer(self._check_answer(req, mine, charter), _approver_of(mine))

            # 2. ask; answers meant for other calls are recorded and skipped.
            def validate(raw: Any) -> Any:
                new = _is_new_resume(raw, scratchpad, conf)
                try:
                    # LangChain's HITL answers become warden's; with server auth the sender is the approver.
                    raw = bind_resume(raw, req, authenticated_user({"configurable": conf}), sent_now=new)
                    result = self._validate_resume(thread_id, req, charter, raw, new)
                except InvalidApprovalError as exc:
                    mine = _addressed_to(raw, req.request_id)
                    exc.approver = _approver_of(mine if mine is not None else raw)  # recorded by approval()
                    raise _Refusal(exc) from None
                walked.append(raw)
                return result

            schema = Annotated[Any, PlainValidator(validate), WithJsonSchema(HITL_RESPONSE_JSON_SCHEMA)]
            while True:
                try:
                    result = interrupt(hitl_request(req), response_schema=schema)  # pauses the run the first time
                except _Refusal as refusal:
                    raise refusal.error from None
                if result is not _NOT_MINE:
                    return result

    def _validate_resume(
        self, thread_id: str, req: ApprovalRequest, charter: RunCharter | None, raw: Any, new: bool
    ) -> Any:
        """Check one resume value for ``req``: ``_Answer`` if it answers it, ``_NOT_MINE`` if it answers another call."""
        mine = _addressed_to(raw, req.request_id)
        if is_request_map(raw):
            others = {rid: v for rid, v in raw.items() if rid != req.request_id}
        elif isinstance(raw, Mapping) and isinstance(raw.get("request_id"), str) and raw["request_id"] != req.request_id:
            ApprovalDecision.parse(raw)
            others = {raw["request_id"]: raw}
        else:
            others = {}
        closing: list[EventDraft] = []  # events that close the other requests answered here
        if others:
            closing = self._close_others(thread_id, req, charter, others, new)
        result: Any = _NOT_MINE
        if mine is not None:
            result = _Answer(self._check_answer(req, mine, charter), _approver_of(mine))
        elif not others:
            ApprovalDecision.parse(raw)  # raises, naming the field
        if closing:
            # Recorded now, not when the other call runs: in a sync ToolNode a call the pool had not
            # started when this one paused is cancelled (Executor.map), and the answer must not wait
            # for its task's next run to count. That call finds the answer recorded (_await_answer).
            # Only once every answer in the value checked out, ours included.
            self._recorder.commit(thread_id, closing, None)
        return result

    def _close_others(
        self, thread_id: str, req: ApprovalRequest, charter: RunCharter | None, others: Mapping[str, Any], new: bool
    ) -> list[EventDraft]:
        """The events closing the other open requests a resume value answers; every answer in the
        value must be sound before LangGraph records it."""
        closing: list[EventDraft] = []
        open_, final = self._approval_requests(thread_id)
        for rid, payload in others.items():
            if rid in open_:
                other, call = open_[rid]
                closing += closing_drafts(call, other, self._check_answer(other, payload, charter), _approver_of(payload))
            elif new and rid in final:
                raise InvalidApprovalError(
                    f"approval field 'request_id': request {rid!r} was already decided; an approval is used once "
                    f"(the pending request here is {req.request_id!r} for {req.tool!r})",
                    field="request_id", reason="reused",
                )
            elif new:
                raise InvalidApprovalError(
                    f"approval field 'request_id': unknown approval request {rid!r} on thread {req.thread_id!r}; the pending request for "
                    f"{req.tool!r} (call {req.tool_call_id}) is {req.request_id!r}",
                    field="request_id", reason="unknown_request",
                )
        return closing

    def _check_answer(self, req: ApprovalRequest, value: Any, charter: RunCharter | None) -> ApprovalDecision | None:
        """``value`` parsed and checked against ``req``; ``None`` if it is sound but came after expiry."""
        answer = ApprovalDecision.parse(value)
        if answer.request_id != req.request_id:
            raise InvalidApprovalError(
                f"approval field 'request_id': this approval answers request {answer.request_id!r}, but the pending request for "
                f"{req.tool!r} (call {req.tool_call_id}) is {req.request_id!r}",
                field="request_id", reason="wrong_request",
            )
        if answer.action_digest != req.action_digest:
            raise InvalidApprovalError(
                f"approval field 'action_digest': the approval is for action {answer.action_digest}, not the pending action {req.action_digest} "
                "(different or altered tool, arguments, thread or call)",
                field="action_digest", reason="wrong_digest",
            )
        if req.separation_of_duties and charter is not None and answer.approver_is(charter.owner, self._settings.workload_id):
            raise InvalidApprovalError(
                f"approval field 'approver': separation of duties: {answer.approver!r} owns or runs this {req.risk_tier}-risk run and cannot "
                "approve its actions; ask another person",
                field="approver", reason="separation_of_duties",
            )
        if req.requires_signature or answer.signature is not None:
            self._check_signature(req, answer)
        if req.expired:
            return None
        return answer

    def _check_signature(self, req: ApprovalRequest, answer: ApprovalDecision) -> None:
        """A signed answer verifies with its approver's registered key (required on some tiers)."""
        keys = self._settings.approver_keys
        public = keys.get(answer.approver)
        if public is None:  # registered under another spelling of the same identity
            public = next((k for name, k in keys.items() if same_identity(name, answer.approver)), None)
        if answer.signature is None:
            raise InvalidApprovalError(
                f"approval field 'signature': this {req.risk_tier}-risk run requires signed approvals; {answer.approver!r} sent an unsigned one "
                "(sign it: approve(request, name, key=signing_key))",
                field="signature", reason="unsigned",
            )
        if public is None:
            raise InvalidApprovalError(
                f"approval field 'signature': approver {answer.approver!r} has no registered key; signed approvals are checked against "
                "approver_keys (Warden(..., approver_keys={name: public_key}))",
                field="signature", reason="bad_signature",
            )
        if answer.key_id != key_id_for(public) or not answer.signature_valid(public):
            raise InvalidApprovalError(
                f"approval field 'signature': the signature of {answer.approver!r} does not verify with their registered key",
                field="signature", reason="bad_signature",
            )
