"""A guard of its own on a Warden's ledger that counts round trips and records policy inputs (tests)."""

from __future__ import annotations

from typing import Any

from langgraph_warden.guards.guard import ToolGuard
from langgraph_warden.warden import Warden

from .counting_sink import CountingSink


class PolicyWrapper:
    """A policy engine around a real one: same name, revision and input version; ``adecide`` is ``decide``.

    Subclasses change what ``decide`` does (record, time, reshape the decision).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def revision(self) -> str:
        return self.inner.revision

    @property
    def input_version(self) -> int:
        return self.inner.input_version

    def decide(self, policy_input):
        return self.inner.decide(policy_input)

    async def adecide(self, policy_input):
        return self.decide(policy_input)


class RecordingPolicy(PolicyWrapper):
    """Passes decisions through; keeps every policy input it was asked about."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.inputs: list[dict[str, Any]] = []

    def decide(self, policy_input):
        self.inputs.append(policy_input)
        return self.inner.decide(policy_input)


def make_guard(warden: Warden) -> tuple[ToolGuard, CountingSink, RecordingPolicy]:
    """A guard with its own cache of thread views (as another worker would have), same policy and tools."""
    sink = CountingSink(warden.ledger)
    policy = RecordingPolicy(warden.guard.policy)
    return ToolGuard(sink, policy, warden.tools, workload_id=warden.guard.workload_id), sink, policy
