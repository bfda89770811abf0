"""One error handler for every ``warden`` command, so that none of them ends in a traceback.

Why one place: each command caught the errors it expected, and anything else — an unreachable
server in ``warden demo``, a missing database driver — printed hundreds of lines of traceback.
:class:`WardenGroup` is the click group class of the ``warden`` app and of each of its sub-apps:
a :class:`~langgraph_warden.errors.WardenError` or a database driver error raised by any command
becomes exactly one line on stderr, ``error: <what was wrong and how to fix it>``, and an exit code
from the table below.

Exit codes of every command except ``warden policy`` (see :mod:`langgraph_warden.cli_policy`):

* 0 — success;
* 1 — the command's own negative verdict: tampering, or a call run twice or without authorisation,
  found (``audit``); the guard refused the answer (``approvals decide``); the demo found a problem;
* 2 — the command could not do its job: a usage error (missing or bad option), a configuration
  error, a missing, foreign, corrupt or unreachable database, an unknown thread or request;
* 130 — interrupted (Ctrl-C).
"""

from __future__ import annotations

from typing import Any, ClassVar

import typer
from typer.core import TyperGroup

from .cli_db import EXIT_ERROR, EXIT_TAMPERED, database_errors, fail, one_line
from .errors import IntegrityError, WardenError

__all__ = ["WardenGroup", "EXIT_CODES_HELP", "EXIT_INTERRUPTED"]

#: click's UsageError as typer raises it (newer typer releases vendor click as ``typer._click``).
UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")

EXIT_INTERRUPTED = 130

#: The exit codes as the command help states them (one paragraph; rich reflows it).
EXIT_CODES_HELP = (
    "Exit codes: 0 success; 1 the command's negative verdict (tampering or an unauthorised call found, "
    "an approval refused, the demo found a problem); 2 the command could not do its job (bad usage or "
    "configuration, a missing, foreign or unreachable database, an unknown thread); 130 interrupted. "
    "`warden policy` has its own: see `warden policy --help`."
)


class WardenGroup(TyperGroup):
    """A typer group whose commands fail in one line with a documented exit code.

    ``error_exit_code``: for a :class:`WardenError` or a database error; ``usage_exit_code``:
    for a bad command line (``None`` keeps click's 2). A subclass changes them for a sub-app
    whose codes mean something else (``warden policy``).
    """

    error_exit_code: ClassVar[int] = EXIT_ERROR
    usage_exit_code: ClassVar[int | None] = None

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except UsageError as exc:  # e.g. the group run without a command
            raise self._usage(exc) from None

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:  # a command's missing, unknown or bad option
            raise self._usage(exc) from None
        except IntegrityError as exc:  # the history failed verification: a finding, not a usage error
            fail(exc, EXIT_TAMPERED)
        except WardenError as exc:
            fail(exc, self.error_exit_code)
        except database_errors() as exc:
            detail = one_line(getattr(exc, "orig", None) or exc) or type(exc).__name__
            fail(f"the database failed: {detail}. If the server went away or the file is locked, run the "
                 "command again; if the file is damaged, restore it from a backup", self.error_exit_code)

    def _usage(self, exc: Any) -> Any:
        if self.usage_exit_code is not None:
            exc.exit_code = self.usage_exit_code
        return exc
