"""Around a call's side effect: its credential lease, ``tool.started`` before it, and
``tool.completed``/``tool.failed``/``tool.suspended`` after it; and reading a recorded result
back for a replay.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from typing import Any, cast

from langchain_core.messages import ToolMessage
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.types import Command

from langgraph_warden import canonical, redaction
from langgraph_warden.errors import IntegrityError, LedgerAppendError
from langgraph_warden.event_payloads import ToolCompleted
from langgraph_warden.events import Event, EventDraft, EventKind, Watermark

from .call_plan import Plan
from .credentials import Lease, lease_secrets
from .credentials.broker import RecordWith
from .guard_settings import GuardSettings
from .recorder import Recorder
from .thread_view import _CLAIM_KINDS

__all__ = ["Outcomes"]


class _AsyncNull:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


class Outcomes:
    """Records what a call did, and reads back what a completed call returned."""

    def __init__(self, settings: GuardSettings, recorder: Recorder) -> None:
        self._settings = settings
        self._recorder = recorder
        self._serde = JsonPlusSerializer()
        self._start_with_lease: tuple[tuple[int, int], bool] | None = None

    # ------------------------------------------------------------- credential
    @staticmethod
    def _scopes(plan: Plan) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
        granted = tuple(plan.decision.scopes) if plan.decision else ()
        needed = tuple(plan.spec.scopes) if plan.spec and plan.spec.scopes else None
        return granted, needed

    def wants_credential(self, plan: Plan) -> bool:
        granted, needed = self._scopes(plan)
        return self._settings.broker is not None and bool(granted or needed)

    @staticmethod
    def _ttl(plan: Plan) -> int | None:
        ttl = plan.decision.ttl_seconds if plan.decision and plan.decision.ttl_seconds else None
        if plan.profile is not None:
            ttl = min(ttl or plan.profile.max_credential_ttl_seconds, plan.profile.max_credential_ttl_seconds)
        return ttl

    def _lease_args(self, plan: Plan) -> tuple[tuple[Any, ...], dict[str, Any]]:
        granted, needed = self._scopes(plan)
        return (plan.thread_id, plan.tool_call_id, plan.tool, granted, needed), {"decision_ttl_seconds": self._ttl(plan)}

    def records_start_with_lease(self) -> bool:
        """Whether a call's lease is recorded with its ``tool.started`` (and its decision) in one
        transaction: the broker's lease store writes in the guard's ledger's transactions.
        Asked once per broker and lease store (it compares database URLs)."""
        broker = self._settings.broker
        if broker is None:
            return False
        key = (id(broker), id(broker.lease_store))
        if self._start_with_lease is None or self._start_with_lease[0] != key:
            self._start_with_lease = (key, broker.records_with(self._settings.guard_sink))
        return self._start_with_lease[1]

    def lease(self, plan: Plan) -> AbstractContextManager[Lease | None]:
        """The call's just-in-time credential, revoked on exit (none if it needs none).

        Where the lease store writes in the ledger's transactions, issuing it commits the lease
        row, ``credential.issued`` and the call's ``tool.started`` (after its deferred decision)
        together: one transaction, where recording them apart took three. The call is then
        claimed when the credential is recorded, and :meth:`started` has nothing left to do.
        """
        broker = self._settings.broker
        if broker is None or not self.wants_credential(plan):
            return nullcontext(None)
        args, kwargs = self._lease_args(plan)
        if self.records_start_with_lease():
            return broker.lease(*args, **kwargs, record_with=self._start_with(plan))
        return broker.lease(*args, **kwargs)

    def alease(self, plan: Plan) -> AbstractAsyncContextManager[Lease | None]:
        """:meth:`lease` for the async hook. A step cancelled while its lease (and, recorded with it,
        its ``tool.started``) was being committed gets ``tool.failed`` before the lease is revoked:
        the tool never ran, so the call is a failed attempt, not one in doubt."""
        broker = self._settings.broker
        if broker is None or not self.wants_credential(plan):
            return _AsyncNull()
        args, kwargs = self._lease_args(plan)
        if self.records_start_with_lease():
            return broker.alease(
                *args, **kwargs, record_with=self._start_with(plan), on_cancelled_issue=lambda lease: self._never_ran(plan, lease),
            )
        return broker.alease(*args, **kwargs)

    def _start_with(self, plan: Plan) -> RecordWith:
        """The broker's ``record_with``: the lease and its ``credential.issued`` go into ``tool.started``'s transaction."""
        return lambda lease, drafts, rows: self._started(plan, lease, drafts, rows)

    def _never_ran(self, plan: Plan, lease: Lease) -> None:
        if plan.started:
            self.failed(plan, asyncio.CancelledError("cancelled before the tool ran"), lease)

    # ------------------------------------------------------------- before the side effect
    def started(self, plan: Plan, lease: Lease | None) -> None:
        """Committed before the side effect: if this append fails, the tool does not run. It claims the
        call: it commits only if no other attempt of it started or ended since its record was read.
        Already done when the call's lease was recorded with it (see :meth:`lease`)."""
        if not plan.started:
            self._started(plan, lease)

    def _started(
        self, plan: Plan, lease: Lease | None, before: list[EventDraft] | None = None, rows: Callable[[Any], None] | None = None
    ) -> None:
        """``tool.started``, after the call's deferred decision and ``before`` (its ``credential.issued``),
        with ``rows`` (its lease row) in the same transaction."""
        self._recorder.append(
            plan.thread_id,
            EventKind.TOOL_STARTED,
            plan.tool_call_id,
            claim=Watermark(plan.claim_seq, _CLAIM_KINDS, subject=plan.tool_call_id),
            before=before or (),
            rows=rows,
            payload={
                **plan.base(),
                "executed_args_digest": plan.executed_args_digest,
                "decision_id": plan.decision.decision_id if plan.decision else None,
                "policy_input_digest": plan.decision.input_digest if plan.decision else None,
                "approval_request_id": plan.approval_request_id,
                "lease_id": lease.lease_id if lease is not None else None,
                "origin": {**plan.origin.to_dict(), "durable": plan.origin_durable} if plan.origin is not None else None,
                "retry_of": plan.retry_of,
            },
        )
        plan.started = True

    def await_origin(self, plan: Plan) -> None:
        """``"async"`` durability: wait until the checkpoint the call came from is committed, so that
        a crash after the side effect leaves the model's message (and the call's id) durable.

        Fail closed: if it is not committed within ``origin_timeout`` the tool does not run.
        """
        o = plan.origin
        if o is None or o.durability == "exit" or not o.same_ledger:
            return
        sink = self._settings.guard_sink
        if o.durability != "async":  # "sync": LangGraph saved it before the step; say so if it is there
            plan.origin_durable = sink.checkpoint_durable(plan.thread_id, o.checkpoint_ns, o.checkpoint_id)
            return
        timeout = self._settings.origin_timeout
        durable = sink.wait_for_checkpoint(plan.thread_id, o.checkpoint_ns, o.checkpoint_id, timeout)
        if durable is None:  # the sink cannot tell: nothing to wait for
            return
        plan.origin_durable = durable
        if not durable:
            raise LedgerAppendError(
                f"the checkpoint {o.checkpoint_id!r} that call {plan.tool_call_id!r} ({plan.tool!r}) came from was not "
                f"saved within {timeout:g}s, so a crash could lose the call's id; the tool was not run. "
                "Check the database, or run the graph with durability='sync'."
            )

    async def aawait_origin(self, plan: Plan) -> None:
        """:meth:`await_origin` without holding a worker thread: LangGraph's background save of that
        checkpoint needs one (``asyncio.to_thread``), and parallel calls waiting in threads could
        take them all. Polls this process's verified view (its commits extend it); the database
        is asked every ~50 ms in a thread."""
        o = plan.origin
        if o is None or o.durability != "async" or not o.same_ledger or not self._settings.guard_sink.waits_for_checkpoints:
            await asyncio.to_thread(self.await_origin, plan)  # "sync" and the rest: no wait, only a note
            return
        sink = self._settings.guard_sink
        deadline = time.monotonic() + self._settings.origin_timeout
        delay, asked = 0.0005, time.monotonic()
        while True:
            known = sink.trusted_latest(plan.thread_id, o.checkpoint_ns)
            if known is not None and known[1] is not None and known[1] >= o.checkpoint_id:
                plan.origin_durable = True
                return
            now = time.monotonic()
            if now - asked >= 0.05 or now >= deadline:
                asked = now
                if await asyncio.to_thread(sink.checkpoint_durable, plan.thread_id, o.checkpoint_ns, o.checkpoint_id):
                    plan.origin_durable = True
                    return
                if now >= deadline:
                    await asyncio.to_thread(self.await_origin, plan)  # raises, with the message
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.01)

    # ------------------------------------------------------------- after the side effect
    def suspended(self, plan: Plan) -> None:
        self._recorder.append(plan.thread_id, EventKind.TOOL_SUSPENDED, plan.tool_call_id, plan.base())

    def failed(self, plan: Plan, exc: BaseException, lease: Lease | None) -> None:
        self._recorder.append(
            plan.thread_id,
            EventKind.TOOL_FAILED,
            plan.tool_call_id,
            {
                **plan.base(),
                "error_type": type(exc).__name__,
                # without the step's credential or any other live secret; scrubbed whole, then cut
                "error": redaction.scrub_text(str(exc), extra=lease_secrets(lease))[:2000],
                "lease_id": lease.lease_id if lease is not None else None,
            },
        )

    def completed(self, plan: Plan, result: ToolMessage | Command, lease: Lease | None) -> ToolMessage | Command:
        """Record the result (queued, see Recorder.record_outcome) and return it, scrubbed."""
        # The result goes to the model, the state and the record: none may carry the credential (or any
        # other live secret), however deep in a Command or artifact. Scrubbed before it is digested.
        result = redaction.scrub_value(result, extra=lease_secrets(lease))
        type_, data = self._serde.dumps_typed(result)
        data = redaction.scrub_blob(type_, data)
        is_error = isinstance(result, ToolMessage) and result.status == "error"
        preview = result.content if isinstance(result, ToolMessage) and isinstance(result.content, str) else type(result).__name__
        lease_id = lease.lease_id if lease is not None else None
        if is_error:
            # ToolNode turned the tool's exception into an error message: a failed attempt, result returned as is.
            self._recorder.record_outcome(
                plan.thread_id,
                EventKind.TOOL_FAILED,
                plan.tool_call_id,
                {**plan.base(), "error_type": "ToolError", "error": preview[:2000], "lease_id": lease_id},
                plan.flight,
            )
            return result
        payload = {
            **plan.base(),
            "status": "success",
            "result_digest": canonical.digest_bytes(data),
            "result": {"type": type_, "data": data},
            "preview": preview[:300],
            "lease_id": lease_id,
        }
        self._recorder.record_outcome(plan.thread_id, EventKind.TOOL_COMPLETED, plan.tool_call_id, payload, plan.flight)
        return result

    # ------------------------------------------------------------- replay
    def completed_event(self, thread_id: str, tool_call_id: str, seq: int, hash_: str = "") -> Event:
        """The ``tool.completed`` event at ``seq`` (views keep its seq and hash, not the recorded result).

        Read as one row checked against the hash the verified read saw (``event_at``), so a result
        edited in the database since is refused, not replayed.
        """
        sink = self._settings.guard_sink
        if hash_:
            return sink.event_at(thread_id, seq, hash_)
        for e in sink.events(thread_id, kinds=(EventKind.TOOL_COMPLETED,), subject=tool_call_id, after_seq=seq - 1):
            if e.seq == seq:
                return e
        raise IntegrityError(
            f"tool.completed of call {tool_call_id!r} (seq {seq}) is no longer in the history of thread {thread_id!r}",
            thread_id=thread_id, seq=seq, reason="missing_event",
        )

    def load_result(self, completed: Event) -> ToolMessage | Command:
        r = cast(ToolCompleted, completed.payload)["result"]
        return self._serde.loads_typed((r["type"], r["data"]))

