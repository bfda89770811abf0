"""Test agents: a scripted chat model (the LLM boundary) and tools whose side effects are counted on disk.

Side effects are appended to a file so they are counted *outside* the process
that ran them — a SIGKILLed process cannot hide a side effect it performed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult


class ScriptedChatModel(GenericFakeChatModel):
    """Answers turn *n* (the number of AI messages already in the conversation) with ``script[n]``.

    Deterministic across processes and re-executions, unlike an iterator of replies.
    """

    script: list[AIMessage]
    messages: Any = None  # unused; GenericFakeChatModel requires the field

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs: Any) -> ChatResult:
        turn = sum(1 for m in messages if isinstance(m, AIMessage))
        reply = self.script[min(turn, len(self.script) - 1)]
        return ChatResult(generations=[ChatGeneration(message=reply.model_copy())])


def call(name: str, args: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"name": name, "args": args, "id": call_id, "type": "tool_call"}


def turn(*calls: dict[str, Any], text: str = "") -> AIMessage:
    return AIMessage(content=text, tool_calls=list(calls))


class SideEffects:
    """An append-only JSON-lines file of side effects performed by tools."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def record(self, tool: str, **data: Any) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"tool": tool, "pid": os.getpid(), **data}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def count(self, tool: str) -> int:
        return sum(1 for e in self.entries() if e["tool"] == tool)
