"""Per-tool governance metadata, declared once next to the tool.

Why a registry: a policy can only reason about a tool it knows. The guard looks
each call's tool up here and puts the :class:`ToolSpec` into the policy input;
a tool that was never declared reaches the policy as ``known: false``. With the
guard's ``unknown_tools="deny"`` (the default) it is then denied (``unknown_tool``)
whatever the policy answers, so forgetting to declare a new tool fails closed even
under a permissive policy; ``unknown_tools="policy"`` leaves it to the policy (the
shipped policies deny it too).

Example::

    registry = ToolRegistry()

    @registry.declare(sensitivity="confidential", data_classes={"pii"},
                      external=True, scopes=("crm:read",), target_arg="customer_id")
    @tool
    def export_customer(customer_id: str) -> str: ...
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from langgraph_warden.errors import ConfigurationError

if TYPE_CHECKING:
    from .policy import PolicyDecision

__all__ = [
    "SENSITIVITY_LEVELS",
    "ToolSpec",
    "ToolRegistry",
    "unknown_tool_dict",
    "UnknownTools",
    "UNKNOWN_TOOLS_CHOICES",
    "check_unknown_tools",
    "deny_undeclared",
]

#: What the guard does with a call to a tool no :class:`ToolSpec` declares: ``"deny"`` it
#: whatever the policy answers (the default), or leave it to the ``"policy"``.
UnknownTools = Literal["deny", "policy"]
UNKNOWN_TOOLS_CHOICES: tuple[str, ...] = ("deny", "policy")

#: Sensitivity labels, least to most sensitive. Policies compare labels by name,
#: so the set is closed: a typo like ``"confidental"`` must not silently become
#: a label no rule matches.
SENSITIVITY_LEVELS: tuple[str, ...] = ("public", "internal", "confidential", "restricted")

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127}$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-/]{0,127}$")

T = TypeVar("T")


def _check_label(field_name: str, value: Any, *, tool: str) -> str:
    if not isinstance(value, str) or not _LABEL_RE.match(value):
        raise ConfigurationError(
            f"ToolSpec({tool!r}).{field_name}: {value!r} is not a valid label; use 1-128 characters "
            "from letters, digits and _ . : - /"
        )
    return value


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """What a tool does, in the terms a policy decides on.

    ``irreversible``: its effect cannot be undone (payments, deletes, emails sent).
    ``external``: it shares data outside the organisation.
    ``escalates``: it raises privilege (grants roles, changes access).
    ``idempotent``: re-running it after a crash is safe; only then may an
    in-doubt call be retried without approval.
    ``scopes``: credential scopes the tool needs; an allowed call gets exactly these.
    ``target_arg``: the argument naming the data the call acts on; its value
    becomes the policy input's ``target``.
    """

    name: str
    sensitivity: str = "internal"
    data_classes: frozenset[str] = field(default_factory=frozenset)
    irreversible: bool = False
    external: bool = False
    escalates: bool = False
    idempotent: bool = False
    scopes: tuple[str, ...] = ()
    target_arg: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ConfigurationError(
                f"ToolSpec.name: {self.name!r} is not a valid tool name; use the tool's own name "
                "(1-128 characters from letters, digits and _ . : -)"
            )
        tool = self.name
        if self.sensitivity not in SENSITIVITY_LEVELS:
            raise ConfigurationError(
                f"ToolSpec({tool!r}).sensitivity: {self.sensitivity!r} is not one of {', '.join(SENSITIVITY_LEVELS)}"
            )
        for flag in ("irreversible", "external", "escalates", "idempotent"):
            value = getattr(self, flag)
            if type(value) is not bool:
                raise ConfigurationError(
                    f"ToolSpec({tool!r}).{flag}: expected True or False, got {value!r}"
                )
        if isinstance(self.data_classes, str) or not isinstance(self.data_classes, Iterable):
            raise ConfigurationError(
                f"ToolSpec({tool!r}).data_classes: expected a set of labels such as {{'pii'}}, "
                f"got {self.data_classes!r}"
            )
        classes = frozenset(_check_label("data_classes", c, tool=tool) for c in self.data_classes)
        object.__setattr__(self, "data_classes", classes)
        if isinstance(self.scopes, str) or not isinstance(self.scopes, Iterable):
            raise ConfigurationError(
                f"ToolSpec({tool!r}).scopes: expected a sequence of scope strings such as "
                f"('crm:read',), got {self.scopes!r}"
            )
        scopes = tuple(dict.fromkeys(_check_label("scopes", s, tool=tool) for s in self.scopes))
        object.__setattr__(self, "scopes", scopes)
        if self.target_arg is not None and (
            not isinstance(self.target_arg, str) or not self.target_arg.isidentifier()
        ):
            raise ConfigurationError(
                f"ToolSpec({tool!r}).target_arg: {self.target_arg!r} must be the name of one of "
                "the tool's arguments, or None"
            )

    def to_policy_dict(self) -> dict[str, Any]:
        """The tool as it appears in the policy input (lists sorted: stable digests)."""
        return {
            "name": self.name,
            "known": True,
            "sensitivity": self.sensitivity,
            "data_classes": sorted(self.data_classes),
            "irreversible": self.irreversible,
            "external": self.external,
            "escalates": self.escalates,
            "idempotent": self.idempotent,
            "scopes": list(self.scopes),
            "target_arg": self.target_arg,
        }


def unknown_tool_dict(name: str) -> dict[str, Any]:
    """Policy-input tool entry for an undeclared tool: most restrictive, ``known: false``."""
    return {
        "name": name,
        "known": False,
        "sensitivity": "restricted",
        "data_classes": [],
        "irreversible": False,
        "external": False,
        "escalates": False,
        "idempotent": False,
        "scopes": [],
        "target_arg": None,
    }


def check_unknown_tools(value: object) -> UnknownTools:
    """Validate the ``unknown_tools=`` setting; the error names the choices."""
    if value not in UNKNOWN_TOOLS_CHOICES:
        raise ConfigurationError(
            f"unknown_tools={value!r}: use 'deny' (an undeclared tool never runs; the default) or 'policy' "
            "(the policy decides undeclared tools, which reach it as tool.known = false)"
        )
    return value  # type: ignore[return-value]


def deny_undeclared(decision: PolicyDecision) -> PolicyDecision:
    """The policy's decision for an undeclared tool, turned into a deny that says ``unknown_tool``.

    Why after the policy, not instead of it: the recorded decision keeps the engine, revision
    and the policy's own reasons, so the audit can tell which policy was asked and what it said.
    """
    reasons = tuple(dict.fromkeys((*decision.reasons, "unknown_tool")))
    if not decision.allow and reasons == decision.reasons:
        return decision
    return replace(decision, allow=False, require_approval=False, reasons=reasons, scopes=(), ttl_seconds=0,
                   obligations={})


def _tool_name(obj: Any) -> str:
    """Name a LangChain tool (``BaseTool.name``) or a plain callable (``__name__``)."""
    name = getattr(obj, "name", None)
    if isinstance(name, str) and name:
        return name
    name = getattr(obj, "__name__", None)
    if isinstance(name, str) and name:
        return name
    raise ConfigurationError(
        f"ToolRegistry.declare: cannot tell the tool name of {obj!r}; pass name=..."
    )


class ToolRegistry:
    """Thread-safe map from tool name to :class:`ToolSpec`.

    Registering the same name twice with a *different* spec is an error (two
    declarations disagreeing about a tool's risk is a bug); re-registering an
    identical spec is a no-op so module reloads in notebooks keep working.
    """

    def __init__(self, specs: Iterable[ToolSpec] = ()) -> None:
        self._specs: dict[str, ToolSpec] = {}
        self._lock = threading.Lock()
        for spec in specs:
            self.register(spec)

    def register(self, spec: ToolSpec, *, replace: bool = False) -> ToolSpec:
        """Add ``spec``; ``replace=True`` overwrites an existing different declaration."""
        if not isinstance(spec, ToolSpec):
            raise ConfigurationError(f"ToolRegistry.register: expected a ToolSpec, got {type(spec).__name__}")
        with self._lock:
            existing = self._specs.get(spec.name)
            if existing is not None and existing != spec and not replace:
                raise ConfigurationError(
                    f"ToolRegistry.register: tool {spec.name!r} is already declared with different metadata "
                    f"({existing!r}); declare each tool once, or pass replace=True"
                )
            self._specs[spec.name] = spec
        return spec

    @overload
    def declare(self, obj: T, /, **fields: Any) -> T: ...

    @overload
    def declare(self, obj: None = None, /, **fields: Any) -> Callable[[T], T]: ...

    def declare(self, obj: Any = None, /, *, name: str | None = None, **fields: Any) -> Any:
        """Declare a tool's metadata; usable as ``@registry.declare(...)`` or ``registry.declare(tool, ...)``.

        Works on a LangChain ``BaseTool`` (e.g. made with ``@tool``) or a plain
        function, and returns the object unchanged so existing tools keep working.
        ``fields`` are :class:`ToolSpec` fields other than ``name``.
        """
        unknown = set(fields) - set(ToolSpec.__dataclass_fields__) - {"name"}
        if unknown:
            raise ConfigurationError(
                f"ToolRegistry.declare: unknown field(s) {', '.join(sorted(unknown))}; "
                f"valid fields are {', '.join(f for f in ToolSpec.__dataclass_fields__ if f != 'name')}"
            )

        def apply(target: T) -> T:
            self.register(ToolSpec(name=name or _tool_name(target), **fields))
            return target

        return apply if obj is None else apply(obj)

    def get(self, name: str) -> ToolSpec | None:
        """The spec for ``name``, or ``None`` if the tool was never declared."""
        return self._specs.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[ToolSpec]:
        return iter(list(self._specs.values()))

    def __len__(self) -> int:
        return len(self._specs)

    def to_policy_dict(self) -> dict[str, dict[str, Any]]:
        """All declared tools keyed by name, in policy-input form (e.g. to ship as policy data)."""
        return {n: s.to_policy_dict() for n, s in sorted(self._specs.items())}
