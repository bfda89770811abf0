"""``WardenMiddleware``: the same guard as LangChain agent middleware for ``create_agent``.

    agent = create_agent(model, tools, middleware=[WardenMiddleware(guard)], checkpointer=saver)

``create_agent`` dispatches each tool call of a model turn as its own task, so
several calls that need approval pause at once, each with its own interrupt id;
resume them together with ``Command(resume={interrupt.id: approve(...), ...})``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from langchain.agents.middleware import AgentMiddleware
from langchain_core.messages import ToolMessage
from langgraph.types import Command

from .guard import ToolGuard

__all__ = ["WardenMiddleware"]


class WardenMiddleware(AgentMiddleware):
    """Authorise, credential, record and de-duplicate every tool call of an agent."""

    def __init__(self, guard: ToolGuard) -> None:
        super().__init__()
        self.guard = guard

    @property
    def name(self) -> str:
        return "WardenMiddleware"

    def wrap_tool_call(
        self, request: Any, handler: Callable[[Any], ToolMessage | Command]
    ) -> ToolMessage | Command:
        return self.guard(request, handler)

    async def awrap_tool_call(
        self, request: Any, handler: Callable[[Any], Awaitable[ToolMessage | Command]]
    ) -> ToolMessage | Command:
        return await self.guard.awrap(request, handler)
