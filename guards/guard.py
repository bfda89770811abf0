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
   for its fsync (its loss in a crash leaves the call in doubt, see ``Recorder.record_outcome`` in guards/recorder.py);
6. the credential is revoked in ``finally``.

Fail closed: if the ledger cannot record ``tool.started`` the tool does not run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

from langchain_core.messages import ToolMessage
from langgraph.errors import GraphBubbleUp
from langgraph.types import Command

from langgraph_warden import canonical
from langgraph_warden.charter import RunCharter
from langgraph_warden.errors import ConfigurationError
from langgraph_warden.events import CallClaims, Event, EventDraft, EventSink, GuardSink

from .approval_flow import ApprovalFlow
from .call_plan import Plan, StaleDecision, config_of
from .credentials import CredentialBroker, CredentialError
from .decision import DecisionPipeline
from .guard_settings import CHARTER_CONFIG_KEY, GuardMode
from .guard_sink import as_guard_sink
from .in_flight import InFlight
from .outcomes import Outcomes
from .policy import PolicyEngine
from .recorder import Recorder
from .tools import ToolRegistry, UnknownTools, check_unknown_tools

__all__ = ["ToolGuard", "CHARTER_CONFIG_KEY", "GuardMode"]


class ToolGuard:
    """The ``wrap_tool_call`` / ``awrap_tool_call`` guard for ToolNode and create_agent.

    The LangGraph hooks, composing one part per job: :attr:`in_flight` (who handles which call),
    :attr:`recorder` (thread views and writes), :attr:`decision` (the pipeline before the side
    effect), :attr:`approvals` (interrupt and resume) and :attr:`outcomes` (around the side effect).

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
        self.mode: GuardMode = mode
        self.approver_keys = dict(approver_keys or {})
        self.default_charter = default_charter
        #: Reads a new thread's charter from its run config instead of ``warden_charter`` (Agent Server:
        #: :func:`~langgraph_warden.guards.run_charter.charter_from_run`); ``charter_hint`` says where it goes.
        self.charter_source: Callable[[Mapping[str, Any]], RunCharter | None] | None = None
        self.charter_hint: str | None = None
        #: One live attempt per call across processes (the ledger's locks); None: this process only.
        self.claims: CallClaims | None = claims if claims is not None else self.guard_sink.claims
        self.claim_timeout = claim_timeout
        self.origin_timeout = origin_timeout
        self.in_flight = InFlight(self, on_landed=self._forget_decision)
        self.recorder = Recorder(self, alone=self.in_flight.alone)
        self.outcomes = Outcomes(self, self.recorder)
        self.approvals = ApprovalFlow(self, self.recorder)
        self.decision = DecisionPipeline(self, self.recorder, self.in_flight, self.approvals, self.outcomes)

    @property
    def sink(self) -> EventSink:
        """Where events go, as given (see :attr:`guard_sink` for what the guard calls)."""
        return self._sink

    @sink.setter
    def sink(self, sink: EventSink) -> None:
        # Resolved once here, not per call: a sink may be swapped on a live guard (tests wrap it).
        self._sink = sink
        self.guard_sink: GuardSink = as_guard_sink(sink)

    def _forget_decision(self, thread_id: str, tool_call_id: str) -> None:
        self.recorder.forget_decision(thread_id, tool_call_id)

    # ---------------------------------------------------------------- hooks
    def __call__(
        self, request: Any, execute: Callable[[Any], ToolMessage | Command]
    ) -> ToolMessage | Command:
        """Sync hook: ``ToolNode(tools, wrap_tool_call=guard)``."""
        try:
            return self._call(request, execute, trust=True)
        except StaleDecision:
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
        out = self.outcomes
        entered = False
        try:
            out.await_origin(plan)  # before a credential exists: one that is issued is recorded at once
            with out.lease(plan) as lease:
                entered = True
                out.started(plan, lease)
                try:
                    result = execute(plan.request)
                except GraphBubbleUp:
                    out.suspended(plan)
                    raise
                except BaseException as exc:
                    out.failed(plan, exc, lease)
                    raise
                return out.completed(plan, result, lease)
        except CredentialError as exc:
            if entered:
                raise
            return self.decision.credential_refused(plan, exc)
        finally:
            self.in_flight.land(plan.flight)

    async def awrap(
        self, request: Any, execute: Callable[[Any], Awaitable[ToolMessage | Command]]
    ) -> ToolMessage | Command:
        """Async hook: ``ToolNode(tools, awrap_tool_call=guard.awrap)``.

        The blocking steps run in worker threads, which a cancelled task cannot stop; each is
        shielded and, on cancellation, awaited to its end and settled (see ``_settled``).
        """
        try:
            return await self._acall(request, execute, trust=True)
        except StaleDecision:  # see __call__
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
                await asyncio.shield(asyncio.to_thread(self.recorder.flush, plan.thread_id, plan.tool_call_id))
                self.in_flight.land(plan.flight)
            raise
        if plan.final is not None:
            return plan.final
        out = self.outcomes
        entered = False
        try:
            await out.aawait_origin(plan)  # before a credential exists: one that is issued is recorded at once
            async with out.alease(plan) as lease:
                entered = True
                starting = asyncio.ensure_future(asyncio.to_thread(out.started, plan, lease))
                try:
                    await asyncio.shield(starting)
                except asyncio.CancelledError:
                    if await self._settled(starting):
                        # tool.started is durable but the tool never ran: say so, so that the call is
                        # a failed attempt (safe to retry), not one in doubt.
                        await asyncio.shield(asyncio.to_thread(
                            out.failed, plan, asyncio.CancelledError("cancelled before the tool ran"), lease))
                    raise
                try:
                    result = await execute(plan.request)
                except GraphBubbleUp:
                    await asyncio.to_thread(out.suspended, plan)
                    raise
                except BaseException as exc:
                    # In a worker thread (a blocking write on the loop can deadlock SQLite against
                    # LangGraph's background checkpoint write), shielded so cancellation cannot skip it.
                    await asyncio.shield(asyncio.to_thread(out.failed, plan, exc, lease))
                    raise
                return await asyncio.to_thread(out.completed, plan, result, lease)
        except CredentialError as exc:
            if entered:
                raise
            return await asyncio.to_thread(self.decision.credential_refused, plan, exc)
        finally:
            self.in_flight.land(plan.flight)

    @staticmethod
    async def _settled(work: asyncio.Future[Any]) -> bool:
        """After a cancellation: wait for ``work`` (a worker thread) to end; whether it succeeded."""
        try:
            await work
        except BaseException:  # noqa: BLE001 - its own failure is recorded where it happened
            return False
        return True

    def _prepare(self, request: Any, trust: bool = False) -> Plan:
        """Everything before the side effect, for a call this process now owns (see InFlight.claim).

        Deferred events are flushed if it ends without a further event. ``trust``: decide on
        this process's view of the thread without reading the ledger when the view is current.
        """
        call = request.tool_call
        thread_id = str((config_of(request).get("configurable") or {}).get("thread_id") or "")
        tool_call_id = str(call.get("id") or "")
        args_digest = canonical.digest(dict(call.get("args") or {}))
        flight = None
        if thread_id and tool_call_id:
            flight = self.in_flight.claim((thread_id, tool_call_id, args_digest))
        try:
            # One decision at a time per thread (see _ThreadView.deciding); waiting for our own call
            # (the claim, above) happens before, so no call holds this while waiting for another.
            with self.recorder.view_of(thread_id).deciding if flight is not None else nullcontext():
                plan = self.decision.prepare_call(request, args_digest, trust)
            if (plan.final is None and plan.decision is not None and self.outcomes.wants_credential(plan)
                    and not self.outcomes.records_start_with_lease()):
                # Credentials are issued (and recorded) after the decision: keep the history in that order.
                # (Where the lease is recorded with tool.started, the deferred decision goes first in that
                # same transaction instead.)
                self.recorder.flush(thread_id, tool_call_id, redecide=True)
        except BaseException as exc:
            if not isinstance(exc, StaleDecision):
                self.recorder.flush(thread_id, tool_call_id)
            self.in_flight.land(flight)
            raise
        if plan.final is not None:
            self.recorder.flush(thread_id, tool_call_id)
            self.in_flight.land(flight)
        else:
            plan.flight = flight
        return plan

    # ---------------------------------------------------------------- charter and records
    def record(self, thread_id: str, drafts: Sequence[EventDraft]) -> list[Event]:
        """Append events about a run through the guard (``Warden.start_run`` records the charter
        here), so that its view of the thread stays current without a read."""
        return self.recorder.commit(thread_id, list(drafts), None)

    def recorded_charter(self, thread_id: str) -> RunCharter | None:
        """The charter the thread's verified history records (``None``: none yet); records nothing."""
        return self.recorder.view(thread_id).charter

    def charter(self, thread_id: str, config: Mapping[str, Any] | None = None) -> RunCharter | None:
        """The thread's charter from its signed ``run.started`` event (recording one from config if new)."""
        return self.decision.charter(thread_id, self.recorder.view(thread_id).charter, config)
