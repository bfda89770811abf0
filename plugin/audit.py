"""Audit trail: a thread's signed events reconstructed into actions a reviewer can read.

Why reconstruct instead of logging a summary: the summary must be *provable*.
Every field here is derived from the hash-chained, signed events, and every
action says whether the events behind it verified. The trail answers: which
actions were authorised, which ran, which were replayed from the record
instead of running again, which were denied, rejected or aborted — and whether
anything ran without an authorisation.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .chain import ChainReport, Finding
from .charter import RunCharter
from .events import Event, EventKind

__all__ = ["Action", "AuditSummary", "AuditTrail", "reconstruct", "ActionStatus", "view_snapshot_findings"]

#: Statuses of an action (one tool call id of a thread).
ActionStatus = str
STATUSES = (
    "authorised+completed",
    "replayed",
    "denied",
    "approval-pending",
    "approved",
    "rejected",
    "aborted",
    "failed",
    "in-doubt",
    "decided",
    "ran-unauthorised",
    "superseded",
)


@dataclass(slots=True)
class Action:
    """One tool call of the run, as the history proves it."""

    tool_call_id: str
    tool: str
    args_digest: str
    status: ActionStatus = "decided"
    decision: dict[str, Any] | None = None
    reasons: list[str] = field(default_factory=list)
    approver: str | None = None
    approval_request_id: str | None = None
    leases: list[str] = field(default_factory=list)
    attempts: int = 0
    replays: int = 0
    aborted_attempts: int = 0
    ran: bool = False
    authorised: bool = False
    ran_without_authorisation: bool = False
    first_ts: str | None = None
    completed_ts: str | None = None
    seqs: list[int] = field(default_factory=list)
    verified: bool = True
    #: The earlier call this one retried under a new id (its model message was lost), if any.
    retry_of: str | None = None
    #: The later call recorded as this one's retry, if any.
    superseded_by: str | None = None
    #: Why the history shows this call's side effect more than once (empty: it does not).
    executed_twice: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "tool_call_id": self.tool_call_id,
            "tool": self.tool,
            "args_digest": self.args_digest,
            "status": self.status,
            "decision": self.decision,
            "reasons": self.reasons,
            "approver": self.approver,
            "approval_request_id": self.approval_request_id,
            "leases": self.leases,
            "attempts": self.attempts,
            "replays": self.replays,
            "aborted_attempts": self.aborted_attempts,
            "ran": self.ran,
            "authorised": self.authorised,
            "ran_without_authorisation": self.ran_without_authorisation,
            "first_ts": self.first_ts,
            "completed_ts": self.completed_ts,
            "seqs": self.seqs,
            "verified": self.verified,
            "retry_of": self.retry_of,
            "superseded_by": self.superseded_by,
            "executed_twice": self.executed_twice,
        }


@dataclass(slots=True)
class AuditSummary:
    authorised: list[str] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    replayed: list[str] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    ran_without_authorisation: list[str] = field(default_factory=list)
    side_effects_executed_twice: list[str] = field(default_factory=list)
    credentials_issued: int = 0
    credentials_revoked: int = 0
    credentials_outstanding: list[str] = field(default_factory=list)
    verified: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(slots=True)
class AuditTrail:
    """The reconstructed trail of one thread (``_repr_html_`` renders it in notebooks)."""

    thread_id: str
    charter: RunCharter | None
    owner: str | None
    actions: list[Action]
    summary: AuditSummary
    events: list[Event]
    verification: ChainReport | None = None

    @property
    def verified(self) -> bool:
        return self.summary.verified

    def action(self, tool_call_id: str) -> Action:
        for a in self.actions:
            if a.tool_call_id == tool_call_id:
                return a
        raise KeyError(f"no action with tool_call_id {tool_call_id!r} in thread {self.thread_id!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "thread_id": self.thread_id,
            "owner": self.owner,
            "charter": self.charter.to_dict() if self.charter else None,
            "verified": self.verified,
            "actions": [a.to_dict() for a in self.actions],
            "summary": self.summary.to_dict(),
            "findings": [str(f) for f in (self.verification.findings if self.verification else [])],
        }

    def export_records(self) -> Iterable[dict[str, Any]]:
        """One record per event with chain position and hash (SIEM ingestion)."""
        for e in self.events:
            yield {**e.to_record(), "chain": {"seq": e.seq, "prev_hash": e.prev_hash, "hash": e.hash}, "verified": self.verified}

    # ------------------------------------------------------------ rendering
    def rich_table(self) -> Any:
        """A rich renderable of the trail: one column per field when the console is wide enough, else a
        compact layout that stays readable at 80 columns (see :mod:`langgraph_warden.audit_table`)."""
        from .audit_table import TrailTable

        return TrailTable(self)

    def _repr_html_(self) -> str:
        esc = html.escape
        s = self.summary
        colour = {"authorised+completed": "#1a7f37", "denied": "#cf222e", "rejected": "#cf222e", "aborted": "#9a6700",
                  "failed": "#9a6700", "in-doubt": "#9a6700", "approval-pending": "#0969da"}
        rows = "".join(
            "<tr>"
            f"<td>{i}</td><td><code>{esc(a.tool)}</code></td><td><code>{esc(a.tool_call_id)}</code></td>"
            f"<td style='color:{colour.get(a.status, '#57606a')};font-weight:600'>{esc(a.status)}</td>"
            f"<td>{esc(_decision_label(a.decision))}{(' — ' + esc(', '.join(a.reasons))) if a.reasons else ''}</td>"
            f"<td>{esc(a.approver or '')}</td><td>{esc(', '.join(x[:8] for x in a.leases))}</td>"
            f"<td>{a.attempts}</td><td>{a.replays}</td><td>{'✔' if a.verified else '✘'}</td>"
            "</tr>"
            for i, a in enumerate(self.actions, 1)
        )
        charter = (
            f"<p><b>Owner</b> {esc(self.charter.owner)} · <b>risk</b> {esc(self.charter.risk_tier)} · "
            f"<b>intent</b> {esc(self.charter.intent)}</p>"
            if self.charter
            else "<p><b>No charter recorded</b></p>"
        )
        verdict = (
            "<span style='color:#1a7f37;font-weight:700'>signatures and hash chain verified</span>"
            if self.verified
            else "<span style='color:#cf222e;font-weight:700'>VERIFICATION FAILED</span>"
        )
        summary = (
            f"<p>{len(s.authorised)} authorised · {len(s.ran)} ran · {len(s.replayed)} replayed · "
            f"{len(s.denied)} denied · {len(s.rejected)} rejected · {len(s.aborted)} aborted · "
            f"{len(s.failed)} failed · {len(s.pending)} pending · "
            f"<b>{len(s.ran_without_authorisation)} ran without authorisation</b> · "
            f"credentials {s.credentials_issued} issued / {s.credentials_revoked} revoked</p>"
        )
        head = "".join(f"<th>{c}</th>" for c in ("#", "tool", "call", "status", "decision", "approver", "lease", "attempts", "replays", "verified"))
        return (
            f"<div><h4>Audit trail of <code>{esc(self.thread_id)}</code> — {verdict}</h4>{charter}{summary}"
            f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>"
        )


def _decision_label(decision: dict[str, Any] | None) -> str:
    if not decision:
        return "—"
    if not decision.get("allow"):
        return "deny"
    return "allow after approval" if decision.get("require_approval") else "allow"


def reconstruct(thread_id: str, events: Sequence[Event], verification: ChainReport | None = None) -> AuditTrail:
    """Fold a thread's events into actions and a summary."""
    bad_seqs = {f.seq for f in verification.findings} if verification is not None else set()
    chain_ok = verification.ok if verification is not None else False
    charter: RunCharter | None = None
    actions: dict[str, Action] = {}
    order: list[str] = []
    issued: dict[str, str] = {}
    revoked: set[str] = set()
    granted: set[str | None] = set()  # approval request ids that were granted (or edited)
    running: dict[str, Any] = {}  # tool call id -> attempt started and not yet ended
    for e in events:
        p = e.payload
        if e.kind == EventKind.RUN_STARTED:
            try:
                charter = RunCharter.from_dict(p["charter"])
            except Exception:
                charter = None
            continue
        if e.kind == EventKind.CREDENTIAL_ISSUED:
            issued[p.get("lease_id", "")] = p.get("tool_call_id") or ""
        elif e.kind == EventKind.CREDENTIAL_REVOKED:
            revoked.add(p.get("lease_id", ""))
        tcid = p.get("tool_call_id")
        if not tcid or not (e.kind.startswith("tool.") or e.kind.startswith("policy.") or e.kind.startswith("approval.") or e.kind.startswith("credential.")):
            continue
        a = actions.get(tcid)
        if a is None:
            a = actions[tcid] = Action(tool_call_id=tcid, tool=p.get("tool") or p.get("tool_name") or "?", args_digest=p.get("args_digest", ""))
            order.append(tcid)
        a.seqs.append(e.seq)
        a.first_ts = a.first_ts or e.ts.isoformat()
        k = e.kind
        if p.get("retry_of") and a.retry_of is None:
            a.retry_of = p["retry_of"]
        if k == EventKind.POLICY_DECIDED:
            a.decision = dict(p["decision"])
            a.reasons = list(a.decision.get("reasons", []))
            if a.decision.get("allow") and not a.decision.get("require_approval"):
                a.authorised = True
            if a.status in ("decided",):
                a.status = "decided" if a.decision.get("allow") else "denied"
        elif k == EventKind.TOOL_DENIED:
            reasons = list(p.get("reasons", []))
            a.reasons = reasons
            if a.aborted_attempts and not a.ran:
                # The retry of an in-doubt attempt was refused (outcome unknown): the action stays aborted,
                # and the attempt that started was authorised, so the authorisation stands.
                a.status = "aborted"
            else:
                a.status = "rejected" if "rejected_by_approver" in reasons else "denied"
                a.authorised = False if not a.ran else a.authorised
        elif k == EventKind.APPROVAL_REQUESTED:
            a.approval_request_id = p.get("request_id")
            a.status = "approval-pending"
        elif k in (EventKind.APPROVAL_GRANTED, EventKind.APPROVAL_EDITED):
            granted.add(p.get("request_id"))
            a.approver = p.get("approver")
            a.authorised = True
            a.status = "approved"
        elif k == EventKind.APPROVAL_REJECTED:
            a.approver = p.get("approver")
            a.status = "rejected"
        elif k == EventKind.APPROVAL_EXPIRED:
            a.status = "denied"
            a.reasons = ["approval_expired"]
        elif k == EventKind.CREDENTIAL_ISSUED:
            a.leases.append(p.get("lease_id", ""))
        elif k == EventKind.TOOL_STARTED:
            if tcid in running:
                # A second attempt started while the first had no outcome, no abort: two executions at once.
                a.executed_twice = a.executed_twice or f"attempt {p.get('attempt')} started while attempt {running[tcid]} was still running"
            earlier = actions.get(a.retry_of) if a.retry_of else None
            if earlier is not None and earlier.ran:
                a.executed_twice = a.executed_twice or f"started again as a retry of {a.retry_of}, which had completed"
            running[tcid] = p.get("attempt")
            a.attempts += 1
            # Each attempt needs its own authorisation: the decision in force allowed it, and if that
            # decision required approval, the attempt names a granted approval request.
            d = a.decision or {}
            ok = bool(d.get("allow")) and (not d.get("require_approval") or p.get("approval_request_id") in granted)
            if not ok:
                a.ran_without_authorisation = True
            a.status = "in-doubt"
        elif k == EventKind.TOOL_COMPLETED:
            running.pop(tcid, None)
            if a.ran:
                a.executed_twice = a.executed_twice or "completed more than once"
            a.ran = True
            a.status = "authorised+completed" if a.authorised else "ran-unauthorised"
            a.completed_ts = e.ts.isoformat()
        elif k == EventKind.TOOL_FAILED:
            running.pop(tcid, None)
            a.status = "failed"
        elif k == EventKind.TOOL_ABORTED:
            running.pop(tcid, None)
            a.aborted_attempts += 1
            a.status = "aborted"
        elif k == EventKind.TOOL_SUPERSEDED:
            a.superseded_by = p.get("superseded_by")
            if a.status in ("approved", "approval-pending"):
                a.status = "superseded"
        elif k == EventKind.TOOL_REPLAYED:
            a.replays += 1
            a.status = "replayed" if not a.ran else a.status
        elif k == EventKind.TOOL_SUSPENDED:
            a.status = "approval-pending"
    summary = AuditSummary()
    for tcid in order:
        a = actions[tcid]
        a.verified = chain_ok and not (set(a.seqs) & bad_seqs)
        if a.executed_twice:
            summary.side_effects_executed_twice.append(tcid)
        if a.authorised:
            summary.authorised.append(tcid)
        if a.ran:
            summary.ran.append(tcid)
        if a.replays:
            summary.replayed.append(tcid)
        if a.status == "denied":
            summary.denied.append(tcid)
        if a.status == "rejected":
            summary.rejected.append(tcid)
        if a.aborted_attempts:
            summary.aborted.append(tcid)
        if a.status == "failed":
            summary.failed.append(tcid)
        if a.status in ("approval-pending", "approved", "in-doubt"):
            summary.pending.append(tcid)
        if a.ran_without_authorisation:
            summary.ran_without_authorisation.append(tcid)
    summary.credentials_issued = len(issued)
    summary.credentials_revoked = len(revoked & set(issued))
    summary.credentials_outstanding = sorted(set(issued) - revoked)
    summary.verified = chain_ok
    return AuditTrail(
        thread_id=thread_id,
        charter=charter,
        owner=charter.owner if charter else None,
        actions=[actions[t] for t in order],
        summary=summary,
        events=list(events),
        verification=verification,
    )


def export_jsonl(trails: Iterable[AuditTrail]) -> Iterable[str]:
    for trail in trails:
        for rec in trail.export_records():
            yield json.dumps(rec, sort_keys=True, default=str)


def view_snapshot_findings(thread_id: str, events: Sequence[Event]) -> list[Finding]:
    """Every ``view.snapshot`` of a thread recomputed from the events before it: a finding for each
    that records something else (a guard that restores from it would decide on a wrong view)."""
    from .guards.thread_view import replay_view_snapshots

    return [Finding(thread_id, seq, "snapshot_mismatch", detail)
            for seq, detail in replay_view_snapshots([e.summary() for e in events])]
