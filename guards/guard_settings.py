"""What the guard's parts read from the guard: its settings, as one declared seam.

The parts (thread views and recorder, decision pipeline, approval flow, outcomes, in-flight
claims) read these through the guard instead of keeping copies: callers change some of them on
a live guard (``guard.policy = ...``, ``guard.sink = ...``, ``guard.charter_source = ...``)
and every part must see the change at its next call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol

from langgraph_warden.charter import RunCharter
from langgraph_warden.events import CallClaims, EventSink, GuardSink

from .credentials import CredentialBroker
from .policy import PolicyEngine
from .tools import ToolRegistry, UnknownTools

__all__ = ["CHARTER_CONFIG_KEY", "GuardMode", "GuardSettings"]

#: ``config["configurable"][CHARTER_CONFIG_KEY]`` may carry a charter dict for a new run.
CHARTER_CONFIG_KEY = "warden_charter"

GuardMode = Literal["enforce", "monitor"]


class GuardSettings(Protocol):
    """The :class:`~langgraph_warden.guards.guard.ToolGuard` settings its parts read (see its docstring)."""

    @property
    def sink(self) -> EventSink:
        """The sink as given (its identity tells whether a checkpointer shares it: guards/retries.py)."""
        ...

    @property
    def guard_sink(self) -> GuardSink:
        """The same sink with every capability the guard calls (see guards/guard_sink.py)."""
        ...

    @property
    def policy(self) -> PolicyEngine: ...

    @property
    def registry(self) -> ToolRegistry: ...

    @property
    def workload_id(self) -> str: ...

    @property
    def broker(self) -> CredentialBroker | None: ...

    @property
    def mode(self) -> GuardMode: ...

    @property
    def approver_keys(self) -> Mapping[str, bytes]: ...

    @property
    def default_charter(self) -> RunCharter | None: ...

    @property
    def charter_source(self) -> Callable[[Mapping[str, Any]], RunCharter | None] | None: ...

    @property
    def charter_hint(self) -> str | None: ...

    @property
    def claims(self) -> CallClaims | None: ...

    @property
    def claim_timeout(self) -> float: ...

    @property
    def origin_timeout(self) -> float: ...

    @property
    def unknown_tools(self) -> UnknownTools: ...
