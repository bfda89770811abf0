"""Version-2 history aggregates equivalent to a version-1 list of calls (tests and benchmarks).

A reference fold, written independently of the guard's incremental one: each entry is one
decision event and, when it has an outcome, one outcome event. It lets a test state a
thread once, as a list, and hand each engine the document of its version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from langgraph_warden.guards.policy import DEFAULT_HISTORY_WINDOW, empty_counters_v2, empty_history_v2

DECISION_COUNTER = {"allow": "allowed", "require_approval": "require_approval", "deny": "denied"}
OUTCOME_COUNTER = {"completed": "completed", "failed": "failed", "aborted": "aborted", "replayed": "replayed"}


def _count(counters: dict[str, Any], name: str, ts: str | None) -> None:
    counters[name] += 1
    if ts is not None:
        counters["first_ts"] = counters["first_ts"] or ts
        counters["last_ts"] = ts


def aggregate(
    entries: Sequence[Mapping[str, Any]],
    *,
    window: int = DEFAULT_HISTORY_WINDOW,
    data_classes: Mapping[str, Iterable[str]] | None = None,
) -> dict[str, Any]:
    """The version-2 ``history`` of the calls ``entries`` (version-1 entries, oldest first).

    ``data_classes``: tool name -> the data classes its calls handle (counted per decision).
    """
    history = empty_history_v2(window)
    classes = data_classes or {}
    for e in entries:
        tool, ts = e["tool"], e.get("ts")
        per_tool = history["tools"].setdefault(tool, empty_counters_v2())
        decision = DECISION_COUNTER[e["decision"]]
        for counters in (history["run"], per_tool):
            _count(counters, decision, ts)
        for cls in classes.get(tool, ()):
            history["data_classes"].setdefault(cls, dict.fromkeys(("allowed", "require_approval", "denied"), 0))[decision] += 1
        outcome = OUTCOME_COUNTER.get(e.get("outcome") or "")
        if outcome is not None:
            for counters in (history["run"], per_tool):
                _count(counters, outcome, ts)
    tail = list(entries[len(entries) - window:]) if len(entries) > window else list(entries)
    history["recent"] = [{"tool": e["tool"], "decision": e["decision"], "outcome": e.get("outcome"),
                          "ts": e.get("ts")} for e in tail]
    return history


def calls(n: int, tool: str = "lookup", decision: str = "allow", outcome: str | None = "completed") -> list[dict[str, Any]]:
    """``n`` version-1 entries of one tool and decision."""
    return [{"tool": tool, "decision": decision, "outcome": outcome, "ts": None} for _ in range(n)]
