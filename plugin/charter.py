"""The run charter: who owns a run, what it is for, and how much it may do.

Why a charter: a security reviewer's first questions about an agent run are
"whose is it?" and "what was it supposed to do?". The charter answers both
and bounds the blast radius (allowed tools and data classes). It is recorded
as the signed ``run.started`` event of the thread and is part of every policy
input, so the answer comes from the history, not from mutable configuration.

Risk tiers select a :class:`TierProfile` of defaults the user may override:

============  ==================================================================
``low``       just-in-time credentials and logging; approval only for escalation
``medium``    + approvals for irreversible and external (data-sharing) actions
``high``      + approvals for any sensitive data class, separation of duties,
              authenticated (signed) approvals, shorter credential TTLs
============  ==================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .errors import ConfigurationError
from .names import describe_character, forbidden_characters

__all__ = ["RiskTier", "TierProfile", "TIER_PROFILES", "RunCharter", "APPROVAL_TRIGGERS"]

RiskTier = Literal["low", "medium", "high"]
_TIERS = ("low", "medium", "high")

#: What can make a call need approval: tool flags, or touching sensitive data.
APPROVAL_TRIGGERS = frozenset({"escalates", "irreversible", "external", "sensitive_data"})


@dataclass(frozen=True, slots=True)
class TierProfile:
    """Defaults a risk tier applies; every field can be overridden per charter."""

    require_approval_for: frozenset[str]
    separation_of_duties: bool
    authenticated_approvals: bool
    max_credential_ttl_seconds: int
    approval_ttl_seconds: int

    def __post_init__(self) -> None:
        unknown = set(self.require_approval_for) - APPROVAL_TRIGGERS
        if unknown:
            raise ConfigurationError(
                f"require_approval_for has unknown trigger(s) {sorted(unknown)}; use {sorted(APPROVAL_TRIGGERS)}"
            )
        if self.max_credential_ttl_seconds <= 0 or self.approval_ttl_seconds <= 0:
            raise ConfigurationError("max_credential_ttl_seconds and approval_ttl_seconds must be positive")

    def to_dict(self) -> dict[str, Any]:
        return {
            "require_approval_for": sorted(self.require_approval_for),
            "separation_of_duties": self.separation_of_duties,
            "authenticated_approvals": self.authenticated_approvals,
            "max_credential_ttl_seconds": self.max_credential_ttl_seconds,
            "approval_ttl_seconds": self.approval_ttl_seconds,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> TierProfile:
        return cls(
            require_approval_for=frozenset(doc["require_approval_for"]),
            separation_of_duties=bool(doc["separation_of_duties"]),
            authenticated_approvals=bool(doc["authenticated_approvals"]),
            max_credential_ttl_seconds=int(doc["max_credential_ttl_seconds"]),
            approval_ttl_seconds=int(doc["approval_ttl_seconds"]),
        )


TIER_PROFILES: dict[str, TierProfile] = {
    "low": TierProfile(frozenset({"escalates"}), False, False, 300, 24 * 3600),
    "medium": TierProfile(frozenset({"escalates", "irreversible", "external"}), False, False, 120, 8 * 3600),
    "high": TierProfile(
        frozenset({"escalates", "irreversible", "external", "sensitive_data"}), True, True, 60, 3600
    ),
}


def _str_tuple(value: Iterable[str] | None, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        raise ConfigurationError(f"{name} must be a list of strings, not a single string {value!r}")
    out = tuple(value)
    for item in out:
        if not isinstance(item, str) or not item:
            raise ConfigurationError(f"{name} must contain non-empty strings; got {item!r}")
    return out


@dataclass(frozen=True, slots=True)
class RunCharter:
    """Owner, declared intent and risk tier of one run (thread).

    Args:
        owner: the accountable person or team (e.g. ``"alice@example.com"``), kept as given; a
            name holding a control or invisible character is refused (separation of duties
            compares names case- and width-insensitively, see :mod:`langgraph_warden.names`).
        intent: what the run is for, in words a reviewer understands.
        risk_tier: ``"low"``, ``"medium"`` or ``"high"``.
        purpose: optional structured purpose (e.g. ``{"ticket": "OPS-12"}``).
        allowed_tools: if set, any other tool is denied with ``outside_intent``.
        allowed_data_classes: if set, a tool touching another data class is denied.
        profile: override the tier's defaults (see :data:`TIER_PROFILES`).
    """

    owner: str
    intent: str
    risk_tier: RiskTier = "medium"
    purpose: Mapping[str, Any] | None = None
    allowed_tools: tuple[str, ...] | None = None
    allowed_data_classes: tuple[str, ...] | None = None
    profile: TierProfile | None = field(default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.owner, str) or not self.owner.strip():
            raise ConfigurationError(
                "charter.owner is empty; every governed run needs an accountable owner (a person or team)"
            )
        bad = forbidden_characters(self.owner)
        if bad:
            where, ch = bad[0]
            raise ConfigurationError(
                f"charter.owner {self.owner!r} holds {describe_character(ch)} at position {where}; control and "
                "invisible characters are not allowed in an owner's name (separation of duties compares names): "
                "pass the name exactly as it is displayed, without them"
            )
        if not isinstance(self.intent, str) or not self.intent.strip():
            raise ConfigurationError("charter.intent is empty; say what the run is for, e.g. 'refund order 1234'")
        if self.risk_tier not in _TIERS:
            raise ConfigurationError(f"charter.risk_tier is {self.risk_tier!r}; use one of {list(_TIERS)}")
        object.__setattr__(self, "allowed_tools", _str_tuple(self.allowed_tools, "charter.allowed_tools"))
        object.__setattr__(
            self, "allowed_data_classes", _str_tuple(self.allowed_data_classes, "charter.allowed_data_classes")
        )
        if self.purpose is not None and not isinstance(self.purpose, Mapping):
            raise ConfigurationError("charter.purpose must be a mapping (structured purpose) or None")
        if self.profile is None:
            object.__setattr__(self, "profile", TIER_PROFILES[self.risk_tier])

    @property
    def effective_profile(self) -> TierProfile:
        assert self.profile is not None
        return self.profile

    def with_profile(self, **overrides: Any) -> RunCharter:
        """A copy with some tier defaults overridden, e.g. ``separation_of_duties=True``."""
        if "require_approval_for" in overrides:
            overrides["require_approval_for"] = frozenset(overrides["require_approval_for"])
        return replace(self, profile=replace(self.effective_profile, **overrides))

    def to_dict(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "intent": self.intent,
            "risk_tier": self.risk_tier,
            "purpose": dict(self.purpose) if self.purpose is not None else None,
            "allowed_tools": list(self.allowed_tools) if self.allowed_tools is not None else None,
            "allowed_data_classes": list(self.allowed_data_classes) if self.allowed_data_classes is not None else None,
            "profile": self.effective_profile.to_dict(),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> RunCharter:
        if not isinstance(doc, Mapping):
            raise ConfigurationError(f"a charter must be a mapping, got {type(doc).__name__}")
        missing = [k for k in ("owner", "intent") if k not in doc]
        if missing:
            raise ConfigurationError(f"charter is missing {missing}")
        return cls(
            owner=doc["owner"],
            intent=doc["intent"],
            risk_tier=doc.get("risk_tier", "medium"),
            purpose=doc.get("purpose"),
            allowed_tools=doc.get("allowed_tools"),
            allowed_data_classes=doc.get("allowed_data_classes"),
            profile=TierProfile.from_dict(doc["profile"]) if doc.get("profile") else None,
        )
