"""``warden policy`` — tools for policy authors.

``warden policy eval --input FILE [--policy PATH]`` runs one policy input document
(see :mod:`langgraph_warden.guards.policy`; version 1 or 2, read from the document,
and the engine is built for that version) through an embedded engine — the shipped
default policy unless ``--policy`` is given — and prints the decision JSON.

``warden policy example-input [--version N]`` prints a valid input document to start
from (``warden policy example-input | warden policy eval --input -``);
``warden policy schema [--version N]`` prints the JSON Schema (draft 2020-12) of the
version-N input document (default: the current version); ``warden policy show-default
[--engine rego|cedar]`` prints the shipped default policy (``--path``: where it is
installed), so it can be copied and edited.

Exit codes are stable so scripts and CI can assert on them, and the ones that carry a
decision never mean anything else: 0 allow, 1 deny, 2 needs approval, 3 error (a bad
policy, an input that is not a valid document, or an engine that could not decide — its
decision is still printed), 4 usage error (a missing, unknown or conflicting option).
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from .cli_errors import WardenGroup

if TYPE_CHECKING:
    from .guards.policy import PolicyEngine

__all__ = ["app", "EXIT_ALLOW", "EXIT_DENY", "EXIT_APPROVAL", "EXIT_ERROR", "EXIT_USAGE", "example_input"]

EXIT_ALLOW, EXIT_DENY, EXIT_APPROVAL, EXIT_ERROR, EXIT_USAGE = 0, 1, 2, 3, 4
EXIT_CODES_HELP = ("Exit codes: 0 allow, 1 deny, 2 approval needed, 3 error (bad policy or input document, "
                   "engine failure), 4 usage error (missing, unknown or conflicting option).")

#: Reasons that mean "the engine could not decide" rather than "the policy said no".
_ERROR_REASON_PREFIXES = ("policy_error:", "policy_undefined", "policy_unavailable", "malformed_decision",
                          "policy_input_version_mismatch")



class PolicyGroup(WardenGroup):
    """``warden policy``: 2 means "approval needed" here, so errors are 3 and usage errors 4."""

    error_exit_code = EXIT_ERROR
    usage_exit_code = EXIT_USAGE


app = typer.Typer(help="Evaluate and check tool-call policies.", no_args_is_help=True, cls=PolicyGroup,
                  epilog=EXIT_CODES_HELP)


class EngineChoice(str, Enum):  # noqa: UP042 - StrEnum would change str(member) in the CLI's choices; kept as it is
    rego = "rego"
    cedar = "cedar"


def _fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=code)


def _usage(message: str) -> NoReturn:
    _fail(message, EXIT_USAGE)


_SCHEMA_HINT = ("see the document's shape with `warden policy schema` and start from `warden policy example-input`")


@app.callback()
def _policy() -> None:
    """Evaluate and check tool-call policies."""


@app.command("eval", epilog=EXIT_CODES_HELP)
def eval_command(
    input_file: Annotated[Path, typer.Option("--input", "-i", help="Policy input document (JSON); '-' reads stdin. "
                                             "Start from `warden policy example-input`.")],
    policy: Annotated[
        list[Path] | None,
        typer.Option("--policy", "-p", help="Policy file (.rego/.cedar) or directory of .rego files; repeatable for "
                     "Rego. Default: the engine's shipped default policy (`warden policy show-default`)."),
    ] = None,
    engine: Annotated[EngineChoice, typer.Option("--engine", "-e", help="Engine to evaluate with.")] = EngineChoice.rego,
    query: Annotated[
        str | None, typer.Option("--query", "-q", help="Rego rule holding the decision (default data.warden.decision).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", "-d", help="Rego: JSON base document, e.g. {\"warden_config\": {...}}.")
    ] = None,
) -> None:
    """Print the decision for one input. Exit 0 allow, 1 deny, 2 approval, 3 error, 4 usage error."""
    if engine is EngineChoice.cedar:
        if policy is not None and len(policy) != 1:
            _usage("--engine cedar takes exactly one --policy file")
        if query is not None or data is not None:
            _usage("--query and --data apply to --engine rego only")
    policy_input = _read_input(input_file)
    evaluator = _engine_for(engine, policy, query, data, policy_input["version"])  # validated: one of POLICY_INPUT_VERSIONS
    decision = evaluator.decide(policy_input)
    typer.echo(json.dumps(decision.to_dict(), indent=2, sort_keys=True))
    if any(r.startswith(_ERROR_REASON_PREFIXES) for r in decision.reasons):
        raise typer.Exit(code=EXIT_ERROR)
    if not decision.allow:
        raise typer.Exit(code=EXIT_DENY)
    raise typer.Exit(code=EXIT_APPROVAL if decision.require_approval else EXIT_ALLOW)


def _read_input(input_file: Path) -> dict[str, Any]:
    """The ``--input`` document ('-': stdin), checked against the input document's shape (exit 3 if not)."""
    from langgraph_warden.errors import ConfigurationError
    from langgraph_warden.guards.policy import validate_policy_input

    try:
        raw = typer.get_text_stream("stdin").read() if str(input_file) == "-" else input_file.read_text(encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot read --input {input_file}: {exc}")
    try:
        document = json.loads(raw)
    except ValueError as exc:
        _fail(f"--input {input_file} is not JSON: {exc}; {_SCHEMA_HINT}")
    try:
        return validate_policy_input(document)
    except ConfigurationError as exc:
        _fail(f"--input {input_file}: {exc}; {_SCHEMA_HINT}")


def _engine_for(
    engine: EngineChoice, policy: list[Path] | None, query: str | None, data: Path | None, version: int
) -> PolicyEngine:
    """The embedded engine chosen, built for the input's ``version`` (exit 3 for a bad policy or ``--data``)."""
    from langgraph_warden.errors import ConfigurationError

    try:
        if engine is EngineChoice.rego:
            from langgraph_warden.guards.rego import DEFAULT_QUERY, RegoEngine

            base = None
            if data is not None:
                try:
                    base = json.loads(data.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    _fail(f"--data {data}: {exc}")
            return RegoEngine(policy or _default_policy(engine), data=base, query=query or DEFAULT_QUERY,
                              input_version=version)
        from langgraph_warden.guards.cedar import CedarEngine

        return CedarEngine(policy[0] if policy else _default_policy(engine), input_version=version)
    except ConfigurationError as exc:
        _fail(str(exc))


def _default_policy(engine: EngineChoice) -> Path:
    from langgraph_warden.guards.policy import DEFAULT_CEDAR_POLICY, DEFAULT_REGO_POLICY

    return DEFAULT_REGO_POLICY if engine is EngineChoice.rego else DEFAULT_CEDAR_POLICY


_VersionOption = Annotated[
    int | None,
    typer.Option("--version", "-v", min=1, max=2, help="Policy input version (1 or 2; default: the current one)."),
]


def example_input(version: int) -> dict[str, Any]:
    """A valid input document of ``version``: the demo's refund, one call after an allowed customer lookup.

    Under the shipped default policy it needs approval (the refund is irreversible), so piping it to
    ``warden policy eval`` shows exit 2; edit ``tool`` or ``run`` to see the other outcomes.
    """
    from langgraph_warden.guards.policy import build_policy_input, empty_counters_v2
    from langgraph_warden.guards.tools import ToolSpec

    earlier = "2025-01-01T09:00:00.000000Z"
    previous = {"tool": "lookup_customer", "decision": "allow", "outcome": "completed", "ts": earlier}
    counters = {**empty_counters_v2(), "allowed": 1, "completed": 1, "first_ts": earlier, "last_ts": earlier}
    history: Any = [previous] if version == 1 else {
        "window": 20, "run": counters, "tools": {"lookup_customer": dict(counters)},
        "data_classes": {"customer_pii": {"allowed": 1, "require_approval": 0, "denied": 0}}, "recent": [previous],
    }
    return build_policy_input(
        workload_id="spiffe://langgraph-warden.local/agent", thread_id="ops-1042",
        tool_name="issue_refund",
        tool_spec=ToolSpec("issue_refund", irreversible=True, scopes=("payments:refund",), target_arg="order_id"),
        args={"order_id": "O-77", "amount_cents": 4200}, owner="alice@ops.example",
        intent="Resolve ticket OPS-1042: refund a duplicate charge", risk_tier="medium",
        allowed_tools=["lookup_customer", "issue_refund"], history=history,
        now="2025-01-01T09:00:05.000000Z", version=version,
    )


@app.command("example-input", epilog=EXIT_CODES_HELP)
def example_input_command(version: _VersionOption = None) -> None:
    """Print a valid policy input document to start from (pipe it to `warden policy eval --input -`).

    The shipped Rego policy reads version 2; the shipped Cedar policy maps either version.
    """
    from langgraph_warden.guards.policy import POLICY_INPUT_VERSION

    typer.echo(json.dumps(example_input(POLICY_INPUT_VERSION if version is None else version), indent=2))


@app.command("show-default", epilog=EXIT_CODES_HELP)
def show_default_command(
    engine: Annotated[EngineChoice, typer.Option("--engine", "-e", help="Which shipped policy.")] = EngineChoice.rego,
    path: Annotated[bool, typer.Option("--path", help="Print where the file is installed instead of its text.")] = False,
) -> None:
    """Print the shipped default policy (copy it, edit it, pass it to `eval --policy` or Warden.open(policy=))."""
    source = _default_policy(engine)
    typer.echo(str(source) if path else source.read_text(encoding="utf-8"), nl=path)


@app.command("schema", epilog=EXIT_CODES_HELP)
def schema_command(version: _VersionOption = None) -> None:
    """Print the JSON Schema (draft 2020-12) of the policy input document."""
    from langgraph_warden.errors import ConfigurationError
    from langgraph_warden.guards.policy import POLICY_INPUT_VERSION
    from langgraph_warden.guards.policy_schema import policy_input_schema

    try:
        schema = policy_input_schema(POLICY_INPUT_VERSION if version is None else version)
    except ConfigurationError as exc:
        _fail(f"--version: {exc}")
    typer.echo(json.dumps(schema, indent=2))
