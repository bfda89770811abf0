"""Graph and types for the ``LANGGRAPH_STRICT_MSGPACK`` test.

``Point`` is declared in the state schema, so LangGraph adds it to the
checkpointer's msgpack allowlist when it compiles the graph (strict mode
allows it). ``Smuggled`` only ever hides in a field typed ``Any``: strict mode
must refuse to reconstruct it on load (LangGraph returns the raw field data and
logs "Blocked deserialization of ..."), while the default mode rebuilds it with
a warning.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

__all__ = ["Point", "Smuggled", "StrictState", "build_strict", "WHEN", "UID"]

WHEN = dt.datetime(2024, 5, 17, 12, 30, tzinfo=dt.timezone.utc)
UID = uuid.UUID("12345678-1234-5678-1234-567812345678")


@dataclass
class Point:
    x: int
    y: int


@dataclass
class Smuggled:
    payload: str


class StrictState(TypedDict, total=False):
    point: Point
    extra: Any
    when: dt.datetime
    uid: uuid.UUID
    done: bool


def build_strict() -> StateGraph:
    def fill(state: StrictState) -> dict[str, Any]:
        return {
            "point": Point(3, 4),
            "extra": Smuggled("rm -rf /"),
            "when": WHEN,
            "uid": UID,
        }

    def finish(state: StrictState) -> dict[str, Any]:
        return {"done": True}

    b = StateGraph(StrictState)
    b.add_node("fill", fill)
    b.add_node("finish", finish)
    b.add_edge(START, "fill")
    b.add_edge("fill", "finish")
    b.add_edge("finish", END)
    return b


def describe(values: dict[str, Any]) -> dict[str, Any]:
    """A JSON-able description of what came back from the checkpoint."""
    return {k: {"type": f"{type(v).__module__}.{type(v).__qualname__}", "repr": repr(v)} for k, v in values.items()}
