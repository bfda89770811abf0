"""``warden policy`` — tools for policy authors.

``warden policy eval --policy PATH --input FILE`` runs one policy input document
(see :mod:`langgraph_warden.guards.policy`; version 1 or 2, read from the document,
and the engine is built for that version) through an embedded engine and prints
the decision JSON. Exit codes are stable so scripts and CI can assert on them:
0 allow, 1 deny, 2 needs approval, 3 error (bad policy, bad input, or an engine
that could not decide — its decision is still printed).

``warden policy schema [--version N]`` prints the JSON Schema (draft 2020-12) of
the version-N input document (default: the current version), for authors writing
inputs or tests by hand.
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

__all__ = ["app", "EXIT_ALLOW", "EXIT_DENY", "EXIT_APPROVAL", "EXIT_ERROR"]

EXIT_ALLOW, EXIT_DENY, EXIT_APPROVAL, EXIT_ERROR = 0, 1, 2, 3

#: Reasons that mean "the engine could not decide" rather than "the policy said no".
_ERROR_REASON_PREFIXES = ("policy_error:", "policy_undefined", "policy_unavailable", "malformed_decision",
                          "policy_input_version_mismatch")

app = typer.Typer(help="Evaluate and check tool-call policies.", no_args_is_help=True)


class EngineChoice(str, Enum):
    rego = "rego"
    cedar = "cedar"


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=EXIT_ERROR)


@app.callback()
def _policy() -> None:
    """Evaluate and check tool-call policies."""


@app.command("eval")
def eval_command(
    policy: Annotated[
        list[Path],
        typer.Option("--policy", "-p", help="Policy file (.rego/.cedar) or directory of .rego files; repeatable for Rego."),
    ],
    input_file: Annotated[Path, typer.Option("--input", "-i", help="Policy input document (JSON); '-' reads stdin.")],
    engine: Annotated[EngineChoice, typer.Option("--engine", "-e", help="Engine to evaluate with.")] = EngineChoice.rego,
    query: Annotated[
        Optional[str], typer.Option("--query", "-q", help="Rego rule holding the decision (default data.warden.decision).")
    ] = None,
    data: Annotated[
        Optional[Path], typer.Option("--data", "-d", help="Rego: JSON base document, e.g. {\"warden_config\": {...}}.")
    ] = None,
) -> None:
    """Print the decision for one input. Exit 0 allow, 1 deny, 2 approval, 3 error."""
    from langgraph_warden.errors import ConfigurationError
    from langgraph_warden.guards.policy import validate_policy_input

    try:
        raw = typer.get_text_stream("stdin").read() if str(input_file) == "-" else input_file.read_text(encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot read --input {input_file}: {exc}")
    try:
        document = json.loads(raw)
    except ValueError as exc:
        _fail(f"--input {input_file} is not JSON: {exc}")
    try:
        policy_input = validate_policy_input(document)
    except ConfigurationError as exc:
        _fail(f"--input {input_file}: {exc}")
    version = policy_input["version"]  # validated: one of POLICY_INPUT_VERSIONS

    try:
        if engine is EngineChoice.rego:
            from langgraph_warden.guards.rego import DEFAULT_QUERY, RegoEngine

            base = None
            if data is not None:
                try:
                    base = json.loads(data.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    _fail(f"--data {data}: {exc}")
            evaluator = RegoEngine(policy, data=base, query=query or DEFAULT_QUERY, input_version=version)
        else:
            from langgraph_warden.guards.cedar import CedarEngine

            if len(policy) != 1:
                _fail("--engine cedar takes exactly one --policy file")
            if query is not None or data is not None:
                _fail("--query and --data apply to --engine rego only")
            evaluator = CedarEngine(policy[0], input_version=version)
    except ConfigurationError as exc:
        _fail(str(exc))

    decision = evaluator.decide(policy_input)
    typer.echo(json.dumps(decision.to_dict(), indent=2, sort_keys=True))
    if any(r.startswith(_ERROR_REASON_PREFIXES) for r in decision.reasons):
        raise typer.Exit(code=EXIT_ERROR)
    if not decision.allow:
        raise typer.Exit(code=EXIT_DENY)
    raise typer.Exit(code=EXIT_APPROVAL if decision.require_approval else EXIT_ALLOW)


@app.command("schema")
def schema_command(
    version: Annotated[
        Optional[int], typer.Option("--version", "-v", help="Policy input version (1 or 2; default: the current one).")
    ] = None,
) -> None:
    """Print the JSON Schema (draft 2020-12) of the policy input document."""
    from langgraph_warden.errors import ConfigurationError
    from langgraph_warden.guards.policy import POLICY_INPUT_VERSION
    from langgraph_warden.guards.policy_schema import policy_input_schema

    try:
        schema = policy_input_schema(POLICY_INPUT_VERSION if version is None else version)
    except ConfigurationError as exc:
        _fail(f"--version: {exc}")
    typer.echo(json.dumps(schema, indent=2))
