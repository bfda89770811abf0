"""The guard's step history (guards/history.py): bounded aggregates folded event by event.

The version-2 document it builds is checked by the policy module's own validator, so a counter
the guard gets wrong in shape is refused here rather than denied at run time.
"""

from __future__ import annotations

from langgraph_warden.guards.history import StepHistory
from langgraph_warden.guards.policy import build_policy_input


def _fold(h: StepHistory, n: int) -> None:
    for i in range(n):
        tcid = f"c{i}"
        decision = "deny" if i % 5 == 4 else "allow"
        h.decided(tcid, "lookup" if i % 2 else "refund", decision, f"2026-01-01T00:00:{i % 60:02d}.000000Z", ["pii"])
        if decision == "deny":
            h.outcome(tcid, "refund" if i % 2 == 0 else "lookup", "denied", None)  # tool.denied: counted with its decision
        else:
            h.outcome(tcid, "lookup" if i % 2 else "refund", "completed", None)


def test_counters_count_events_once_and_the_windows_stay_bounded():
    h = StepHistory(window=20)
    _fold(h, 1000)
    doc, approvals = h.version_2()
    run = doc["run"]
    assert (run["allowed"], run["denied"], run["completed"]) == (800, 200, 800)  # a denial is not also an outcome
    assert sum(t["allowed"] + t["denied"] for t in doc["tools"].values()) == 1000
    assert doc["data_classes"]["pii"] == {"allowed": 800, "require_approval": 0, "denied": 200}
    assert len(doc["recent"]) == 20 and doc["recent"][-1]["outcome"] == "denied"  # c999 was denied
    assert approvals == []
    build_policy_input(workload_id="w", thread_id="t", tool_name="lookup", tool_spec=None, history=doc, version=2)


def test_pending_decisions_count_until_they_are_folded():
    h = StepHistory(window=3)
    _fold(h, 3)
    pending = {"p1": {"tool": "refund", "decision": "allow", "outcome": None, "ts": None}}
    doc, _ = h.version_2(pending, lambda tool: ["pii"])
    assert doc["run"]["allowed"] == h.run["allowed"] + 1 and doc["data_classes"]["pii"]["allowed"] == 4
    assert [e["tool"] for e in doc["recent"]][-1] == "refund" and len(doc["recent"]) == 3
    assert h.version_2()[0]["run"]["allowed"] == 3 - 0  # the stored counters were not changed


def test_an_outcome_without_a_tool_name_is_not_counted_under_none():
    h = StepHistory()
    h.decided("c1", "lookup", "allow", None)
    h.outcome("c1", None, "completed", None)
    doc, _ = h.version_2()
    assert None not in doc["tools"] and doc["run"]["completed"] == 0
    build_policy_input(workload_id="w", thread_id="t", tool_name="lookup", tool_spec=None, history=doc, version=2)


def test_a_snapshot_round_trips_the_aggregates_and_windows():
    h = StepHistory(window=5, keep_all=False)
    _fold(h, 37)
    h.answered({"request_id": "r", "tool": "refund", "approver": "bob", "decision": "approve", "ts": None}, None)
    again = StepHistory.from_dict(h.to_dict())
    assert again.version_2() == h.version_2() and again.to_dict() == h.to_dict()
