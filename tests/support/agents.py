"""Test agents: a scripted chat model (the LLM boundary) and tools whose side effects are counted on disk.

Side effects are appended to a file so they are counted *outside* the process
that ran them — a SIGKILLed process cannot hide a side effect it performed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage

from langgraph_warden.testing import ScriptedChatModel  # the scripted LLM boundary, re-exported

__all__ = ["ScriptedChatModel", "SideEffects", "call", "turn"]


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
