"""What the guard settled about one tool call before its side effect (the plan), and the
signal that a decision must be made again (:class:`StaleDecision`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import ToolMessage
from langgraph.types import Command

from langgraph_warden.charter import TierProfile

from .policy import PolicyDecision
from .retries import Origin
from .thread_view import _CallRecord
from .tools import ToolSpec

__all__ = ["Plan", "Retry", "StaleDecision", "config_of"]


class StaleDecision(Exception):
    """A decision made on this process's cached view was not recorded: the thread had newer events.

    Nothing was written and the tool did not run; the guard decides again on a fresh read.
    """


@dataclass(frozen=True, slots=True)
class Retry:
    """An earlier call (``tool_call_id``) that a new call retries under a new id (see guards/retries.py)."""

    tool_call_id: str
    record: _CallRecord
    #: "completed", "in_doubt" or "approved" (see _CallRecord.retry_status)
    status: str
    #: the seq the earlier call's record was read at: the takeover commits only if nothing of it changed since
    read_seq: int


@dataclass(slots=True)
class Plan:
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
    #: Whether tool.started was committed with the call's credential lease (Outcomes.lease).
    started: bool = False

    def base(self) -> dict[str, Any]:
        """The fields every outcome event of this attempt carries."""
        return {"tool_call_id": self.tool_call_id, "tool": self.tool, "args_digest": self.args_digest, "attempt": self.attempt}


def config_of(request: Any) -> Mapping[str, Any]:
    """The run config of a ``ToolCallRequest``: its runtime's, else LangGraph's current one."""
    runtime = getattr(request, "runtime", None)  # ToolCallRequest.runtime is optional in langchain's type
    config = getattr(runtime, "config", None)
    if not config:
        from langgraph.config import get_config

        config = get_config()
    return config
