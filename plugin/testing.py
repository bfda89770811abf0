"""Test doubles for governed agents: a scripted chat model that needs no LLM, key or network.

Why a module of its own: tests, examples and notebooks need a model that ``create_agent`` and
``ToolNode`` graphs accept and that answers the same way in every process — a run killed and
resumed elsewhere must be asked the same question and give the same answer, or exactly-once
cannot be shown. It lives here, not in the demo, so production code never imports it.

    from langgraph_warden.testing import ScriptedChatModel, tool_call
    from langchain_core.messages import AIMessage

    model = ScriptedChatModel(script=[
        AIMessage(content="", tool_calls=[tool_call("issue_refund", {"order_id": "O-77"}, "call_1")]),
        AIMessage(content="Refunded."),
    ])
    agent = create_agent(model, tools, middleware=[warden.middleware()], checkpointer=warden.checkpointer)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

__all__ = ["ScriptedChatModel", "tool_call"]


def tool_call(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    """One tool call for ``AIMessage(tool_calls=[...])``; ``call_id`` is the id the guard records."""
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


class ScriptedChatModel(GenericFakeChatModel):
    """A chat model that answers turn *n* with ``script[n]``, where *n* counts the AI messages so far.

    Deterministic across processes (the answer depends only on the conversation), so a resumed
    run gets the reply the crashed one got; past the end of the script the last reply repeats.
    ``bind_tools`` returns the model itself: the tool calls come from the script, not from a
    schema.
    """

    script: list[AIMessage]
    messages: Any = None  # GenericFakeChatModel's iterator, unused: replies come from ``script``

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        turn = sum(1 for m in messages if isinstance(m, AIMessage))
        reply = self.script[min(turn, len(self.script) - 1)]
        return ChatResult(generations=[ChatGeneration(message=reply.model_copy())])
