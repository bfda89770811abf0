"""The policy's view of a thread's earlier calls, folded one event at a time.

Why a module of its own: what the policy sees of the past decides what a call may do, and its
cost must not grow with the thread. Version 2 of the policy input (see ``guards/policy.py``)
carries aggregates — per tool, per data class and per run counters, first and last times — and
a bounded window of the most recent calls and approvals; they are updated in O(1) per event, so
a thread's thousandth call costs what its tenth did. Version 1 (every earlier call, every prior
approval) stays available for policies that need it, at a cost that grows with the thread: the
full lists are kept only when asked for (``keep_all``).

Counters count events: decisions made (``allowed``, ``require_approval``, ``denied``), outcomes
recorded (``completed``, ``failed``, ``aborted``, ``replayed``) and approvals answered
(``approved``, ``rejected``). "Calls that were not denied" = ``allowed + require_approval``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["StepHistory", "COUNTERS", "DEFAULT_WINDOW"]

COUNTERS = ("allowed", "require_approval", "denied", "completed", "failed", "aborted", "replayed", "approved", "rejected")
#: The size of the ``recent`` window (and of the recent approvals) by default.
DEFAULT_WINDOW = 20
_DECISION = {"allow": "allowed", "deny": "denied", "require_approval": "require_approval"}
_CLASS_COUNTERS = ("allowed", "require_approval", "denied")
_OUTCOMES = frozenset({"completed", "failed", "aborted", "replayed"})


def _counters() -> dict[str, Any]:
    return {**dict.fromkeys(COUNTERS, 0), "first_ts": None, "last_ts": None}


def _count(into: dict[str, Any], counter: str, ts: str | None) -> None:
    into[counter] += 1
    if ts is not None:
        if into["first_ts"] is None:
            into["first_ts"] = ts
        into["last_ts"] = ts


class StepHistory:
    """Aggregates and recent windows of one thread's calls (see the module docstring)."""

    __slots__ = ("window", "run", "tools", "data_classes", "recent", "recent_approvals", "entries", "approvals")

    def __init__(self, window: int = DEFAULT_WINDOW, *, keep_all: bool = True) -> None:
        self.window = window
        self.run = _counters()
        self.tools: dict[str, dict[str, Any]] = {}
        self.data_classes: dict[str, dict[str, int]] = {}
        #: tool call id -> entry of the last ``window`` calls decided (oldest first)
        self.recent: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.recent_approvals: deque[dict[str, Any]] = deque(maxlen=window)
        #: version 1: every call's latest entry and every approval (None unless ``keep_all``)
        self.entries: dict[str, dict[str, Any]] | None = {} if keep_all else None
        self.approvals: list[dict[str, Any]] | None = [] if keep_all else None

    # ------------------------------------------------------------------ fold
    def decided(self, tool_call_id: str, tool: str, decision: str, ts: str | None, data_classes: Iterable[str] = ()) -> None:
        """A ``policy.decided`` event: ``decision`` is ``allow``, ``deny`` or ``require_approval``."""
        counter = _DECISION[decision]
        _count(self.run, counter, ts)
        _count(self.tools.setdefault(tool, _counters()), counter, ts)
        for cls in data_classes:
            self.data_classes.setdefault(cls, dict.fromkeys(_CLASS_COUNTERS, 0))[counter] += 1
        entry = {"tool": tool, "decision": decision, "outcome": None, "ts": ts}
        recent = self.recent
        recent.pop(tool_call_id, None)
        recent[tool_call_id] = entry
        while len(recent) > self.window:
            recent.popitem(last=False)
        if self.entries is not None:
            self.entries[tool_call_id] = entry

    def outcome(self, tool_call_id: str, tool: str | None, outcome: str, ts: str | None) -> None:
        """A call's outcome event (``completed``, ``failed``, ``aborted``, ``replayed``, ...)."""
        if outcome in _OUTCOMES and isinstance(tool, str):  # a denial was counted with its decision
            _count(self.run, outcome, ts)
            _count(self.tools.setdefault(tool, _counters()), outcome, ts)
        for entries in (self.recent, self.entries):
            if entries is not None and tool_call_id in entries:
                entries[tool_call_id] = {**entries[tool_call_id], "outcome": outcome}

    def answered(self, approval: Mapping[str, Any], ts: str | None) -> None:
        """An approval answered: ``approval`` is the policy-input entry (tool, approver, decision, ...)."""
        counter = "rejected" if approval.get("decision") == "reject" else "approved"
        tool = str(approval.get("tool"))
        _count(self.run, counter, ts)
        _count(self.tools.setdefault(tool, _counters()), counter, ts)
        if counter == "approved":
            self.recent_approvals.append(dict(approval))
            if self.approvals is not None:
                self.approvals.append(dict(approval))

    # ------------------------------------------------------------------ read
    def version_2(
        self, pending: Mapping[str, Mapping[str, Any]] = {}, data_classes: Callable[[str], Iterable[str]] | None = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The version-2 ``history`` and ``approvals``, with ``pending`` decisions (made, not yet
        folded: tool call id -> entry) counted in. Cost: the number of distinct tools and classes."""
        run = dict(self.run)
        tools = {name: dict(c) for name, c in self.tools.items()}
        classes = {name: dict(c) for name, c in self.data_classes.items()}
        recent = OrderedDict(self.recent)
        for tcid, entry in pending.items():
            counter = _DECISION[entry["decision"]]
            _count(run, counter, entry.get("ts"))
            _count(tools.setdefault(entry["tool"], _counters()), counter, entry.get("ts"))
            for cls in data_classes(entry["tool"]) if data_classes is not None else ():
                classes.setdefault(cls, dict.fromkeys(_CLASS_COUNTERS, 0))[counter] += 1
            recent.pop(tcid, None)
            recent[tcid] = dict(entry)
        entries = list(recent.values())[-self.window:] if self.window else []
        history = {"window": self.window, "run": run, "tools": tools, "data_classes": classes, "recent": entries}
        return history, list(self.recent_approvals)

    def version_1(self, pending: Mapping[str, Mapping[str, Any]] = {}) -> tuple[list[Mapping[str, Any]], list[dict[str, Any]]]:
        """The version-1 ``history`` (every call's latest entry, oldest first) and ``approvals``."""
        if self.entries is None or self.approvals is None:
            raise ValueError("this history keeps aggregates only (keep_all=False): version 1 needs every entry")
        merged = {**self.entries, **pending} if pending else self.entries
        return list(merged.values()), list(self.approvals)

    # ----------------------------------------------------------- snapshots
    def to_dict(self) -> dict[str, Any]:
        """The aggregates and windows (not the version-1 lists): a bounded document."""
        return {
            "window": self.window,
            "run": dict(self.run),
            "tools": {k: dict(v) for k, v in sorted(self.tools.items())},
            "data_classes": {k: dict(v) for k, v in sorted(self.data_classes.items())},
            "recent": [[tcid, dict(e)] for tcid, e in self.recent.items()],
            "recent_approvals": [dict(a) for a in self.recent_approvals],
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> StepHistory:
        h = cls(int(doc["window"]), keep_all=False)
        h.run = dict(doc["run"])
        h.tools = {k: dict(v) for k, v in doc["tools"].items()}
        h.data_classes = {k: dict(v) for k, v in doc["data_classes"].items()}
        h.recent = OrderedDict((tcid, dict(e)) for tcid, e in doc["recent"])
        h.recent_approvals.extend(dict(a) for a in doc["recent_approvals"])
        return h
