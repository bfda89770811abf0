"""The payload of every event kind, declared once: what a writer puts in, what a reader may take out.

Why TypedDicts and not classes: an event's payload is hashed and signed as the canonical JSON of
the dict its writer built, and a guard folding a long history reads hundreds of payloads per
call. A TypedDict is that dict, typed: the bytes stay exactly what they were, reading a field
costs a dict lookup, and mypy checks every key a reader names. Readers cast
``event.payload`` to the kind's type (:data:`PAYLOADS` maps each kind to it) instead of
reaching into an untyped mapping.

Keys marked ``NotRequired`` are absent from some events of the kind (written by an older
version, or only on one path: an edited decision, a recovered revocation). A history that
fails verification may hold anything; the types describe what the package writes.
"""

from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict

from .events import EventKind

__all__ = [
    "CallRef",
    "OriginRecord",
    "DecisionRecord",
    "RunStarted",
    "CheckpointSaved",
    "WritesSaved",
    "ThreadDeleted",
    "ThreadCopied",
    "CheckpointsRemoved",
    "ChainSnapshot",
    "PolicyDecided",
    "ToolStarted",
    "ToolCompleted",
    "ToolFailed",
    "ToolDenied",
    "ToolReplayed",
    "ToolAborted",
    "ToolSuspended",
    "ToolSuperseded",
    "LeaseRecord",
    "CredentialIssued",
    "CredentialRevoked",
    "ApprovalRequested",
    "ApprovalAnswered",
    "ApprovalExpired",
    "ApprovalRefused",
    "ViewSnapshot",
    "PAYLOADS",
    "call_tool",
]


# ------------------------------------------------------------------ tool calls
class CallRef(TypedDict):
    """What every event about one tool call names first (``guards/guard.py``'s ``base``)."""

    tool_call_id: str
    tool: str
    args_digest: str


class OriginRecord(TypedDict):
    """The checkpoint a call's task ran from (``guards/retries.py``'s ``Origin.to_dict``)."""

    checkpoint_ns: str
    checkpoint_id: str
    #: Only on ``tool.started``: the guard saw that checkpoint committed before the side effect.
    durable: NotRequired[bool]


class DecisionRecord(TypedDict):
    """A policy decision as ``PolicyDecision.to_dict`` records it."""

    allow: bool
    require_approval: bool
    reasons: list[str]
    scopes: NotRequired[list[str]]
    ttl_seconds: NotRequired[int | None]
    obligations: NotRequired[dict[str, Any]]
    engine: NotRequired[str]
    policy_revision: NotRequired[str | None]
    decision_id: NotRequired[str | None]
    input_digest: NotRequired[str | None]


class PolicyDecided(CallRef):
    decision: DecisionRecord
    enforced: bool
    retry_of_in_doubt: NotRequired[bool]
    #: The earlier call this one was recognised as a retry of (``None``: it is not a retry).
    retry_of: NotRequired[str | None]
    data_classes: NotRequired[list[str]]
    #: A decision on an approver's edited arguments: filed under their digest (``args_digest``).
    original_args_digest: NotRequired[str]
    edited_args_digest: NotRequired[str]


class _Attempt(CallRef):
    attempt: int


class ToolStarted(_Attempt):
    executed_args_digest: NotRequired[str]
    decision_id: NotRequired[str | None]
    policy_input_digest: NotRequired[str | None]
    #: The granted approval request this attempt runs under (``None``: none was needed).
    approval_request_id: str | None
    lease_id: NotRequired[str | None]
    origin: NotRequired[OriginRecord | None]
    retry_of: NotRequired[str | None]


class ResultRecord(TypedDict):
    type: str
    data: bytes


class ToolCompleted(_Attempt):
    status: Literal["success", "error"]
    result_digest: str
    result: ResultRecord
    preview: str
    lease_id: str | None


class ToolFailed(_Attempt):
    error_type: str
    error: str
    lease_id: str | None


class ToolDenied(CallRef):
    reasons: list[str]
    message: str
    decision_id: str | None
    #: Present when the refusal came after an attempt number was assigned (a credential refused).
    attempt: NotRequired[int]


class ToolReplayed(_Attempt):
    """``attempt``: the attempt whose recorded result was returned."""

    completed_seq: int
    #: The earlier call whose result this new call was answered with (a retry under a new id).
    retry_of: NotRequired[str]


class ToolAborted(_Attempt):
    why: str
    outcome: Literal["unknown"]


class ToolSuspended(_Attempt):
    """The tool called ``interrupt()``: the attempt paused on purpose and will run again."""


class ToolSuperseded(CallRef):
    superseded_by: str
    #: What the retry took over: ``completed``, ``in_doubt`` or ``approved``.
    status: str
    why: str


# ------------------------------------------------------------------ credentials
class LeaseRecord(TypedDict):
    """A lease as ``Lease.to_record`` describes it (no secret)."""

    lease_id: str
    provider: str
    jit: bool
    scopes: list[str]
    audience: str
    tool_call_id: str | None
    expires_at: str
    token_digest: str | None


class CredentialIssued(LeaseRecord):
    tool_name: str
    ttl_seconds: int
    ttl_capped: bool


class CredentialRevoked(LeaseRecord):
    reason: str
    revoked: bool
    revoked_at: str
    #: Revoked by crash recovery (the step that held it never reached its ``finally``).
    recovered: NotRequired[Literal[True]]


# ------------------------------------------------------------------ approvals
class ApprovalRequested(CallRef):
    request_id: str
    request: dict[str, Any]  # ApprovalRequest.to_dict()
    origin: NotRequired[OriginRecord | None]


class ApprovalAnswered(CallRef):
    """``approval.granted``, ``approval.rejected`` and ``approval.edited``."""

    request_id: str
    approver: str
    decision: Literal["approve", "reject", "edit"]
    message: str | None
    authenticated: bool
    answer: dict[str, Any]  # ApprovalDecision.record()
    original_action_digest: str
    edited_args: NotRequired[dict[str, Any]]
    edited_action_digest: NotRequired[str]


class ApprovalExpired(CallRef):
    request_id: str
    expires_at: str
    approver: str | None


class ApprovalRefused(CallRef):
    """A resume value that could not answer the request (nothing else changed)."""

    request_id: str
    reason: str
    field: str | None
    detail: str
    approver: str | None


# ------------------------------------------------------------------ run, checkpoints, keys
class RunStarted(TypedDict):
    charter: dict[str, Any]  # RunCharter.to_dict()
    workload_id: NotRequired[str]
    source: NotRequired[str]


class CheckpointSaved(TypedDict):
    checkpoint_id: str
    parent_checkpoint_id: str | None
    step: NotRequired[int | None]
    source: NotRequired[str | None]
    run_id: str | None
    digest: str
    replaced: bool
    #: Written by a thread copy: the thread the checkpoint was copied from.
    copied_from: NotRequired[str]


class WritesSaved(TypedDict):
    checkpoint_id: str
    task_id: str
    task_path: str
    rows: list[dict[str, Any]]
    copied_from: NotRequired[str]


class ThreadDeleted(TypedDict):
    checkpoints: int
    writes: int


class ThreadCopied(TypedDict):
    source_thread_id: str
    checkpoints: int


class CheckpointsRemoved(TypedDict):
    """``checkpoints.pruned`` and ``runs.deleted``: the (ns, checkpoint id) pairs removed."""

    checkpoints: list[list[str]]
    strategy: NotRequired[str]
    all_writes: NotRequired[bool]
    run_ids: NotRequired[list[str]]


class ChainSnapshot(TypedDict):
    """The checkpointer's signed summary of what a thread's history vouches for (``checkpointers/trust.py``)."""

    covers: int
    trust: Any


class ViewSnapshot(TypedDict):
    """A guard's signed summary of its view of a thread (``guards/thread_view.py``)."""

    covers: int
    charter: dict[str, Any] | None
    history: dict[str, Any]
    calls: list[list[Any]]
    actions: list[list[Any]]
    ids: str


#: Every kind the package writes, and its payload's type. ``view.snapshot`` and ``chain.snapshot`` are
#: named by the modules that write them (not in :class:`EventKind`); ``key.registered`` is reserved
#: and not written by this version (keys are registered in their own table).
PAYLOADS: Mapping[str, type] = {
    EventKind.RUN_STARTED: RunStarted,
    EventKind.CHECKPOINT_SAVED: CheckpointSaved,
    EventKind.WRITES_SAVED: WritesSaved,
    EventKind.THREAD_DELETED: ThreadDeleted,
    EventKind.THREAD_COPIED: ThreadCopied,
    EventKind.CHECKPOINTS_PRUNED: CheckpointsRemoved,
    EventKind.RUNS_DELETED: CheckpointsRemoved,
    EventKind.POLICY_DECIDED: PolicyDecided,
    EventKind.TOOL_STARTED: ToolStarted,
    EventKind.TOOL_COMPLETED: ToolCompleted,
    EventKind.TOOL_FAILED: ToolFailed,
    EventKind.TOOL_DENIED: ToolDenied,
    EventKind.TOOL_REPLAYED: ToolReplayed,
    EventKind.TOOL_ABORTED: ToolAborted,
    EventKind.TOOL_SUSPENDED: ToolSuspended,
    EventKind.TOOL_SUPERSEDED: ToolSuperseded,
    EventKind.CREDENTIAL_ISSUED: CredentialIssued,
    EventKind.CREDENTIAL_REVOKED: CredentialRevoked,
    EventKind.APPROVAL_REQUESTED: ApprovalRequested,
    EventKind.APPROVAL_GRANTED: ApprovalAnswered,
    EventKind.APPROVAL_REJECTED: ApprovalAnswered,
    EventKind.APPROVAL_EDITED: ApprovalAnswered,
    EventKind.APPROVAL_EXPIRED: ApprovalExpired,
    EventKind.APPROVAL_REFUSED: ApprovalRefused,
    "view.snapshot": ViewSnapshot,
    "chain.snapshot": ChainSnapshot,
}


def call_tool(payload: Mapping[str, Any]) -> str:
    """The tool an event about a call names: ``tool`` on tool, policy and approval events,
    ``tool_name`` on ``credential.issued``; ``"?"`` when neither is there."""
    return payload.get("tool") or payload.get("tool_name") or "?"
