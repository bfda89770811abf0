"""The decision pipeline: everything the guard settles about one call before its side effect.

In order (see DESIGN.md, "One tool call"): a completed call is replayed, a refused one refused
again; the thread's charter is found (or recorded from the run's config); a call retried under a
new id is found (guards/retries.py); an attempt in doubt is aborted; the policy decides (or a
decision awaiting approval is reused); a deny stops the call; an in-doubt retry needs the rules'
leave; an approval is asked for (an edited action is decided again). The result is a
:class:`~langgraph_warden.guards.call_plan.Plan`: a final answer, or what to run and how.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from langchain_core.messages import ToolMessage
from langgraph.types import Command

from langgraph_warden import canonical
from langgraph_warden.charter import TIER_PROFILES, RunCharter, TierProfile
from langgraph_warden.errors import CallInProgressError, ConfigurationError
from langgraph_warden.event_payloads import ApprovalAnswered, PolicyDecided, ToolCompleted, ToolDenied
from langgraph_warden.events import EventDraft, EventKind, Watermark

from .approval import ApprovalDecision
from .approval_flow import ApprovalFlow
from .call_plan import Plan, Retry, config_of
from .credentials import CredentialError
from .guard_settings import CHARTER_CONFIG_KEY, GuardSettings
from .in_flight import InFlight
from .outcomes import Outcomes
from .policy import PolicyDecision, build_policy_input, fail_closed
from .recorder import Recorder
from .retries import Origin, SeenCalls, origin_of, seen_calls
from .thread_view import _TAKEOVER_KINDS, _CallRecord, _ThreadSnapshot
from .tools import ToolSpec, deny_undeclared

__all__ = ["DecisionPipeline"]


@dataclass(slots=True)
class _Call:
    """One call as the pipeline's steps see it; each step reads and narrows it."""

    request: Any
    config: Mapping[str, Any]
    thread_id: str
    tool_call_id: str
    tool: str
    args: dict[str, Any]
    args_digest: str
    view: _ThreadSnapshot
    rec: _CallRecord
    base: dict[str, Any] = field(default_factory=dict)
    charter: RunCharter | None = None
    profile: TierProfile = TIER_PROFILES["medium"]
    spec: ToolSpec | None = None
    origin: Origin | None = None
    retry: Retry | None = None
    #: the in-doubt attempt this call retries (0: one of an earlier call); None: not a retry of one
    in_doubt: int | None = None


class DecisionPipeline:
    """Decides calls for one guard; records each decision with the call's next event."""

    def __init__(
        self, settings: GuardSettings, recorder: Recorder, in_flight: InFlight, approvals: ApprovalFlow, outcomes: Outcomes
    ) -> None:
        self._settings = settings
        self._recorder = recorder
        self._in_flight = in_flight
        self._approvals = approvals
        self._outcomes = outcomes

    # ------------------------------------------------------------- the pipeline
    def prepare_call(self, request: Any, args_digest: str, trust: bool = False) -> Plan:
        """The plan for one call this process owns (see ``ToolGuard._prepare``)."""
        c = self._identify(request, args_digest, trust)
        final = self._replay_or_refusal(c)
        if final is not None:
            return final
        self._find_context(c)
        stop = self._abort_in_doubt(c)
        if stop is None:
            stop = self._precheck(c)
        if stop is not None:
            return stop
        decision = self._policy(c)
        if not decision.allow and self._settings.mode == "enforce":
            return self.deny(c.thread_id, c.base, decision, list(decision.reasons), self._denied_message(c.tool, c.spec, decision))
        inherited: ApprovalDecision | None = None
        if c.retry is not None:
            taken = self._take_over(c.thread_id, c.base, c.retry)
            if isinstance(taken, Plan):
                return taken
            if c.retry.status == "in_doubt":
                c.in_doubt = 0  # a retry of an attempt whose outcome is unknown: the in-doubt rules apply
            else:
                inherited = taken
        stop = self._refuse_unsafe_retry(c, decision)
        if stop is not None:
            return stop
        return self._approve_and_plan(c, decision, inherited)

    def _identify(self, request: Any, args_digest: str, trust: bool) -> _Call:
        """The call's ids, arguments and (one read) this call's record with the thread's charter,
        step history and prior approvals."""
        call = request.tool_call
        tool_call_id = str(call.get("id") or "")
        tool = call["name"]
        config = config_of(request)
        thread_id = (config.get("configurable") or {}).get("thread_id")
        if not thread_id:
            raise ConfigurationError(
                "the guarded graph was invoked without config['configurable']['thread_id']; the guard records "
                "every call against its thread: graph.invoke(inputs, {'configurable': {'thread_id': '...'}})"
            )
        thread_id = str(thread_id)
        if not tool_call_id:
            raise ConfigurationError(f"tool call to {tool!r} has no id; exactly-once recording needs the tool call id")
        view = self._recorder.view(thread_id, (tool_call_id, args_digest), trust=trust)
        return _Call(request, config, thread_id, tool_call_id, tool, dict(call.get("args") or {}), args_digest,
                     view, view.call, base={"tool_call_id": tool_call_id, "tool": tool, "args_digest": args_digest})

    def _replay_or_refusal(self, c: _Call) -> Plan | None:
        """1. exactly once: a completed call's recorded result (replayed), a refused call's refusal."""
        rec = c.rec
        if rec.completed_seq is not None:
            completed = self._outcomes.completed_event(c.thread_id, c.tool_call_id, rec.completed_seq, rec.completed_hash)
            self._recorder.append(
                c.thread_id,
                EventKind.TOOL_REPLAYED,
                c.tool_call_id,
                {**c.base, "completed_seq": completed.seq, "attempt": cast(ToolCompleted, completed.payload)["attempt"]},
            )
            return Plan(final=self._outcomes.load_result(completed))
        if rec.denied is not None and rec.in_doubt_attempt is None:
            # A re-run of a call already refused (its task re-executed after another call paused).
            return Plan(final=_error(cast(ToolDenied, rec.denied.payload)["message"], c.tool, c.tool_call_id))
        return None

    def _find_context(self, c: _Call) -> None:
        """The charter (recorded now if the run brings one), the tool's spec, the call's origin and
        the earlier call it retries under a new id, if any."""
        c.charter = self.charter(c.thread_id, c.view.charter, c.config)
        c.profile = c.charter.effective_profile if c.charter else TIER_PROFILES["medium"]
        c.spec = self._settings.registry.get(c.tool)
        c.origin = origin_of(c.config, self._settings.sink)
        rec = c.rec
        if c.origin is not None and not rec.attempts and rec.decided is None and rec.approval_requested is None:
            found = self.find_retry(c.thread_id, c.tool, c.args_digest, c.tool_call_id, c.origin, c.request.state)
            if found is not None:
                c.retry, c.view = found

    def _abort_in_doubt(self, c: _Call) -> Plan | None:
        """An attempt that started and never finished is recorded aborted; the call is then a retry
        of it. A spent approval of a non-idempotent tool is not reused for that retry."""
        rec = c.rec
        c.in_doubt = rec.in_doubt_attempt
        if c.in_doubt is not None:
            broker = self._settings.broker
            if broker is not None:
                # The attempt's process is gone; so must be its credential (not left to expire).
                broker.revoke_call(c.thread_id, c.tool_call_id)
            self._recorder.append(
                c.thread_id,
                EventKind.TOOL_ABORTED,
                c.tool_call_id,
                {**c.base, "attempt": c.in_doubt, "why": "started but never completed (process died mid-call?)", "outcome": "unknown"},
            )
            rec.attempts[c.in_doubt] = "aborted"
            c.view = self._recorder.view(c.thread_id)  # the step history now shows the abort
        elif rec.attempts and rec.attempts[max(rec.attempts)] == "aborted":
            # An earlier resume recorded the abort but died before deciding the retry: still a retry of
            # an in-doubt attempt (not a fresh call), so the same rules apply.
            c.in_doubt = max(rec.attempts)
        if rec.approval_spent() and not (c.spec is not None and c.spec.idempotent) and self._settings.mode == "enforce":
            # The recorded approval authorised the attempt that was cut off (the process may have died after
            # the side effect), not a retry of it: reusing it would run an approved irreversible action twice.
            return self.deny(
                c.thread_id, c.base, None, ["outcome_unknown"],
                f"The approved attempt of {c.tool!r} (call {c.tool_call_id}) started but never finished, so its outcome is "
                "unknown. The approval covered that attempt only, and the tool is not declared idempotent, so it was "
                "not retried; check the target system, then make a new call (it will ask for a new approval).",
            )
        return None

    def _precheck(self, c: _Call) -> Plan | None:
        """A run without a charter is denied before the policy is asked."""
        if c.charter is None and self._settings.mode == "enforce":
            hint = self._settings.charter_hint
            return self.deny(
                c.thread_id, c.base, None, ["no_owner"],
                "Denied (no_owner): this run has no charter (owner, intent, risk tier). Start it with warden.start_run(...) or "
                f"config['configurable']['{CHARTER_CONFIG_KEY}']." + (f" {hint}" if hint else ""),
            )
        return None

    def _policy(self, c: _Call) -> PolicyDecision:
        """2. policy: a decision awaiting approval is reused (the approval binds to it); otherwise the
        policy decides, and the decision is deferred to the call's next event."""
        rec = c.rec
        awaiting = rec.approval_requested is not None and rec.approval_final is None
        if rec.decided is not None and (awaiting or (rec.approval_final is not None and rec.approval_final.kind != EventKind.APPROVAL_EXPIRED)):
            return _decision_from_record(cast(PolicyDecided, rec.decided.payload)["decision"])
        decision = self.decide(c.thread_id, c.tool, c.spec, c.args, c.charter, c.view)
        if c.retry is not None and decision.obligations.get("new_action"):
            c.retry = None  # the policy says: a new action, not a retry of the earlier call
        self._recorder.defer(
            c.thread_id,
            EventKind.POLICY_DECIDED,
            c.tool_call_id,
            {**c.base, "decision": decision.to_dict(), "enforced": self._settings.mode == "enforce",
             "retry_of_in_doubt": c.in_doubt is not None, "retry_of": c.retry.tool_call_id if c.retry else None,
             "data_classes": list(self._recorder.data_classes_of(c.tool))},
            c.view.seen,
        )
        self._recorder.note_decision(c.thread_id, c.tool_call_id, c.tool, decision)
        return decision

    def _refuse_unsafe_retry(self, c: _Call, decision: PolicyDecision) -> Plan | None:
        """An attempt in doubt is retried only if the tool is idempotent, the policy allows it
        (``retry_in_doubt``) or a person approves it."""
        retry_allowed = (
            c.in_doubt is None
            or (c.spec is not None and c.spec.idempotent)
            or bool(decision.obligations.get("retry_in_doubt"))
            or decision.require_approval
        )
        if retry_allowed or self._settings.mode != "enforce":
            return None
        earlier = c.retry.tool_call_id if c.retry is not None else c.tool_call_id
        return self.deny(
            c.thread_id, c.base, decision, ["outcome_unknown"],
            f"The earlier attempt of {c.tool!r} (call {earlier}) started but never finished, so its outcome is "
            "unknown. It was not retried automatically because the tool is not declared idempotent; check the "
            "target system, then ask for an approval or a new call.",
        )

    def _approve_and_plan(self, c: _Call, decision: PolicyDecision, inherited: ApprovalDecision | None) -> Plan:
        """3. approval (an inherited one, or asked for now; an edit is decided again), then the plan."""
        executed_args: Mapping[str, Any] = c.args
        approval_id = None
        if inherited is not None:
            # The earlier call's approval, granted and never used: this call uses it, once (its tool.started
            # names it, and the earlier call is superseded).
            approval_id = inherited.request_id
            if inherited.decision == "edit":
                executed_args = dict(inherited.args or {})
        elif decision.require_approval and self._settings.mode == "enforce":
            outcome = self._approvals.approval(
                c.thread_id, c.base, c.args, decision, c.charter, c.profile, c.rec, c.in_doubt is not None, c.origin)
            if isinstance(outcome, ToolMessage):
                return Plan(final=outcome)
            approval, executed_args = outcome
            approval_id = approval.request_id
            if approval.decision == "edit":
                again = self._decide_edit(c, executed_args)
                if not again.allow:
                    return self.deny(
                        c.thread_id, c.base, again, list(again.reasons),
                        f"The edited call was denied by policy ({again.engine}): {', '.join(again.reasons)}. The tool was not run.",
                    )
                decision = again if not again.require_approval else decision
        request = c.request
        if executed_args is not c.args:
            request = request.override(tool_call={**request.tool_call, "args": dict(executed_args)})
        return Plan(
            request=request,
            thread_id=c.thread_id,
            tool_call_id=c.tool_call_id,
            tool=c.tool,
            args_digest=c.args_digest,
            executed_args=executed_args,
            # The original arguments were digested once already (args_digest).
            executed_args_digest=c.args_digest if executed_args is c.args else canonical.digest(dict(executed_args)),
            attempt=c.rec.next_attempt,
            decision=decision,
            spec=c.spec,
            profile=c.profile,
            approval_request_id=approval_id,
            claim_seq=c.view.read_seq,
            origin=c.origin,
            retry_of=c.retry.tool_call_id if c.retry is not None else None,
        )

    def _decide_edit(self, c: _Call, executed_args: Mapping[str, Any]) -> PolicyDecision:
        """A reviewer cannot approve their way past policy: the edited action is decided again, on
        the history as it is now (with the approval just recorded), and recorded."""
        edited_digest = canonical.digest(dict(executed_args))
        again = self.decide(c.thread_id, c.tool, c.spec, executed_args, c.charter, self._recorder.view(c.thread_id))
        self._recorder.append(
            c.thread_id,
            EventKind.POLICY_DECIDED,
            c.tool_call_id,
            # Filed under the edited arguments' digest, so the original call's recorded decision
            # (the one the approval is bound to) stays the one a re-run of this task reuses.
            {**c.base, "args_digest": edited_digest, "original_args_digest": c.base["args_digest"],
             "decision": again.to_dict(), "enforced": True, "edited_args_digest": edited_digest,
             "data_classes": list(self._recorder.data_classes_of(c.tool))},
        )
        return again

    # ------------------------------------------------------------- charter and policy
    def charter(self, thread_id: str, recorded: RunCharter | None, config: Mapping[str, Any] | None) -> RunCharter | None:
        """The recorded charter; else one from the run (``charter_source``, config, default), recorded now."""
        if recorded is not None:
            return recorded
        s = self._settings
        doc = ((config or {}).get("configurable") or {}).get(CHARTER_CONFIG_KEY)
        source = s.charter_source
        if source is not None:
            doc = charter = source(config or {})
        else:
            charter = RunCharter.from_dict(doc) if isinstance(doc, Mapping) else (
                doc if isinstance(doc, RunCharter) else s.default_charter
            )
        if charter is None:
            return None
        self._recorder.append(
            thread_id,
            EventKind.RUN_STARTED,
            None,
            {"charter": charter.to_dict(), "workload_id": s.workload_id, "source": "run" if source is not None else "config" if doc else "default"},
        )
        return charter

    def decide(
        self, thread_id: str, tool: str, spec: ToolSpec | None, args: Mapping[str, Any], charter: RunCharter | None,
        view: _ThreadSnapshot,
    ) -> PolicyDecision:
        """The policy's decision on one versioned input document (fail closed on a bad one)."""
        s = self._settings
        try:
            policy_input = build_policy_input(
                workload_id=s.workload_id,
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
                version=self._recorder.input_version,
            )
        except ConfigurationError as exc:
            return fail_closed(s.policy, {"tool": tool}, exc)
        decision = s.policy.decide(policy_input)
        if spec is None and s.unknown_tools == "deny":
            return deny_undeclared(decision)
        return decision

    # ------------------------------------------------------------- retries under a new id
    def find_retry(
        self, thread_id: str, tool: str, args_digest: str, tool_call_id: str, origin: Origin, state: Any
    ) -> tuple[Retry, _ThreadSnapshot] | None:
        """The earlier call a new call retries, if any (see guards/retries.py), with a fresh snapshot.

        Cheap when there is none: the view's index of calls by (tool, arguments) is empty for a
        new action, and an identical call whose answer the state holds is a new action, known
        without a read. Otherwise the candidate's own handling is waited for — here and in any
        other live process (its claim) — and the thread read again before it is judged.
        """
        view = self._recorder.view_of(thread_id)
        with view.lock:
            candidates = view.earlier_calls(tool, args_digest, tool_call_id)
        seen: SeenCalls | None = None
        claims, timeout = self._settings.claims, self._settings.claim_timeout
        for n, (tcid, rec) in enumerate(candidates):
            if rec.retry_status() is None or rec.origin is None or rec.origin == (origin.checkpoint_ns, origin.checkpoint_id):
                continue
            if n == 0 or seen is None:
                seen = seen_calls(state)
            if seen is not None and tcid in seen.answered:
                continue  # the usual case, known without a read: the model saw that call's outcome
            if self._in_flight.here(thread_id, tcid):
                continue  # being handled by this very process: alive, so not a call whose message was lost
            if claims is not None:
                # Not while another live process runs it: wait for its claim, then read what it left.
                if not claims.acquire(thread_id, tcid, timeout):
                    raise CallInProgressError(
                        f"call {tool_call_id!r} ({tool!r}) repeats call {tcid!r}, which another live process is still "
                        f"executing after {timeout:g}s; nothing was run here. Resume the run later."
                    )
                claims.release(thread_id, tcid)
            snap = self._recorder.view(thread_id, (tcid, args_digest))
            rec = snap.call
            status = rec.retry_status()
            if status is None or rec.origin is None:
                continue
            asked = seen is not None and tcid in seen.asked
            # Its model message was durable and is not in this state (trimmed, forked): a new action.
            # A sink that cannot tell says "recorded": a call is never taken for a retry on a guess.
            if not asked and self._settings.guard_sink.checkpoint_recorded(thread_id, *rec.origin):
                continue
            return Retry(tcid, rec, status, snap.read_seq), self._recorder.view(thread_id, (tool_call_id, args_digest))
        return None

    def _take_over(self, thread_id: str, base: Mapping[str, Any], retry: Retry) -> Plan | ApprovalDecision | None:
        """Record that the new call retries ``retry`` and act on it: a replay of its result (a final
        plan), its unused approval (to run under), or ``None`` for an attempt in doubt (the caller
        applies the in-doubt rules). Commits only if the earlier call is unchanged since it was
        read (another worker taking it over first makes this a stale decision, decided again)."""
        earlier, new = retry.tool_call_id, base["tool_call_id"]
        rec = retry.record
        mine = {"tool_call_id": earlier, "tool": base["tool"], "args_digest": base["args_digest"]}
        drafts: list[EventDraft] = []
        if retry.status == "in_doubt" and rec.in_doubt_attempt is not None:
            broker = self._settings.broker
            if broker is not None:
                broker.revoke_call(thread_id, earlier)
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
            self._recorder.commit(thread_id, drafts, None, claim=claim)
            if retry.status == "approved":
                assert rec.approval_final is not None
                return ApprovalDecision.parse(cast(ApprovalAnswered, rec.approval_final.payload)["answer"])
            return None
        assert rec.completed_seq is not None
        completed = self._outcomes.completed_event(thread_id, earlier, rec.completed_seq, rec.completed_hash)
        drafts.append(EventDraft(EventKind.TOOL_REPLAYED, {
            **base, "completed_seq": completed.seq, "attempt": cast(ToolCompleted, completed.payload)["attempt"], "retry_of": earlier},
            subject=new))
        self._recorder.commit(thread_id, *self._recorder.drafts(thread_id, new, drafts), claim=claim)
        return Plan(final=_readdressed(self._outcomes.load_result(completed), earlier, new))

    # ------------------------------------------------------------- refusals
    def _denied_message(self, tool: str, spec: ToolSpec | None, decision: PolicyDecision) -> str:
        """What the model (and the audit) reads for a denied call; an undeclared tool's says how to declare it."""
        reasons = ", ".join(decision.reasons) or "no reason given"
        if spec is None and "unknown_tool" in decision.reasons:
            rule = " and undeclared tools are denied (unknown_tools='deny')" if self._settings.unknown_tools == "deny" else ""
            return (
                f"Denied ({reasons}; policy {decision.engine}): {tool!r} is not a declared tool{rule}. The tool was "
                f"not run. Declare it with warden.tools.register(ToolSpec({tool!r}, ...)) so the policy can decide it."
            )
        return f"Denied by policy ({decision.engine}): {reasons}. The tool was not run."

    def deny(
        self, thread_id: str, base: Mapping[str, Any], decision: PolicyDecision | None, reasons: list[str], message: str
    ) -> Plan:
        """Record ``tool.denied`` (with the call's deferred decision) and answer the model with ``message``."""
        self._recorder.append(
            thread_id,
            EventKind.TOOL_DENIED,
            base["tool_call_id"],
            {**base, "reasons": reasons, "message": message, "decision_id": decision.decision_id if decision else None},
        )
        return Plan(final=_error(message, base["tool"], base["tool_call_id"]))

    def credential_refused(self, plan: Plan, exc: CredentialError) -> ToolMessage | Command:
        """The broker would not issue the call's credential: denied, the tool not run."""
        base = {"tool_call_id": plan.tool_call_id, "tool": plan.tool, "args_digest": plan.args_digest}
        reason = type(exc).__name__
        final = self.deny(
            plan.thread_id, base, plan.decision, [f"credential_refused:{reason}"],
            f"No credential could be issued for {plan.tool!r} ({reason}: {exc}); the tool was not run.",
        ).final
        assert final is not None
        return final


def _error(content: str, tool: str, tool_call_id: str) -> ToolMessage:
    return ToolMessage(content=content, name=tool, tool_call_id=tool_call_id, status="error")


def _readdressed(result: ToolMessage | Command, old: str, new: str) -> ToolMessage | Command:
    """A recorded result answered to call ``new`` instead of ``old`` (a retry under a new id)."""
    if isinstance(result, ToolMessage):
        return result.model_copy(update={"tool_call_id": new}) if result.tool_call_id == old else result
    update = result.update
    if isinstance(update, Mapping) and isinstance(update.get("messages"), list):
        msgs = [_readdressed(m, old, new) if isinstance(m, ToolMessage) else m for m in update["messages"]]
        return Command(graph=result.graph, update={**update, "messages": msgs}, resume=result.resume, goto=result.goto)
    return result


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
