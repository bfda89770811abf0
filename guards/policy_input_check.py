"""Checking a policy input document written by hand (``warden policy eval``), of either version.

Why apart from the builder (``policy_input.py``): the guard builds its documents from values it
checks one by one; a hand-written document arrives whole and is checked field by field against
the shape its ``version`` names, with the same messages and the same history checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langgraph_warden.errors import ConfigurationError

from .policy_input import (
    APPROVAL_TRIGGERS,
    POLICY_INPUT_VERSIONS,
    RISK_TIERS,
    _approvals,
    _history_v1,
    _history_v2,
)

__all__ = ["validate_policy_input"]

_TOOL_BOOLS = ("known", "irreversible", "external", "escalates", "idempotent")


def validate_policy_input(doc: Any) -> dict[str, Any]:
    """Check a hand-written input document (e.g. for ``warden policy eval``), of either version.

    Returns a copy, in version 2 with ``history.tool`` derived from ``history.tools`` when it was
    left out (what the guard would have sent); raises :class:`ConfigurationError` naming the first
    field that does not match the shape of the document's ``version``. Agrees with
    :func:`langgraph_warden.guards.policy_schema.policy_input_schema`, which cannot
    express one rule checked here: version 2's ``recent`` and ``approvals`` hold at
    most ``history.window`` entries.
    """
    def need(cond: bool, where: str, what: str) -> None:
        if not cond:
            raise ConfigurationError(f"policy input {where}: {what}")

    need(isinstance(doc, Mapping), "$", "expected a JSON object")
    version = doc.get("version")
    need(type(version) is int and version in POLICY_INPUT_VERSIONS, "version",
         f"expected one of {', '.join(map(str, POLICY_INPUT_VERSIONS))}, got {version!r}")
    for key in ("workload", "run", "tool", "args"):
        need(isinstance(doc.get(key), Mapping), key, "expected an object")
    need(isinstance(doc["workload"].get("id"), str), "workload.id", "expected a string")
    run = doc["run"]
    need(isinstance(run.get("thread_id"), str), "run.thread_id", "expected a string")
    need(run.get("risk_tier") in RISK_TIERS, "run.risk_tier", f"expected one of {', '.join(RISK_TIERS)}")
    for key in ("owner", "intent", "purpose"):
        need(run.get(key) is None or isinstance(run.get(key), str), f"run.{key}", "expected a string or null")
    for key in ("allowed_tools", "allowed_data_classes"):
        value = run.get(key)
        need(value is None or (isinstance(value, list) and all(isinstance(v, str) for v in value)),
             f"run.{key}", "expected a list of strings or null")
    profile = run.get("profile")
    need(profile is None or (isinstance(profile, Mapping) and isinstance(profile.get("require_approval_for"), list)
                             and all(t in APPROVAL_TRIGGERS for t in profile["require_approval_for"])),
         "run.profile", f"expected null or an object whose require_approval_for is drawn from {list(APPROVAL_TRIGGERS)}")
    tool = doc["tool"]
    need(isinstance(tool.get("name"), str), "tool.name", "expected a string")
    for key in _TOOL_BOOLS:
        need(type(tool.get(key)) is bool, f"tool.{key}", "expected true/false")
    need(isinstance(tool.get("sensitivity"), str), "tool.sensitivity", "expected a string")
    for key in ("data_classes", "scopes"):
        value = tool.get(key)
        need(isinstance(value, list) and all(isinstance(v, str) for v in value), f"tool.{key}",
             "expected a list of strings")
    need(tool.get("target_arg") is None or isinstance(tool["target_arg"], str), "tool.target_arg",
         "expected a string or null")
    history: Any = doc.get("history")
    if version == 2:
        need("history" in doc, "history", "expected an object")
        history = _history_v2(doc["history"], tool["name"])
        window = history["window"]
    else:
        need(isinstance(doc.get("history"), list), "history", "expected a list")
        _history_v1(doc["history"])
    need(isinstance(doc.get("approvals"), list), "approvals", "expected a list")
    _approvals(doc["approvals"])
    if version == 2:
        need(len(doc["approvals"]) <= window, "approvals",
             f"{len(doc['approvals'])} entries, more than history.window ({window})")
    need(isinstance(doc.get("now"), str), "now", "expected an ISO-8601 string")
    return {**doc, "history": history}
