"""A launcher that imports the given modules once, then runs each requested ``main`` in a forked process.

    python -m tests.support.forker MODULE [MODULE ...]

It prints ``ready``; then for every JSON line on stdin (``{"module": ..., "args": [...],
"stdout": PATH, "stderr": PATH}``) it forks a child that runs ``MODULE.main(*args)`` with its
stdout and stderr going to those files, waits for it, and prints ``{"status": N}`` (the exit code,
or minus the signal that ended it, as ``subprocess`` reports it).

Why: a process that imports LangGraph and the warden pays seconds of CPU before it does anything.
A forked child is still its own OS process — its own memory, connections and keys, opened after
the fork; a SIGKILL ends it alone — but it starts in milliseconds. The launcher itself never
opens a database.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from typing import Any


def _child(request: dict[str, Any]) -> int:
    out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(out, 1)
    os.dup2(err, 2)
    try:
        importlib.import_module(request["module"]).main(*request["args"])
        return 0
    except SystemExit as exc:  # what the interpreter does with SystemExit at the top level
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1


def run(request: dict[str, Any]) -> int:
    """Fork, run the request in the child, and return its status as ``subprocess`` would."""
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = _child(request)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def main(modules: list[str]) -> None:
    for name in modules:
        importlib.import_module(name)
    print("ready", flush=True)
    for line in sys.stdin:
        print(json.dumps({"status": run(json.loads(line))}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
