"""Tools the guard tests share."""

from __future__ import annotations

from langchain_core.tools import BaseTool, tool


def recording_echo() -> tuple[BaseTool, list[str]]:
    """An ``echo(text)`` tool and the list of texts it ran with: what actually executed."""
    ran: list[str] = []

    @tool
    def echo(text: str) -> str:
        """Return the text."""
        ran.append(text)
        return text

    return echo, ran
