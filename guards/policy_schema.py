"""JSON Schemas (draft 2020-12) of the policy input document, one per version.

Why as data next to the validator: policy authors and tools outside Python (an OPA
bundle's tests, an editor) check their inputs against the same rules that
:func:`~langgraph_warden.guards.policy.validate_policy_input` applies; the tests hold
the two in agreement. ``warden policy schema --version N`` prints them. One rule of
the validator is not expressible here and is stated in the descriptions instead:
version 2's ``history.recent`` and ``approvals`` hold at most ``history.window`` entries.
"""

from __future__ import annotations

import copy
from typing import Any

from langgraph_warden.errors import ConfigurationError

from .policy import (
    APPROVAL_TRIGGERS,
    DATA_CLASS_COUNTERS,
    HISTORY_COUNTERS,
    HISTORY_DECISIONS,
    POLICY_INPUT_VERSIONS,
    RISK_TIERS,
)

__all__ = ["DRAFT", "policy_input_schema"]

DRAFT = "https://json-schema.org/draft/2020-12/schema"

_NULLABLE_STRING: dict[str, Any] = {"type": ["string", "null"]}
_STRINGS: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
_COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}

_DEFS: dict[str, Any] = {
    "entry": {
        "description": "One call: its latest decision and outcome. Other keys are ignored (builders drop them).",
        "type": "object",
        "required": ["tool", "decision"],
        "properties": {
            "tool": {"type": "string", "minLength": 1},
            "decision": {"enum": list(HISTORY_DECISIONS)},
            "outcome": _NULLABLE_STRING,
            "ts": {**_NULLABLE_STRING, "description": "UTC, e.g. 2026-11-29T06:40:00.123456Z"},
        },
    },
    "counters": {
        "description": "Events of the run or of one tool: decisions made (allowed, require_approval, denied), "
                       "outcomes recorded (completed, failed, aborted, replayed), approvals (approved = granted "
                       "or edited, rejected); first_ts/last_ts: its first and last event.",
        "type": "object",
        "required": [*HISTORY_COUNTERS, "first_ts", "last_ts"],
        "additionalProperties": False,
        "properties": {**{name: _COUNT for name in HISTORY_COUNTERS},
                       "first_ts": _NULLABLE_STRING, "last_ts": _NULLABLE_STRING},
    },
    "class_counters": {
        "description": "Decisions on calls to tools handling this data class.",
        "type": "object",
        "required": list(DATA_CLASS_COUNTERS),
        "additionalProperties": False,
        "properties": {name: _COUNT for name in DATA_CLASS_COUNTERS},
    },
}

_COMMON_PROPERTIES: dict[str, Any] = {
    "workload": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
    "run": {
        "type": "object",
        "required": ["thread_id", "risk_tier"],
        "properties": {
            "thread_id": {"type": "string"},
            "owner": _NULLABLE_STRING,
            "intent": _NULLABLE_STRING,
            "purpose": _NULLABLE_STRING,
            "risk_tier": {"enum": list(RISK_TIERS)},
            "allowed_tools": {**_STRINGS, "type": ["array", "null"], "description": "null: not restricted"},
            "allowed_data_classes": {**_STRINGS, "type": ["array", "null"], "description": "null: not restricted"},
            "profile": {
                "type": ["object", "null"],
                "required": ["require_approval_for"],
                "properties": {"require_approval_for": {"type": "array", "items": {"enum": list(APPROVAL_TRIGGERS)}}},
            },
        },
    },
    "tool": {
        "type": "object",
        "required": ["name", "known", "sensitivity", "data_classes", "irreversible", "external", "escalates",
                     "idempotent", "scopes"],
        "properties": {
            "name": {"type": "string"},
            "known": {"type": "boolean"},
            "sensitivity": {"type": "string"},
            "data_classes": _STRINGS,
            "irreversible": {"type": "boolean"},
            "external": {"type": "boolean"},
            "escalates": {"type": "boolean"},
            "idempotent": {"type": "boolean"},
            "scopes": _STRINGS,
            "target_arg": _NULLABLE_STRING,
        },
    },
    "args": {"type": "object", "description": "The call's arguments."},
    "target": {"description": "args[tool.target_arg], or what the caller names; any JSON value."},
    "now": {"type": "string", "description": "UTC, e.g. 2026-11-29T06:40:00.123456Z"},
}

_HISTORY: dict[int, dict[str, Any]] = {
    1: {
        "description": "Every earlier call of the thread, oldest first: grows with the thread.",
        "type": "array",
        "items": {"$ref": "#/$defs/entry"},
    },
    2: {
        "description": "Aggregates of the thread's earlier calls: bounded by the number of distinct tools and "
                       "data classes and by window.",
        "type": "object",
        "required": ["window", "run", "tools", "data_classes", "recent"],
        "additionalProperties": False,
        "properties": {
            "window": {**_COUNT, "description": "The most entries recent and approvals hold."},
            "run": {"$ref": "#/$defs/counters"},
            "tools": {"type": "object", "propertyNames": {"minLength": 1},
                      "additionalProperties": {"$ref": "#/$defs/counters"}},
            "tool": {"$ref": "#/$defs/counters",
                     "description": "history.tools[tool.name], zero when the run has not called the tool: always "
                                    "sent by the guard; derived by warden policy eval when left out."},
            "data_classes": {"type": "object", "propertyNames": {"minLength": 1},
                             "additionalProperties": {"$ref": "#/$defs/class_counters"}},
            "recent": {"description": "The last calls, oldest first: at most window entries.",
                       "type": "array", "items": {"$ref": "#/$defs/entry"}},
        },
    },
}

_APPROVALS: dict[int, str] = {
    1: "Every prior approval of the run, oldest first.",
    2: "The last approvals of the run, oldest first: at most history.window entries.",
}


def policy_input_schema(version: int) -> dict[str, Any]:
    """The JSON Schema of the version-``version`` policy input document (a fresh copy)."""
    if type(version) is not int or version not in POLICY_INPUT_VERSIONS:
        raise ConfigurationError(
            f"policy input schema: version must be one of {', '.join(map(str, POLICY_INPUT_VERSIONS))}, got {version!r}"
        )
    schema = {
        "$schema": DRAFT,
        "$id": f"urn:langgraph-warden:policy-input:v{version}",
        "title": f"langgraph-warden policy input, version {version}",
        "type": "object",
        "required": ["version", "workload", "run", "tool", "args", "history", "approvals", "now"],
        "properties": {
            "version": {"const": version},
            **_COMMON_PROPERTIES,
            "history": _HISTORY[version],
            "approvals": {"description": _APPROVALS[version], "type": "array", "items": {"type": "object"}},
        },
        "$defs": _DEFS,
    }
    return copy.deepcopy(schema)
