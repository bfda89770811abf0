"""A launcher that imports the given modules once, then runs each requested function in a forked process.

    python -m tests.support.forker MODULE [MODULE ...]

It prints ``ready``; then for every JSON line on stdin (``{"module": ..., "function": "main",
"args": [...], "stdout": PATH, "stderr": PATH, "env": {NAME: VALUE or null}, "timeout": S}``) it
forks a child that sets (or, for null, removes) those environment variables, runs
``MODULE.FUNCTION(*args)`` (a module not preloaded is imported by the child) with its stdout and
stderr going to those files, waits for it, and prints ``{"status": N}`` (the exit code, or minus
the signal that ended it, as ``subprocess`` reports it). :class:`Launcher` is the test's side.

Why: a process that imports LangGraph and the warden pays seconds of CPU before it does anything.
A forked child is still its own OS process — its own memory, connections and keys, opened after
the fork; a SIGKILL ends it alone — but it starts in milliseconds. The launcher itself never
opens a database.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _child(request: dict[str, Any]) -> int:
    out = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    err = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(out, 1)
    os.dup2(err, 2)
    signal.alarm(int(request.get("timeout", 120)))  # a hung child ends by SIGALRM (status -14), not a hung suite
    for name, value in request.get("env", {}).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    try:
        getattr(importlib.import_module(request["module"]), request.get("function", "main"))(*request["args"])
        return 0
    except SystemExit as exc:  # what the interpreter does with SystemExit at the top level
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except BaseException:
        traceback.print_exc()
        return 1


def fork_child(body: Callable[[], int]) -> int:
    """Fork a child that runs ``body`` and exits with the code it returns (3, with the traceback on
    stderr, if it raises), never returning into the caller's code; the child's pid."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            code = body()
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def exit_status(pid: int) -> int:
    """Wait for the child ``pid``: its exit code, or minus the signal that ended it (as ``subprocess`` reports)."""
    _, status = os.waitpid(pid, 0)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def run(request: dict[str, Any]) -> int:
    """Fork, run the request in the child, and return its status."""
    return exit_status(fork_child(lambda: _child(request)))


class Launcher:
    """The test's side: start the launcher, run module mains in forked processes, close it."""

    def __init__(self, directory: Path, modules: list[str], timeout: float = 120) -> None:
        self.directory, self.timeout, self.runs = directory, timeout, 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.forker", *modules],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
        )
        ready = self.proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert ready == "ready", (ready, self.proc.stderr.read())  # type: ignore[union-attr]

    def run(
        self, module: str, *args: str, function: str = "main", env: dict[str, str | None] | None = None,
        timeout: int = 120,
    ) -> subprocess.CompletedProcess[str]:
        """``module.function(*args)`` in a fresh forked process, as ``python -m module args`` runs ``main``."""
        self.runs += 1
        out, err = self.directory / f"{self.runs}.out", self.directory / f"{self.runs}.err"
        request = {"module": module, "function": function, "args": list(args), "stdout": str(out), "stderr": str(err),
                   "env": env or {}, "timeout": timeout}
        self.proc.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        reply = self.proc.stdout.readline()  # type: ignore[union-attr]
        assert reply, self.proc.stderr.read()  # type: ignore[union-attr]
        return subprocess.CompletedProcess([module, *args], json.loads(reply)["status"], out.read_text(), err.read_text())

    def close(self) -> None:
        self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main(modules: list[str]) -> None:
    for name in modules:
        importlib.import_module(name)
    print("ready", flush=True)
    for line in sys.stdin:
        print(json.dumps({"status": run(json.loads(line))}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
