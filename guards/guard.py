"""The tool guard: authorise, credential, record and de-duplicate every tool call.

Plug it into LangGraph's own hook, sync and async, without touching the tools::

    node = ToolNode(tools, wrap_tool_call=guard, awrap_tool_call=guard.awrap)

or use :class:`~langgraph_warden.guards.middleware.WardenMiddleware` with
``langchain.agents.create_agent``. Per call (see DESIGN.md, "One tool call"):

1. **exactly once** — a call already completed on this thread (same tool call
   id and argument digest) returns its recorded result and appends
   ``tool.replayed``; the tool is not called again. A call found started but
   never finished is *in doubt*: it is recorded ``tool.aborted`` and re-run only
   if the tool is idempotent, the policy allows it (obligation
   ``retry_in_doubt``) or a person approves the retry;
2. **policy** — one versioned input document → ``policy.decided``. The calls of one
   thread are decided one at a time, each on a history holding the decisions made
   before it, recorded or not yet (parallel calls of one step cannot overrun a limit);
3. **deny** → ``tool.denied`` and an error ``ToolMessage`` with the reasons;
   **needs approval** → ``interrupt(ApprovalRequest)``, checked on resume;
4. **credential** — a just-in-time lease for exactly this step;
5. ``tool.started`` is committed *before* the side effect; then
   ``tool.completed`` (with the result) or ``tool.failed``, queued without waiting
   for its fsync (its loss in a crash leaves the call in doubt, see ``_record_outcome``);
6. the credential is revoked in ``finally``.

Fail closed: if the ledger cannot record ``tool.started`` the tool does not run.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, Literal

from langchain_core.messages import ToolMessage
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.errors import GraphBubbleUp
from langgraph.types import Command, interrupt
from pydantic import PlainValidator, WithJsonSchema

from langgraph_warden import canonical, redaction
from langgraph_warden.charter import TIER_PROFILES, RunCharter, TierProfile
from langgraph_warden.errors import (
    CallInProgressError,
    ConfigurationError,
    IntegrityError,
    LedgerAppendError,
    UnseenEventsError,
)
from langgraph_warden.events import (
    Event,
    EventDraft,
    EventKind,
    EventSink,
    EventSummary,
    Watermark,
    waits_for_checkpoints,
)
from langgraph_warden.keys import key_id_for

from .approval import (
    ApprovalDecision,
    ApprovalRequest,
    InvalidApprovalError,
    action_digest,
    is_request_map,
    same_identity,
)
from .credentials import CredentialBroker, CredentialError, Lease, lease_secrets
from .hitl import HITL_RESPONSE_JSON_SCHEMA, bind_resume, hitl_request
from .run_charter import authenticated_user

if TYPE_CHECKING:
    from langgraph_warden.checkpointers.claims import CallClaims
from .policy import PolicyDecision, PolicyEngine, build_policy_input, fail_closed
from .retries import Origin, SeenCalls, origin_of, seen_calls
from .thread_view import (
    _APPROVAL_FINAL,
    _CLAIM_KINDS,
    _RECORD_KINDS,
    _TAKEOVER_KINDS,
    _VIEW_CACHE_SIZE,
    _VIEW_KINDS,
    VIEW_SNAPSHOT,
    VIEW_SNAPSHOT_EVERY,
    VIEW_SNAPSHOT_SUBJECT,
    _CallRecord,
    _history_decision,
    _ThreadSnapshot,
    _ThreadView,
    snapshot_draft,
)
from .tools import ToolRegistry, ToolSpec, UnknownTools, check_unknown_tools, deny_undeclared

__all__ = ["ToolGuard", "CHARTER_CONFIG_KEY", "GuardMode"]

log = logging.getLogger(__name__)

#: ``config["configurable"][CHARTER_CONFIG_KEY]`` may carry a charter dict for a new run.
CHARTER_CONFIG_KEY = "warden_charter"

GuardMode = Literal["enforce", "monitor"]

def _now() -> datetime:
    return datetime.now(UTC)


class _Flight:
    """A call this process owns: its in-flight entry and, while held, its cross-process lock."""

    __slots__ = ("key", "done", "release")

    def __init__(self, key: tuple[str, str, str], done: threading.Event) -> None:
        self.key = key
        self.done = done
        self.release: Callable[[], None] | None = None

    def take_release(self) -> Callable[[], None] | None:
        """Hand the cross-process lock's release to the caller (once)."""
        release, self.release = self.release, None
        return release


@dataclass(frozen=True, slots=True)
class _Retry:
    """An earlier call (``tool_call_id``) that a new call retries under a new id (see guards/retries.py)."""

    tool_call_id: str
    record: _CallRecord
    #: "completed", "in_doubt" or "approved" (see _CallRecord.retry_status)
    status: str
    #: the seq the earlier call's record was read at: the takeover commits only if nothing of it changed since
    read_seq: int


def _once(fn: Callable[[], None]) -> Callable[[], None]:
    """``fn``, callable any number of times, run the first time only (a lock released once)."""
    lock = threading.Lock()
    pending = [fn]

    def run() -> None:
        with lock:
            todo = pending.pop() if pending else None
        if todo is not None:
            todo()

    return run


class _StaleDecision(Exception):
    """A decision made on this process's cached view was not recorded: the thread had newer events.

    Nothing was written and the tool did not run; the guard decides again on a fresh read.
    """


@dataclass(slots=True)
class _Plan:
    """Everything decided before the side effect; or a final answer that needs no execution."""

    final: ToolMessage | Command | None = None
    request: Any = None
    thread_id: str = ""
    tool_call_id: str = ""
    tool: str = ""
    args_digest: str = ""
    executed_args: Mapping[str, Any] | None = None
    executed_args_digest: str = ""
    attempt: int = 1
    decision: PolicyDecision | None = None
    spec: ToolSpec | None = None
    profile: TierProfile | None = None
    approval_request_id: str | None = None
    flight: Any = None
    #: The seq the call's record was read at: tool.started commits only if no other attempt of
    #: the call started, completed or failed after it (an atomic claim in the database).
    claim_seq: int = 0
    #: The checkpoint the call came from (see guards/retries.py) and the earlier call it retries.
    origin: Origin | None = None
    retry_of: str | None = None
    #: Whether the origin checkpoint was committed before tool.started (then the call's id survives a crash).
    origin_durable: bool = False


class ToolGuard:
    """The ``wrap_tool_call`` / ``awrap_tool_call`` guard for ToolNode and create_agent.

    Args:
        sink: where events go (the checkpointer's ledger).
        policy: the policy engine (embedded Rego, OPA server, Cedar).
        registry: per-tool metadata; undeclared tools reach the policy as unknown.
        workload_id: the agent workload's SPIFFE id (policy input and separation of duties).
        broker: issues a just-in-time credential per allowed call (optional).
        mode: ``"enforce"`` (default) blocks denied calls; ``"monitor"`` records
            decisions but never blocks (for rolling out a policy).
        approver_keys: approver name → Ed25519 public key, for authenticated approvals.
        default_charter: charter recorded for a thread that starts without one.
        claims: cross-process locks on tool calls (default: the sink's ``claims``): a call
            another live process is executing is waited for, then replayed; one whose process
            died is in doubt.
        unknown_tools: a call to a tool ``registry`` does not declare is ``"deny"``-ed whatever
            the policy answers (default: an allow-all policy cannot run an undeclared tool), or
            decided by the ``"policy"`` alone (it sees ``tool.known = false``).
        claim_timeout: how long (seconds) to wait for another process's live attempt before
            raising :class:`~langgraph_warden.errors.CallInProgressError` (nothing runs).
        origin_timeout: in LangGraph's ``"async"`` durability, how long (seconds) to wait for the
            checkpoint a call came from to be committed before its side effect (see
            guards/retries.py); past it the tool does not run.
    """

    def __init__(
        self,
        sink: EventSink,
        policy: PolicyEngine,
        registry: ToolRegistry | None = None,
        *,
        workload_id: str,
        broker: CredentialBroker | None = None,
        mode: GuardMode = "enforce",
        approver_keys: Mapping[str, bytes] | None = None,
        default_charter: RunCharter | None = None,
        claims: CallClaims | None = None,
        claim_timeout: float = 300.0,
        origin_timeout: float = 30.0,
        unknown_tools: UnknownTools = "deny",
    ) -> None:
        if mode not in ("enforce", "monitor"):
            raise ConfigurationError(f"mode {mode!r} is unknown; use 'enforce' or 'monitor'")
        self.unknown_tools: UnknownTools = check_unknown_tools(unknown_tools)
        self.sink = sink
        self.policy = policy
        self.registry = registry if registry is not None else ToolRegistry()
        self.workload_id = workload_id
        self.broker = broker
        self.mode = mode
        self.approver_keys = dict(approver_keys or {})
        self.default_charter = default_charter
        #: Reads a new thread's charter from its run config instead of ``warden_charter`` (Agent Server:
        #: :func:`~langgraph_warden.guards.run_charter.charter_from_run`); ``charter_hint`` says where it goes.
        self.charter_source: Callable[[Mapping[str, Any]], RunCharter | None] | None = None
        self.charter_hint: str | None = None
        self._serde = JsonPlusSerializer()
        self._views: OrderedDict[str, _ThreadView] = OrderedDict()
        self._views_lock = threading.Lock()
        #: One live attempt per call across processes (the ledger's locks); None: this process only.
        self.claims: CallClaims | None = claims if claims is not None else getattr(sink, "claims", None)
        self.claim_timeout = claim_timeout
        self.origin_timeout = origin_timeout
        self._inflight: dict[tuple[str, str, str], threading.Event] = {}
        self._inflight_lock = threading.Lock()
        self._deferred: dict[tuple[str, str], tuple[list[EventDraft], Watermark | None]] = {}
        self._deferred_lock = threading.Lock()

    # ---------------------------------------------------------------- hooks
    def __call__(
        self, request: Any, execute: Callable[[Any], ToolMessage | Command]
    ) -> ToolMessage | Command:
        """Sync hook: ``ToolNode(tools, wrap_tool_call=guard)``."""
        try:
            return self._call(request, execute, trust=True)
        except _StaleDecision:
            # Decided on this process's view of the thread, which another writer had moved past:
            # nothing was recorded and the tool did not run. Decide again on a fresh read.
            return self._call(request, execute, trust=False)

    wrap_tool_call = __call__

    def _call(
        self, request: Any, execute: Callable[[Any], ToolMessage | Command], *, trust: bool
    ) -> ToolMessage | Command:
        plan = self._prepare(request, trust)
        if plan.final is not None:
            return plan.final
        entered = False
        try:
            with self._lease_cm(plan) as lease:
                entered = True
                self._await_origin(plan)
                self._started(plan, lease)
                try:
                    result = execute(plan.request)
                except GraphBubbleUp:
                    self._suspended(plan)
                    raise
                except BaseException as exc:
                    self._failed(plan, exc, lease)
                    raise
                return self._completed(plan, result, lease)
        except CredentialError as exc:
            if entered:
                raise
            return self._credential_refused(plan, exc)
        finally:
            self._land(plan.flight)

    async def awrap(
        self, request: Any, execute: Callable[[Any], Awaitable[ToolMessage | Command]]
    ) -> ToolMessage | Command:
        """Async hook: ``ToolNode(tools, awrap_tool_call=guard.awrap)``.

        The blocking steps run in worker threads, which a cancelled task cannot stop; each is
        shielded and, on cancellation, awaited to its end and settled (see ``_settled``).
        """
        try:
            return await self._acall(request, execute, trust=True)
        except _StaleDecision:  # see __call__
            return await self._acall(request, execute, trust=False)

    awrap_tool_call = awrap

    async def _acall(
        self, request: Any, execute: Callable[[Any], Awaitable[ToolMessage | Command]], *, trust: bool
    ) -> ToolMessage | Command:
        preparing = asyncio.ensure_future(asyncio.to_thread(self._prepare, request, trust))
        try:
            plan = await asyncio.shield(preparing)
        except asyncio.CancelledError:
            # The call was claimed in this process: release it, or a resume of it here would wait
            # for a call nobody runs. A decision not yet recorded is recorded now.
            if await self._settled(preparing) and (plan := preparing.result()).final is None:
                await asyncio.shield(asyncio.to_thread(self._flush, plan.thread_id, plan.tool_call_id))
                self._land(plan.flight)
            raise
        if plan.final is not None:
            return plan.final
        entered = False
        try:
            async with self._alease_cm(plan) as lease:
                entered = True
                await self._aawait_origin(plan)
                starting = asyncio.ensure_future(asyncio.to_thread(self._started, plan, lease))
                try:
                    await asyncio.shield(starting)
                except asyncio.CancelledError:
                    if await self._settled(starting):
                        # tool.started is durable but the tool never ran: say so, so that the call is
                        # a failed attempt (safe to retry), not one in doubt.
                        await asyncio.shield(asyncio.to_thread(
                            self._failed, plan, asyncio.CancelledError("cancelled before the tool ran"), lease))
                    raise
                try:
                    result = await execute(plan.request)
                except GraphBubbleUp:
                    await asyncio.to_thread(self._suspended, plan)
                    raise
                except BaseException as exc:
                    # In a worker thread (a blocking write on the loop can deadlock SQLite against
                    # LangGraph's background checkpoint write), shielded so cancellation cannot skip it.
                    await asyncio.shield(asyncio.to_thread(self._failed, plan, exc, lease))
                    raise
                return await asyncio.to_thread(self._completed, plan, result, lease)
        except CredentialError as exc:
            if entered:
                raise
            return await asyncio.to_thread(self._credential_refused, plan, exc)
        finally:
            self._land(plan.flight)

    async def _aawait_origin(self, plan: _Plan) -> None:
        """:meth:`_await_origin` without holding a worker thread: LangGraph's background save of that
        checkpoint needs one (``asyncio.to_thread``), and parallel calls waiting in threads could
        take them all. Polls this process's verified view (its commits extend it); the database
        is asked every ~50 ms in a thread."""
        o = plan.origin
        if o is None or o.durability != "async" or not o.same_ledger or not waits_for_checkpoints(self.sink):
            await asyncio.to_thread(self._await_origin, plan)  # "sync" and the rest: no wait, only a note
            return
        deadline = time.monotonic() + self.origin_timeout
        delay, asked = 0.0005, time.monotonic()
        latest = getattr(self.sink, "trusted_latest", None)
        while True:
            known = latest(plan.thread_id, o.checkpoint_ns) if latest is not None else None
            if known is not None and known[1] is not None and known[1] >= o.checkpoint_id:
                plan.origin_durable = True
                return
            now = time.monotonic()
            if now - asked >= 0.05 or now >= deadline:
                asked = now
                if await asyncio.to_thread(self.sink.checkpoint_durable, plan.thread_id, o.checkpoint_ns, o.checkpoint_id):
                    plan.origin_durable = True
                    return
                if now >= deadline:
                    await asyncio.to_thread(self._await_origin, plan)  # raises, with the message
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.01)

    @staticmethod
    async def _settled(work: asyncio.Future[Any]) -> bool:
        """After a cancellation: wait for ``work`` (a worker thread) to end; whether it succeeded."""
        try:
            await work
        except BaseException:  # noqa: BLE001 - its own failure is recorded where it happened
            return False
        return True

    # ------------------------------------------------------------- in flight
    # Calls executing in *this* process. LangGraph's async ToolNode gathers a message's calls and
    # returns on the first interrupt while siblings still run; a resume must wait for them rather
    # than mistake a live call for one cut off by a crash ("in doubt").
    def _claim(self, key: tuple[str, str, str], timeout: float = 600.0) -> _Flight:
        """Wait for any in-flight handling of this call in this process, then own it; then hold the
        call's cross-process lock (waiting while another live process runs it)."""
        while True:
            with self._inflight_lock:
                current = self._inflight.get(key)
                if current is None:
                    done = self._inflight[key] = threading.Event()
                    break
            if not current.wait(timeout):
                raise TimeoutError(f"tool call {key[1]!r} on thread {key[0]!r} is still being handled after {timeout}s")
        flight = _Flight(key, done)
        if self.claims is not None:
            thread_id, tool_call_id = key[0], key[1]
            try:
                held = self.claims.acquire(thread_id, tool_call_id, self.claim_timeout)
            except BaseException:
                self._land(flight)
                raise
            if not held:
                self._land(flight)
                raise CallInProgressError(
                    f"tool call {tool_call_id!r} on thread {thread_id!r} is being executed by another live process "
                    f"and did not finish within {self.claim_timeout:g}s; nothing was run here. Resume the run later: "
                    "its recorded outcome will be replayed, not executed again."
                )
            flight.release = partial(self.claims.release, thread_id, tool_call_id)
        return flight

    def _land(self, flight: _Flight | None) -> None:
        if flight is None:
            return
        release = flight.take_release()
        if release is not None:
            release()
        key, done = flight.key, flight.done
        view = self._views.get(key[0])
        if view is not None and view.decided_here:
            with view.lock:
                view.decided_here.pop(key[1], None)
        with self._inflight_lock:
            if self._inflight.get(key) is done:
                del self._inflight[key]
        done.set()

    def _in_flight_here(self, thread_id: str, tool_call_id: str) -> bool:
        with self._inflight_lock:
            return any(key[0] == thread_id and key[1] == tool_call_id for key in self._inflight)

    def _alone(self, thread_id: str) -> bool:
        """Whether at most one call of the thread (the caller's) is in flight in this process."""
        with self._inflight_lock:
            return sum(1 for key in self._inflight if key[0] == thread_id) <= 1

    # -------------------------------------------------------------- helpers
    def _note_decision(self, thread_id: str, tool_call_id: str, tool: str, decision: PolicyDecision) -> None:
        """Count ``decision`` in the thread's history from now on (see _ThreadView.decided_here)."""
        view = self._view_of(thread_id)
        entry = {"tool": tool, "decision": _history_decision(decision.allow, decision.require_approval),
                 "outcome": None, "ts": canonical.datetime_text(_now())}
        with view.lock:
            view.decided_here[tool_call_id] = entry

    def _drafts(
        self, thread_id: str, tool_call_id: str | None, drafts: list[EventDraft]
    ) -> tuple[list[EventDraft], Watermark | None]:
        """``drafts`` about one call, preceded (same transaction, one signature) by the call's
        deferred drafts, and the watermark a deferred decision was made on (see :meth:`_commit`)."""
        deferred, decided_on = self._take_deferred(thread_id, tool_call_id)
        return deferred + drafts, decided_on

    def _append(
        self, thread_id: str, kind: str, tool_call_id: str | None, payload: Mapping[str, Any], claim: Watermark | None = None
    ) -> Event:
        """Append one event (with the call's deferred drafts); durable when this returns."""
        draft = EventDraft(kind=kind, payload=payload, subject=tool_call_id)
        return self._commit(thread_id, *self._drafts(thread_id, tool_call_id, [draft]), claim=claim)[-1]

    def _commit(
        self, thread_id: str, drafts: list[EventDraft], decided_on: Watermark | None, *, claim: Watermark | None = None
    ) -> list[Event]:
        """Append, keeping the thread's view current where the ledger vouches for it (see _ThreadView).

        ``decided_on``: the drafts carry a policy decision made on a view taken without reading
        the ledger at that watermark. If the thread has newer events, nothing is written and
        ``_StaleDecision`` is raised: the caller decides again on a fresh read.
        ``claim``: a condition the append must meet in any case (an attempt's claim on its call);
        if it does not, nothing is written and ``_StaleDecision`` is raised.
        """
        view = self._views.get(thread_id) if self._watermarks else None
        if view is None:
            if decided_on is not None or claim is not None:  # the view was dropped from the cache meanwhile
                try:
                    return self.sink.append(thread_id, drafts, seen=decided_on or claim)
                except UnseenEventsError:
                    raise _StaleDecision() from None
            events = self.sink.append(thread_id, drafts)
            if self._watermarks and events and events[0].seq == 1:
                # The thread's first events: this guard knows its whole history.
                view = self._view_of(thread_id)
                with view.lock:
                    if not view.last_seq and not view.pending:
                        view.absorb(events, True)
                        view.current = True
            return events
        with view.lock:
            vouched = view.vouch_for(drafts)  # noted even when the decision brings its own watermark
        seen = decided_on or vouched
        current = seen is not None
        if current:
            try:
                events = self.sink.append(thread_id, drafts, seen=seen)
            except UnseenEventsError as exc:
                if decided_on is not None:
                    this_call = drafts[-1].subject
                    with view.lock:
                        siblings = exc.complete and all(
                            subject is not None and subject != this_call and subject in view.own
                            for _, _, subject in exc.found
                        )
                        if not siblings:
                            view.current = False
                    if not siblings:
                        raise _StaleDecision() from None
                    # What is new is only about other calls this guard handled alongside this one (parallel
                    # tool calls of one step): each was decided before this one, and counted in its history,
                    # or after it (see _ThreadView.deciding); what they did next is not this decision's input.
                    return self._commit(thread_id, drafts, None, claim=claim)
                current = False
        if not current:
            if claim is not None:
                try:
                    events = self.sink.append(thread_id, drafts, seen=claim)
                except UnseenEventsError:
                    with view.lock:
                        view.current = False
                    raise _StaleDecision() from None
            else:
                events = self.sink.append(thread_id, drafts)
        with view.lock:
            view.absorb(events, current)
        return events

    @property
    def _watermarks(self) -> bool:
        return getattr(self.sink, "supports_watermarks", False) is True

    def _record_outcome(
        self, thread_id: str, kind: str, tool_call_id: str, payload: Mapping[str, Any], flight: _Flight | None = None
    ) -> None:
        """Record a call's outcome (``tool.completed``/``tool.failed``) without waiting for its commit.

        Safe because its absence is already a handled state: a call with ``tool.started`` and no
        outcome is *in doubt*, which is what a crash during the tool leaves too. The sink commits
        it before anything this process writes or reads afterwards (the checkpoint holding the
        tool's result, the next call's view, a replay), so only a crash can lose it. Saves one
        durable commit (an fsync) on the tool call's path.
        """
        soon = getattr(self.sink, "append_soon", None)  # a DeferringEventSink
        drafts, decided_on = self._drafts(thread_id, tool_call_id, [EventDraft(kind=kind, payload=payload, subject=tool_call_id)])
        view = self._views.get(thread_id) if self._watermarks else None
        if soon is None or decided_on is not None:
            self._commit(thread_id, drafts, decided_on)
            return
        # The call's cross-process lock is released once the outcome is committed, not before: a
        # worker waiting for it must find the outcome, not an attempt that looks cut off.
        release = flight.take_release() if flight is not None else None
        if view is None:
            self._soon(soon, thread_id, drafts, None, release, None)
            return
        with view.lock:
            seen = view.vouch_for(drafts)
            view.pending += 1  # mark() vouches for nothing until the commit is taken in
        try:
            self._soon(soon, thread_id, drafts, seen, release, view)
        except BaseException:
            with view.lock:
                view.pending -= 1
            raise

    @staticmethod
    def _soon(
        soon: Callable[..., None], thread_id: str, drafts: list[EventDraft], seen: Watermark | None,
        release: Callable[[], None] | None, view: _ThreadView | None,
    ) -> None:
        """``append_soon``, posting the commit to ``view`` and releasing the call's lock when it settles.

        The ledger calls back from the committing thread: just post (deque.append is atomic) and
        release (a non-blocking unlock)."""
        if release is not None:
            release = _once(release)

        def settled(events: list[Event] | None, current: bool) -> None:
            try:
                if view is not None:
                    view.inbox.append((events, current and seen is not None))
            finally:
                if release is not None:
                    release()

        try:
            soon(thread_id, drafts, seen=seen, on_commit=settled)
        except BaseException:
            if release is not None:
                release()
            raise

    def _defer(
        self, thread_id: str, kind: str, tool_call_id: str, payload: Mapping[str, Any], decided_on: Watermark | None
    ) -> None:
        """Record ``kind`` with the call's next event rather than in a commit of its own.

        Used for ``policy.decided``: nothing depends on it being durable before the next event of
        the same call (deny, approval request or ``tool.started``), and one durable, signed commit
        per guarded call is saved. ``decided_on``: see :meth:`_commit`.
        """
        with self._deferred_lock:
            drafts, _ = self._deferred.get((thread_id, tool_call_id), ([], None))
            drafts.append(EventDraft(kind=kind, payload=payload, subject=tool_call_id))
            self._deferred[(thread_id, tool_call_id)] = (drafts, decided_on)

    def _take_deferred(self, thread_id: str, tool_call_id: str | None) -> tuple[list[EventDraft], Watermark | None]:
        if tool_call_id is None:
            return [], None
        with self._deferred_lock:
            return self._deferred.pop((thread_id, tool_call_id), ([], None))

    def _flush(self, thread_id: str, tool_call_id: str, *, redecide: bool = False) -> None:
        """Commit the call's deferred drafts now. ``redecide``: see :meth:`_commit`; otherwise a
        decision is recorded even if the thread moved on since it was made (it was made)."""
        drafts, decided_on = self._take_deferred(thread_id, tool_call_id)
        if drafts:
            try:
                self._commit(thread_id, drafts, decided_on)
            except _StaleDecision:
                if redecide:
                    raise
                self._commit(thread_id, drafts, None)

    def _prepare(self, request: Any, trust: bool = False) -> _Plan:
        """Everything before the side effect, for a call this process now owns (see ``_claim``).

        Deferred events are flushed if it ends without a further event. ``trust``: decide on
        this process's view of the thread without reading the ledger when the view is current.
        """
        call = request.tool_call
        thread_id = str((self._config(request).get("configurable") or {}).get("thread_id") or "")
        tool_call_id = str(call.get("id") or "")
        args_digest = canonical.digest(dict(call.get("args") or {}))
        flight = None
        if thread_id and tool_call_id:
            flight = self._claim((thread_id, tool_call_id, args_digest))
        try:
            # One decision at a time per thread (see _ThreadView.deciding); waiting for our own call
            # (_claim, above) happens before, so no call holds this while waiting for another.
            with self._view_of(thread_id).deciding if flight is not None else nullcontext():
                plan = self._prepare_call(request, args_digest, trust)
            if plan.final is None and plan.decision is not None and self._wants_credential(plan):
                # Credentials are issued (and recorded) after the decision: keep the history in that order.
                self._flush(thread_id, tool_call_id, redecide=True)
        except BaseException as exc:
            if not isinstance(exc, _StaleDecision):
                self._flush(thread_id, tool_call_id)
            self._land(flight)
            raise
        if plan.final is not None:
            self._flush(thread_id, tool_call_id)
            self._land(flight)
        else:
            plan.flight = flight
        return plan

    @staticmethod
    def _config(request: Any) -> Mapping[str, Any]:
        runtime = getattr(request, "runtime", None)
        config = getattr(runtime, "config", None)
        if not config:
            from langgraph.config import get_config

            config = get_config()
        return config

    def _view(self, thread_id: str, call: tuple[str, str] | None = None, *, trust: bool = False) -> _ThreadSnapshot:
        """This thread's charter, step history, approvals and (``call``) one call's record.

        At most one ledger read per call, refreshed incrementally: only events after the last one
        seen are read, so a long run does not re-decode its whole history on every call (other
        processes' events are picked up the same way). ``trust``: no read at all when the view is
        current and no other call of the thread is in flight here; the snapshot then carries the
        watermark its decision is recorded against (see :meth:`_commit`).
        """
        view = self._view_of(thread_id)
        with view.lock:
            if trust and self._watermarks and self._alone(thread_id):
                view.drain()
                flush = getattr(self.sink, "flush", None)
                if view.pending and flush is not None:  # an outcome this guard queued: commit it (a read would)
                    flush()
                seen = view.mark()
                if seen is not None:
                    self._snapshot_if_due(thread_id, view)
                    return view.snapshot(call, seen)
            if view.last_seq == 0 and not view.partial:
                self._restore(thread_id, view)
            view.fold(self._summaries(thread_id, view.last_seq))
            view.current = True
            view.drain()  # appends the read committed: folded in already
            if call is not None and call not in view.calls and view.may_hold(call[0]):
                self._load_call(thread_id, view, call)
            self._snapshot_if_due(thread_id, view)
            return view.snapshot(call)

    def _restore(self, thread_id: str, view: _ThreadView) -> None:
        """A first read starts at the thread's newest view snapshot (verified), not at genesis."""
        newest = getattr(self.sink, "newest_snapshot", None)
        if newest is None or view.input_version != 2:  # version 1 needs every entry: read them all
            return
        found = newest(thread_id, VIEW_SNAPSHOT, VIEW_SNAPSHOT_SUBJECT)
        if found is not None:
            view.restore(found[1], found[0])

    def _load_call(self, thread_id: str, view: _ThreadView, call: tuple[str, str]) -> None:
        """A call a restored view does not hold but the history may record (an old one): read its
        events (verified) into a record (caller holds ``view.lock``)."""
        rec = _CallRecord()
        for e in self.sink.events(thread_id, subject=call[0]):
            if e.kind in _RECORD_KINDS and e.payload.get("args_digest") == call[1]:
                rec.apply(e.summary())
        if rec.first_seq:
            view.calls[call] = rec

    def _snapshot_if_due(self, thread_id: str, view: _ThreadView) -> None:
        """Append a view snapshot when one is due and this guard alone holds the thread's view
        current (caller holds ``view.lock``). Best effort: a thread that moved on gets one later."""
        if (view.since_snapshot < VIEW_SNAPSHOT_EVERY or view.input_version != 2 or not view.current or view.pending
                or view.decided_here or not self._watermarks or not self._alone(thread_id)):
            return
        try:
            self.sink.append(thread_id, [snapshot_draft(view.snapshot_doc())], seen=Watermark(view.last_seq, _VIEW_KINDS))
        except UnseenEventsError:
            view.current = False
            return
        except Exception as exc:  # noqa: BLE001 - a snapshot is an optimisation: never fail the call for it
            log.warning("could not record a view snapshot of thread %r: %s: %s", thread_id, type(exc).__name__, exc)
            return
        view.since_snapshot = 0

    def _view_of(self, thread_id: str) -> _ThreadView:
        with self._views_lock:
            view = self._views.get(thread_id)
            if view is None:
                view = self._views[thread_id] = _ThreadView(
                    input_version=self._input_version, data_classes=self._data_classes_of)
                while len(self._views) > _VIEW_CACHE_SIZE:
                    self._views.popitem(last=False)
            else:
                self._views.move_to_end(thread_id)
        return view

    def record(self, thread_id: str, drafts: Sequence[EventDraft]) -> list[Event]:
        """Append events about a run through the guard (``Warden.start_run`` records the charter
        here), so that its view of the thread stays current without a read."""
        return self._commit(thread_id, list(drafts), None)

    def _summaries(self, thread_id: str, after_seq: int) -> list[EventSummary]:
        read = getattr(self.sink, "summaries", None)  # a SummarisingEventSink: no Event objects to build
        if read is not None:
            return read(thread_id, kinds=_VIEW_KINDS, after_seq=after_seq)
        return [e.summary() for e in self.sink.events(thread_id, kinds=_VIEW_KINDS, after_seq=after_seq)]

    def recorded_charter(self, thread_id: str) -> RunCharter | None:
        """The charter the thread's verified history records (``None``: none yet); records nothing."""
        return self._view(thread_id).charter

    def charter(self, thread_id: str, config: Mapping[str, Any] | None = None) -> RunCharter | None:
        """The thread's charter from its signed ``run.started`` event (recording one from config if new)."""
        return self._charter(thread_id, self._view(thread_id).charter, config)

    def _charter(self, thread_id: str, recorded: RunCharter | None, config: Mapping[str, Any] | None) -> RunCharter | None:
        if recorded is not None:
            return recorded
        doc = ((config or {}).get("configurable") or {}).get(CHARTER_CONFIG_KEY)
        if self.charter_source is not None:
            doc = charter = self.charter_source(config or {})
        else:
            charter = RunCharter.from_dict(doc) if isinstance(doc, Mapping) else (
                doc if isinstance(doc, RunCharter) else self.default_charter
            )
        if charter is None:
            return None
        self._append(
            thread_id,
            EventKind.RUN_STARTED,
            None,
            {"charter": charter.to_dict(), "workload_id": self.workload_id, "source": "run" if self.charter_source is not None else "config" if doc else "default"},
        )
        return charter

    def _decide(
        self, thread_id: str, tool: str, spec: ToolSpec | None, args: Mapping[str, Any], charter: RunCharter | None,
        view: _ThreadSnapshot,
    ) -> PolicyDecision:
        try:
            policy_input = build_policy_input(
                workload_id=self.workload_id,
                thread_id=thread_id,
                tool_name=tool,
                tool_spec=spec,
                args=args,
                owner=charter.owner if charter else None,
                intent=charter.intent if charter else None,
                purpose=canonical.encode(dict(charter.purpose)).decode() if charter and charter.purpose else None,
                risk_tier=charter.risk_tier if charter else "medium",
                allowed_tools=charter.allowed_tools if charter else None,
                allowed_data_classes=charter.allowed_data_classes if charter else None,
                history=view.history,
                approvals=view.approvals,
                profile=(charter.effective_profile if charter else TIER_PROFILES["medium"]).to_dict(),
                version=self._input_version,
            )
        except ConfigurationError as exc:
            return fail_closed(self.policy, {"tool": tool}, exc)
        decision = self.policy.decide(policy_input)
        if spec is None and self.unknown_tools == "deny":
            return deny_undeclared(decision)
        return decision

    @property
    def _input_version(self) -> int:
        """The policy input version the engine expects (2 unless it declares otherwise)."""
        return int(getattr(self.policy, "input_version", 2))

    def _data_classes_of(self, tool: str) -> tuple[str, ...]:
        spec = self.registry.get(tool)
        return tuple(spec.data_classes) if spec is not None and spec.data_classes else ()

    def _message(self, plan_or_call: Any, content: str, *, tool: str, tool_call_id: str) -> ToolMessage:
        return ToolMessage(content=content, name=tool, tool_call_id=tool_call_id, status="error")

    # ------------------------------------------------------------- prepare
    def _prepare_call(self, request: Any, args_digest: str, trust: bool = False) -> _Plan:
        call = request.tool_call
        tool_call_id = str(call.get("id") or "")
        tool = call["name"]
        args = dict(call.get("args") or {})
        config = self._config(request)
        thread_id = (config.get("configurable") or {}).get("thread_id")
        if not thread_id:
            raise ConfigurationError(
                "the guarded graph was invoked without config['configurable']['thread_id']; the guard records "
                "every call against its thread: graph.invoke(inputs, {'configurable': {'thread_id': '...'}})"
            )
        thread_id = str(thread_id)
        if not tool_call_id:
            raise ConfigurationError(f"tool call to {tool!r} has no id; exactly-once recording needs the tool call id")
        # One read: this call's record, the charter, the step history and prior approvals.
        view = self._view(thread_id, (tool_call_id, args_digest), trust=trust)
        rec = view.call
        base = dict(tool_call_id=tool_call_id, tool=tool, args_digest=args_digest)

        # 1. exactly once: completed → replay the recorded result.
        if rec.completed_seq is not None:
            completed = self._completed_event(thread_id, tool_call_id, rec.completed_seq, rec.completed_hash)
            self._append(
                thread_id,
                EventKind.TOOL_REPLAYED,
                tool_call_id,
                {**base, "completed_seq": completed.seq, "attempt": completed.payload["attempt"]},
            )
            return _Plan(final=self._load_result(completed))
        if rec.denied is not None and rec.in_doubt_attempt is None:
            # A re-run of a call already refused (its task re-executed after another call paused).
            return _Plan(final=self._message(None, rec.denied.payload["message"], tool=tool, tool_call_id=tool_call_id))

        charter = self._charter(thread_id, view.charter, config)
        profile = charter.effective_profile if charter else TIER_PROFILES["medium"]
        spec = self.registry.get(tool)
        origin = origin_of(config, self.sink)
        retry: _Retry | None = None
        if origin is not None and not rec.attempts and rec.decided is None and rec.approval_requested is None:
            found = self._find_retry(thread_id, tool, args_digest, tool_call_id, origin, request.state)
            if found is not None:
                retry, view = found
        in_doubt = rec.in_doubt_attempt
        if in_doubt is not None:
            if self.broker is not None:
                # The attempt's process is gone; so must be its credential (not left to expire).
                self.broker.revoke_call(thread_id, tool_call_id)
            self._append(
                thread_id,
                EventKind.TOOL_ABORTED,
                tool_call_id,
                {**base, "attempt": in_doubt, "why": "started but never completed (process died mid-call?)", "outcome": "unknown"},
            )
            rec.attempts[in_doubt] = "aborted"
            view = self._view(thread_id)  # the step history now shows the abort
        elif rec.attempts and rec.attempts[max(rec.attempts)] == "aborted":
            # An earlier resume recorded the abort but died before deciding the retry: still a retry of
            # an in-doubt attempt (not a fresh call), so the same rules apply.
            in_doubt = max(rec.attempts)

        if rec.approval_spent() and not (spec is not None and spec.idempotent) and self.mode == "enforce":
            # The recorded approval authorised the attempt that was cut off (the process may have died after
            # the side effect), not a retry of it: reusing it would run an approved irreversible action twice.
            return self._deny(
                thread_id, base, None, ["outcome_unknown"],
                f"The approved attempt of {tool!r} (call {tool_call_id}) started but never finished, so its outcome is "
                "unknown. The approval covered that attempt only, and the tool is not declared idempotent, so it was "
                "not retried; check the target system, then make a new call (it will ask for a new approval).",
            )

        if charter is None and self.mode == "enforce":
            return self._deny(
                thread_id, base, None, ["no_owner"],
                "Denied (no_owner): this run has no charter (owner, intent, risk tier). Start it with warden.start_run(...) or "
                f"config['configurable']['{CHARTER_CONFIG_KEY}']." + (f" {self.charter_hint}" if self.charter_hint else ""),
            )

        # 2. policy (a decision awaiting approval is reused so the approval binds to it).
        awaiting = rec.approval_requested is not None and rec.approval_final is None
        if rec.decided is not None and (awaiting or (rec.approval_final is not None and rec.approval_final.kind != EventKind.APPROVAL_EXPIRED)):
            decision = _decision_from_record(rec.decided.payload["decision"])
        else:
            decision = self._decide(thread_id, tool, spec, args, charter, view)
            if retry is not None and decision.obligations.get("new_action"):
                retry = None  # the policy says: a new action, not a retry of the earlier call
            self._defer(
                thread_id,
                EventKind.POLICY_DECIDED,
                tool_call_id,
                {**base, "decision": decision.to_dict(), "enforced": self.mode == "enforce",
                 "retry_of_in_doubt": in_doubt is not None, "retry_of": retry.tool_call_id if retry else None,
                 "data_classes": list(self._data_classes_of(tool))},
                view.seen,
            )
            self._note_decision(thread_id, tool_call_id, tool, decision)
        if not decision.allow and self.mode == "enforce":
            return self._deny(thread_id, base, decision, list(decision.reasons), self._denied_message(tool, spec, decision))
        inherited: ApprovalDecision | None = None
        if retry is not None:
            taken = self._take_over(thread_id, base, retry)
            if isinstance(taken, _Plan):
                return taken
            if retry.status == "in_doubt":
                in_doubt = 0  # a retry of an attempt whose outcome is unknown: the in-doubt rules apply
            else:
                inherited = taken
        retry_allowed = (
            in_doubt is None
            or (spec is not None and spec.idempotent)
            or bool(decision.obligations.get("retry_in_doubt"))
            or decision.require_approval
        )
        if not retry_allowed and self.mode == "enforce":
            earlier = retry.tool_call_id if retry is not None else tool_call_id
            return self._deny(
                thread_id, base, decision, ["outcome_unknown"],
                f"The earlier attempt of {tool!r} (call {earlier}) started but never finished, so its outcome is "
                "unknown. It was not retried automatically because the tool is not declared idempotent; check the "
                "target system, then ask for an approval or a new call.",
            )

        executed_args: Mapping[str, Any] = args
        approval_id = None
        if inherited is not None:
            # The earlier call's approval, granted and never used: this call uses it, once (its tool.started
            # names it, and the earlier call is superseded).
            approval_id = inherited.request_id
            if inherited.decision == "edit":
                executed_args = dict(inherited.args or {})
        elif decision.require_approval and self.mode == "enforce":
            outcome = self._approval(thread_id, base, args, decision, charter, profile, rec, in_doubt is not None, origin)
            if isinstance(outcome, ToolMessage):
                return _Plan(final=outcome)
            approval, executed_args = outcome
            approval_id = approval.request_id
            if approval.decision == "edit":
                # A reviewer cannot approve their way past policy: the edited action is decided again.
                # Decided on the history as it is now (with the approval just recorded).
                edited_digest = canonical.digest(dict(executed_args))
                again = self._decide(thread_id, tool, spec, executed_args, charter, self._view(thread_id))
                self._append(
                    thread_id,
                    EventKind.POLICY_DECIDED,
                    tool_call_id,
                    # Filed under the edited arguments' digest, so the original call's recorded decision
                    # (the one the approval is bound to) stays the one a re-run of this task reuses.
                    {**base, "args_digest": edited_digest, "original_args_digest": base["args_digest"],
                     "decision": again.to_dict(), "enforced": True, "edited_args_digest": edited_digest,
                     "data_classes": list(self._data_classes_of(tool))},
                )
                if not again.allow:
                    return self._deny(
                        thread_id, base, again, list(again.reasons),
                        f"The edited call was denied by policy ({again.engine}): {', '.join(again.reasons)}. The tool was not run.",
                    )
                decision = again if not again.require_approval else decision

        new_request = request
        if executed_args is not args:
            new_request = request.override(tool_call={**call, "args": dict(executed_args)})
        return _Plan(
            request=new_request,
            thread_id=thread_id,
            tool_call_id=tool_call_id,
            tool=tool,
            args_digest=args_digest,
            executed_args=executed_args,
            # The original arguments were digested once already (args_digest).
            executed_args_digest=args_digest if executed_args is args else canonical.digest(dict(executed_args)),
            attempt=rec.next_attempt,
            decision=decision,
            spec=spec,
            profile=profile,
            approval_request_id=approval_id,
            claim_seq=view.read_seq,
            origin=origin,
            retry_of=retry.tool_call_id if retry is not None else None,
        )

    # ------------------------------------------------------------- retries under a new id
    def _find_retry(
        self, thread_id: str, tool: str, args_digest: str, tool_call_id: str, origin: Origin, state: Any
    ) -> tuple[_Retry, _ThreadSnapshot] | None:
        """The earlier call a new call retries, if any (see guards/retries.py), with a fresh snapshot.

        Cheap when there is none: the view's index of calls by (tool, arguments) is empty for a
        new action, and an identical call whose answer the state holds is a new action, known
        without a read. Otherwise the candidate's own handling is waited for — here and in any
        other live process (its claim) — and the thread read again before it is judged.
        """
        view = self._view_of(thread_id)
        with view.lock:
            candidates = view.earlier_calls(tool, args_digest, tool_call_id)
        seen: SeenCalls | None = None
        for n, (tcid, rec) in enumerate(candidates):
            if rec.retry_status() is None or rec.origin is None or rec.origin == (origin.checkpoint_ns, origin.checkpoint_id):
                continue
            if n == 0 or seen is None:
                seen = seen_calls(state)
            if seen is not None and tcid in seen.answered:
                continue  # the usual case, known without a read: the model saw that call's outcome
            if self._in_flight_here(thread_id, tcid):
                continue  # being handled by this very process: alive, so not a call whose message was lost
            if self.claims is not None:
                # Not while another live process runs it: wait for its claim, then read what it left.
                if not self.claims.acquire(thread_id, tcid, self.claim_timeout):
                    raise CallInProgressError(
                        f"call {tool_call_id!r} ({tool!r}) repeats call {tcid!r}, which another live process is still "
                        f"executing after {self.claim_timeout:g}s; nothing was run here. Resume the run later."
                    )
                self.claims.release(thread_id, tcid)
            snap = self._view(thread_id, (tcid, args_digest))
            rec = snap.call
            status = rec.retry_status()
            if status is None or rec.origin is None:
                continue
            asked = seen is not None and tcid in seen.asked
            if not asked and self._origin_recorded(thread_id, *rec.origin):
                continue  # its model message was durable and is not in this state: trimmed, forked — a new action
            return _Retry(tcid, rec, status, snap.read_seq), self._view(thread_id, (tool_call_id, args_digest))
        return None

    def _origin_recorded(self, thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> bool:
        """Whether the verified history records that checkpoint (then the call's model message survived).

        Erring towards ``False`` is the safe side: a call then taken for a retry is replayed or held
        in doubt, never executed twice.
        """
        recorded = getattr(self.sink, "checkpoint_recorded", None)
        if recorded is None:
            return True  # cannot tell: never take a call for a retry on a guess
        return bool(recorded(thread_id, checkpoint_ns, checkpoint_id))

    def _take_over(self, thread_id: str, base: Mapping[str, Any], retry: _Retry) -> _Plan | ApprovalDecision | None:
        """Record that the new call retries ``retry`` and act on it: a replay of its result (a final
        plan), its unused approval (to run under), or ``None`` for an attempt in doubt (the caller
        applies the in-doubt rules). Commits only if the earlier call is unchanged since it was
        read (another worker taking it over first makes this a stale decision, decided again)."""
        earlier, new = retry.tool_call_id, base["tool_call_id"]
        rec = retry.record
        mine = {"tool_call_id": earlier, "tool": base["tool"], "args_digest": base["args_digest"]}
        drafts: list[EventDraft] = []
        if retry.status == "in_doubt" and rec.in_doubt_attempt is not None:
            if self.broker is not None:
                self.broker.revoke_call(thread_id, earlier)
            drafts.append(EventDraft(EventKind.TOOL_ABORTED, {
                **mine, "attempt": rec.in_doubt_attempt, "outcome": "unknown",
                "why": f"started but never completed; retried as call {new} after its model message was lost"},
                subject=earlier))
        drafts.append(EventDraft(EventKind.TOOL_SUPERSEDED, {
            **mine, "superseded_by": new, "status": retry.status,
            "why": "the same tool and arguments were asked for again under a new id after this call's model message was lost"},
            subject=earlier))
        claim = Watermark(retry.read_seq, _TAKEOVER_KINDS, subject=earlier)
        if retry.status != "completed":
            self._commit(thread_id, drafts, None, claim=claim)
            if retry.status == "approved":
                assert rec.approval_final is not None
                return ApprovalDecision.parse(rec.approval_final.payload["answer"])
            return None
        assert rec.completed_seq is not None
        completed = self._completed_event(thread_id, earlier, rec.completed_seq, rec.completed_hash)
        drafts.append(EventDraft(EventKind.TOOL_REPLAYED, {
            **base, "completed_seq": completed.seq, "attempt": completed.payload["attempt"], "retry_of": earlier},
            subject=new))
        self._commit(thread_id, *self._drafts(thread_id, new, drafts), claim=claim)
        return _Plan(final=_readdressed(self._load_result(completed), earlier, new))

    def _denied_message(self, tool: str, spec: ToolSpec | None, decision: PolicyDecision) -> str:
        """What the model (and the audit) reads for a denied call; an undeclared tool's says how to declare it."""
        reasons = ", ".join(decision.reasons) or "no reason given"
        if spec is None and "unknown_tool" in decision.reasons:
            rule = " and undeclared tools are denied (unknown_tools='deny')" if self.unknown_tools == "deny" else ""
            return (
                f"Denied ({reasons}; policy {decision.engine}): {tool!r} is not a declared tool{rule}. The tool was "
                f"not run. Declare it with warden.tools.register(ToolSpec({tool!r}, ...)) so the policy can decide it."
            )
        return f"Denied by policy ({decision.engine}): {reasons}. The tool was not run."

    def _deny(
        self, thread_id: str, base: Mapping[str, Any], decision: PolicyDecision | None, reasons: list[str], message: str
    ) -> _Plan:
        self._append(
            thread_id,
            EventKind.TOOL_DENIED,
            base["tool_call_id"],
            {**base, "reasons": reasons, "message": message, "decision_id": decision.decision_id if decision else None},
        )
        return _Plan(final=self._message(None, message, tool=base["tool"], tool_call_id=base["tool_call_id"]))

    # ------------------------------------------------------------- approval
    def _approval(
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
        tool, tool_call_id = base["tool"], base["tool_call_id"]
        if rec.approval_requested is not None and (rec.approval_final is None or rec.approval_final.kind != EventKind.APPROVAL_EXPIRED):
            req = ApprovalRequest.from_dict(rec.approval_requested.payload["request"])
        else:
            digest = action_digest(tool, args, thread_id, tool_call_id)
            req = ApprovalRequest(
                request_id="apr_" + hashlib.sha256(f"{thread_id}\0{tool_call_id}\0{digest}\0{rec.decided.seq if rec.decided else 0}\0{time.time_ns()}".encode()).hexdigest()[:24],
                thread_id=thread_id,
                tool_call_id=tool_call_id,
                tool=tool,
                args=dict(args),
                reasons=tuple(decision.reasons),
                owner=charter.owner if charter else None,
                intent=charter.intent if charter else None,
                risk_tier=charter.risk_tier if charter else "medium",
                action_digest=digest,
                expires_at=(_now() + timedelta(seconds=profile.approval_ttl_seconds)).isoformat(),
                separation_of_duties=profile.separation_of_duties,
                requires_signature=profile.authenticated_approvals,
                retry_of_in_doubt=retry_of_in_doubt,
            )
            self._append(thread_id, EventKind.APPROVAL_REQUESTED, tool_call_id, {
                **base, "request_id": req.request_id, "request": req.to_dict(),
                "origin": origin.to_dict() if origin is not None else None})
        # Already decided (the task re-ran: a sibling call paused, or the process died after the
        # decision was recorded): the recorded decision stands, and no event is appended again.
        decided = rec.approval_final if (
            rec.approval_final is not None and rec.approval_final.payload.get("request_id") == req.request_id
        ) else None
        try:
            got = self._await_answer(thread_id, req, charter, decided)
        except InvalidApprovalError as exc:
            self._append(
                thread_id,
                EventKind.APPROVAL_REFUSED,
                tool_call_id,
                {**base, "request_id": req.request_id, "reason": exc.reason, "field": exc.field, "detail": str(exc),
                 "approver": getattr(exc, "approver", None)},
            )
            raise
        answer = got.decision
        if decided is None:
            self._commit(thread_id, *self._drafts(thread_id, tool_call_id, self._closing_drafts(base, req, answer, got.approver)))
        refusal = self._refusal(req, answer)
        if refusal is not None:
            return self._message(None, refusal, tool=tool, tool_call_id=tool_call_id)
        assert answer is not None
        return answer, (dict(answer.args or {}) if answer.decision == "edit" else args)

    @staticmethod
    def _refusal(req: ApprovalRequest, answer: ApprovalDecision | None) -> str | None:
        """What the call returns instead of running, if ``answer`` (``None``: expired) stops it."""
        if answer is None:
            return (
                f"The approval request {req.request_id} for {req.tool!r} expired at {req.expires_at}; the tool was not run. "
                "Ask again to get a new approval request."
            )
        if answer.decision == "reject":
            return f"Rejected by {answer.approver}: {answer.message or 'no reason given'}. The tool was not run."
        return None

    def _closing_drafts(
        self, base: Mapping[str, Any], req: ApprovalRequest, answer: ApprovalDecision | None, approver: str | None
    ) -> list[EventDraft]:
        """The events that close ``req`` with ``answer`` (``None``: it came after expiry). A refusal
        (see :meth:`_refusal`) is also recorded as ``tool.denied``: final for the call, so a re-run
        of its task returns the same refusal (see ``_prepare_call``)."""
        tcid = base["tool_call_id"]
        refusal = self._refusal(req, answer)
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

    def _approval_requests(
        self, thread_id: str
    ) -> tuple[dict[str, tuple[ApprovalRequest, dict[str, Any]]], set[str]]:
        """The thread's open approval requests (by id, with their call: ``tool_call_id``, ``tool``,
        ``args_digest``) and the ids already decided."""
        open_: dict[str, tuple[ApprovalRequest, dict[str, Any]]] = {}
        final: set[str] = set()
        for e in self.sink.events(thread_id, kinds=[EventKind.APPROVAL_REQUESTED, *_APPROVAL_FINAL]):
            rid: Any = e.payload.get("request_id")  # payloads are untyped dicts (issue 20: a typed event vocabulary)
            if e.kind == EventKind.APPROVAL_REQUESTED:
                p = e.payload
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
            answer = None if decided.kind == EventKind.APPROVAL_EXPIRED else ApprovalDecision.parse(decided.payload["answer"])
            return _Answer(answer, decided.payload.get("approver"))
        from langgraph.config import get_config

        conf = get_config().get("configurable", {})
        scratchpad = conf.get(_CONFIG_KEY_SCRATCHPAD)
        with _ASK_LOCK:
            walked = _walked(scratchpad)
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
                    setattr(exc, "approver", _approver_of(mine if mine is not None else raw))
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
            # Every answer in the value must be sound before LangGraph records it.
            open_, final = self._approval_requests(thread_id)
            for rid, payload in others.items():
                if rid in open_:
                    other, call = open_[rid]
                    closing += self._closing_drafts(call, other, self._check_answer(other, payload, charter),
                                                    _approver_of(payload))
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
            self._commit(thread_id, closing, None)
        return result

    def _check_answer(self, req: ApprovalRequest, value: Any, charter: RunCharter | None) -> ApprovalDecision | None:
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
        if req.separation_of_duties and charter is not None and answer.approver_is(charter.owner, self.workload_id):
            raise InvalidApprovalError(
                f"approval field 'approver': separation of duties: {answer.approver!r} owns or runs this {req.risk_tier}-risk run and cannot "
                "approve its actions; ask another person",
                field="approver", reason="separation_of_duties",
            )
        if req.requires_signature or answer.signature is not None:
            public = self.approver_keys.get(answer.approver)
            if public is None:  # registered under another spelling of the same identity
                public = next((k for name, k in self.approver_keys.items() if same_identity(name, answer.approver)), None)
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
        if req.expired:
            return None
        return answer

    # ------------------------------------------------------------- execute
    def _scopes(self, plan: _Plan) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
        granted = tuple(plan.decision.scopes) if plan.decision else ()
        needed = tuple(plan.spec.scopes) if plan.spec and plan.spec.scopes else None
        return granted, needed

    def _wants_credential(self, plan: _Plan) -> bool:
        granted, needed = self._scopes(plan)
        return self.broker is not None and bool(granted or needed)

    def _ttl(self, plan: _Plan) -> int | None:
        ttl = plan.decision.ttl_seconds if plan.decision and plan.decision.ttl_seconds else None
        if plan.profile is not None:
            ttl = min(ttl or plan.profile.max_credential_ttl_seconds, plan.profile.max_credential_ttl_seconds)
        return ttl

    def _lease_args(self, plan: _Plan) -> tuple[tuple[Any, ...], dict[str, Any]]:
        granted, needed = self._scopes(plan)
        return (plan.thread_id, plan.tool_call_id, plan.tool, granted, needed), {"decision_ttl_seconds": self._ttl(plan)}

    def _lease_cm(self, plan: _Plan):
        if not self._wants_credential(plan):
            return nullcontext(None)
        assert self.broker is not None
        args, kwargs = self._lease_args(plan)
        return self.broker.lease(*args, **kwargs)

    def _alease_cm(self, plan: _Plan):
        if not self._wants_credential(plan):
            return _AsyncNull()
        assert self.broker is not None
        args, kwargs = self._lease_args(plan)
        return self.broker.alease(*args, **kwargs)

    def _credential_refused(self, plan: _Plan, exc: CredentialError) -> ToolMessage:
        base = dict(tool_call_id=plan.tool_call_id, tool=plan.tool, args_digest=plan.args_digest)
        reason = type(exc).__name__
        return self._deny(
            plan.thread_id, base, plan.decision, [f"credential_refused:{reason}"],
            f"No credential could be issued for {plan.tool!r} ({reason}: {exc}); the tool was not run.",
        ).final  # type: ignore[return-value]

    def _base(self, plan: _Plan) -> dict[str, Any]:
        return {"tool_call_id": plan.tool_call_id, "tool": plan.tool, "args_digest": plan.args_digest, "attempt": plan.attempt}

    def _started(self, plan: _Plan, lease: Lease | None) -> None:
        # Committed before the side effect: if this append fails, the tool does not run. It claims the
        # call: it commits only if no other attempt of it started or ended since its record was read.
        self._append(
            plan.thread_id,
            EventKind.TOOL_STARTED,
            plan.tool_call_id,
            claim=Watermark(plan.claim_seq, _CLAIM_KINDS, subject=plan.tool_call_id),
            payload={
                **self._base(plan),
                "executed_args_digest": plan.executed_args_digest,
                "decision_id": plan.decision.decision_id if plan.decision else None,
                "policy_input_digest": plan.decision.input_digest if plan.decision else None,
                "approval_request_id": plan.approval_request_id,
                "lease_id": lease.lease_id if lease is not None else None,
                "origin": {**plan.origin.to_dict(), "durable": plan.origin_durable} if plan.origin is not None else None,
                "retry_of": plan.retry_of,
            },
        )

    def _await_origin(self, plan: _Plan) -> None:
        """``"async"`` durability: wait until the checkpoint the call came from is committed, so that
        a crash after the side effect leaves the model's message (and the call's id) durable.

        Fail closed: if it is not committed within ``origin_timeout`` the tool does not run.
        """
        o = plan.origin
        if o is None or o.durability == "exit" or not o.same_ledger:
            return
        if o.durability != "async":  # "sync": LangGraph saved it before the step; say so if it is there
            durable = getattr(self.sink, "checkpoint_durable", None)
            plan.origin_durable = bool(durable and durable(plan.thread_id, o.checkpoint_ns, o.checkpoint_id))
            return
        wait = getattr(self.sink, "wait_for_checkpoint", None)
        if wait is None:
            return
        plan.origin_durable = wait(plan.thread_id, o.checkpoint_ns, o.checkpoint_id, self.origin_timeout)
        if not plan.origin_durable:
            raise LedgerAppendError(
                f"the checkpoint {o.checkpoint_id!r} that call {plan.tool_call_id!r} ({plan.tool!r}) came from was not "
                f"saved within {self.origin_timeout:g}s, so a crash could lose the call's id; the tool was not run. "
                "Check the database, or run the graph with durability='sync'."
            )

    def _suspended(self, plan: _Plan) -> None:
        self._append(plan.thread_id, EventKind.TOOL_SUSPENDED, plan.tool_call_id, self._base(plan))

    def _failed(self, plan: _Plan, exc: BaseException, lease: Lease | None) -> None:
        self._append(
            plan.thread_id,
            EventKind.TOOL_FAILED,
            plan.tool_call_id,
            {
                **self._base(plan),
                "error_type": type(exc).__name__,
                # without the step's credential or any other live secret; scrubbed whole, then cut
                "error": redaction.scrub_text(str(exc), extra=lease_secrets(lease))[:2000],
                "lease_id": lease.lease_id if lease is not None else None,
            },
        )

    def _completed(self, plan: _Plan, result: ToolMessage | Command, lease: Lease | None) -> ToolMessage | Command:
        # The result goes to the model, the state and the record: none may carry the credential (or any
        # other live secret), however deep in a Command or artifact. Scrubbed before it is digested.
        result = redaction.scrub_value(result, extra=lease_secrets(lease))
        type_, data = self._serde.dumps_typed(result)
        data = redaction.scrub_blob(type_, data)
        is_error = isinstance(result, ToolMessage) and result.status == "error"
        preview = result.content if isinstance(result, ToolMessage) and isinstance(result.content, str) else type(result).__name__
        payload = {
            **self._base(plan),
            "status": "error" if is_error else "success",
            "result_digest": canonical.digest_bytes(data),
            "result": {"type": type_, "data": data},
            "preview": preview[:300],
            "lease_id": lease.lease_id if lease is not None else None,
        }
        if is_error:
            # ToolNode turned the tool's exception into an error message: a failed attempt, result returned as is.
            self._record_outcome(
                plan.thread_id,
                EventKind.TOOL_FAILED,
                plan.tool_call_id,
                {**self._base(plan), "error_type": "ToolError", "error": preview[:2000], "lease_id": payload["lease_id"]},
                plan.flight,
            )
            return result
        self._record_outcome(plan.thread_id, EventKind.TOOL_COMPLETED, plan.tool_call_id, payload, plan.flight)
        return result

    def _completed_event(self, thread_id: str, tool_call_id: str, seq: int, hash_: str = "") -> Event:
        """The ``tool.completed`` event at ``seq`` (views keep its seq and hash, not the recorded result).

        Read as one row checked against the hash the verified read saw (``event_at``), so a result
        edited in the database since is refused, not replayed.
        """
        read_at = getattr(self.sink, "event_at", None)
        if read_at is not None and hash_:
            return read_at(thread_id, seq, hash_)
        for e in self.sink.events(thread_id, kinds=(EventKind.TOOL_COMPLETED,), subject=tool_call_id, after_seq=seq - 1):
            if e.seq == seq:
                return e
        raise IntegrityError(
            f"tool.completed of call {tool_call_id!r} (seq {seq}) is no longer in the history of thread {thread_id!r}",
            thread_id=thread_id, seq=seq, reason="missing_event",
        )

    def _load_result(self, completed: Event) -> ToolMessage | Command:
        r = completed.payload["result"]
        return self._serde.loads_typed((r["type"], r["data"]))


def _readdressed(result: ToolMessage | Command, old: str, new: str) -> ToolMessage | Command:
    """A recorded result answered to call ``new`` instead of ``old`` (a retry under a new id)."""
    if isinstance(result, ToolMessage):
        return result.model_copy(update={"tool_call_id": new}) if result.tool_call_id == old else result
    update = result.update
    if isinstance(update, Mapping) and isinstance(update.get("messages"), list):
        msgs = [_readdressed(m, old, new) if isinstance(m, ToolMessage) else m for m in update["messages"]]
        return Command(graph=result.graph, update={**update, "messages": msgs}, resume=result.resume, goto=result.goto)
    return result


class _AsyncNull:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def _decision_from_record(doc: Mapping[str, Any]) -> PolicyDecision:
    return PolicyDecision(
        allow=bool(doc["allow"]),
        require_approval=bool(doc["require_approval"]),
        reasons=tuple(doc.get("reasons", ())),
        scopes=tuple(doc.get("scopes", ())),
        ttl_seconds=int(doc.get("ttl_seconds", 0)),
        obligations=dict(doc.get("obligations") or {}),
        engine=doc.get("engine", ""),
        policy_revision=doc.get("policy_revision", ""),
        input_digest=doc.get("input_digest", ""),
        decision_id=doc.get("decision_id"),
    )


# ------------------------------------------------------------------ approval helpers
try:  # where LangGraph keeps the per-task scratchpad and this run's {interrupt id: value} map
    from langgraph._internal._constants import CONFIG_KEY_RESUME_MAP as _CONFIG_KEY_RESUME_MAP
    from langgraph._internal._constants import CONFIG_KEY_SCRATCHPAD as _CONFIG_KEY_SCRATCHPAD
except ImportError:  # pragma: no cover - older layouts
    _CONFIG_KEY_SCRATCHPAD = "__pregel_scratchpad"
    _CONFIG_KEY_RESUME_MAP = "__pregel_resume_map"

#: Calls of one ToolNode task share its interrupt counter: they ask one at a time.
_ASK_LOCK = threading.RLock()
#: Resume values each task's calls already took from LangGraph (per scratchpad; bounded).
_WALKED: OrderedDict[int, tuple[Any, list[Any]]] = OrderedDict()
_NOT_MINE = object()


@dataclass(frozen=True, slots=True)
class _Answer:
    decision: ApprovalDecision | None  # None: the answer came after the request expired
    approver: str | None = None


def _approver_of(value: Any) -> str | None:
    approver = value.get("approver") if isinstance(value, Mapping) else None
    return approver if isinstance(approver, str) else None


class _Refusal(Exception):
    """Carries an InvalidApprovalError out of the resume validator unwrapped (pydantic wraps ValueErrors)."""

    def __init__(self, error: InvalidApprovalError) -> None:
        super().__init__(str(error))
        self.error = error


def _walked(scratchpad: Any) -> list[Any]:
    if scratchpad is None:
        return []
    key = id(scratchpad)
    entry = _WALKED.get(key)
    if entry is None or entry[0] is not scratchpad:
        entry = _WALKED[key] = (scratchpad, [])
        while len(_WALKED) > 256:
            _WALKED.popitem(last=False)
    return entry[1]


def _addressed_to(value: Any, request_id: str) -> Any:
    """The part of a resume value that answers ``request_id`` (``None`` if it answers another request)."""
    if is_request_map(value):
        return value.get(request_id)
    if isinstance(value, Mapping) and isinstance(value.get("request_id"), str) and value["request_id"] != request_id:
        return None
    return value  # addressed to this request, or malformed (then parse names the field)


def _is_new_resume(value: Any, scratchpad: Any, conf: Mapping[str, Any]) -> bool:
    """Whether ``value`` was sent by this invocation (not recorded by an earlier one)."""
    if scratchpad is not None:
        try:
            if value is scratchpad.get_null_resume(False):
                return True
        except Exception:  # pragma: no cover - defensive: internal API
            pass
    resume_map = conf.get(_CONFIG_KEY_RESUME_MAP) or {}
    return any(value is v for v in resume_map.values()) if isinstance(resume_map, Mapping) else False
