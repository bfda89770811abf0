"""Issue 19 item 3: ``warden approvals decide --graph myagent:build_graph`` imports ``myagent.py`` from the
current directory (the console script's ``sys.path`` does not hold it), and ``examples/resume_from_cli.py``
runs exactly the commands it prints."""

from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

from .support.agents import SideEffects
from .support.graphs_approval import EFFECTS_ENV
from .test_approvals_cli import pause
from .test_examples import EXAMPLES

ROOT = Path(__file__).resolve().parents[1]
#: tests/ importable (the graph module imports from it); the project directory is not on it
PYTHONPATH = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

MYAGENT = '''
import os
from tests.support.graphs_approval import DEFAULT_SCRIPT, EFFECTS_ENV, build


def build_graph(warden):
    return build(warden, os.environ[EFFECTS_ENV], DEFAULT_SCRIPT)
'''


def warden_script(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``warden <args>`` as the console script runs it: ``-P`` keeps the current directory off ``sys.path``
    (``python -m`` would put it there and hide the bug)."""
    code = "import sys; from langgraph_warden.cli import main; sys.argv[0] = 'warden'; main()"
    return subprocess.run([sys.executable, "-P", "-c", code, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_decide_imports_the_graph_module_from_the_current_directory(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'w.db'}"
    effects = SideEffects(tmp_path / "effects.jsonl")
    (req,) = pause(db_url, effects, "t-cwd")
    project = tmp_path / "project"
    project.mkdir()
    (project / "myagent.py").write_text(MYAGENT)
    env = {**os.environ, EFFECTS_ENV: str(effects.path), "PYTHONPATH": PYTHONPATH}
    env.pop("WARDEN_DB", None)
    proc = warden_script("approvals", "decide", "t-cwd", req.request_id, "--approve", "--as", "bob@example.com",
                         "--db", db_url, "--graph", "myagent:build_graph", "--ephemeral-keys", "--format", "json",
                         cwd=project, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["result"] == "refunded 10 on o-1"
    assert effects.count("issue_refund") == 1


def test_a_missing_graph_module_names_the_directory_and_the_fix(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'w.db'}"
    effects = SideEffects(tmp_path / "effects.jsonl")
    (req,) = pause(db_url, effects, "t-cwd")
    env = {**os.environ, EFFECTS_ENV: str(effects.path), "PYTHONPATH": PYTHONPATH}
    proc = warden_script("approvals", "decide", "t-cwd", req.request_id, "--approve", "--as", "bob@example.com",
                         "--db", db_url, "--graph", "nosuchagent:build_graph", "--ephemeral-keys", cwd=tmp_path, env=env)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "no module 'nosuchagent'" in proc.stderr and str(tmp_path) in proc.stderr and "PYTHONPATH" in proc.stderr
    assert effects.count("issue_refund") == 0


def test_resume_from_cli_example_runs_the_commands_it_prints(tmp_path, monkeypatch):
    """Every ``$ ...`` line the example prints is the command it ran (the old one printed ``warden ...``
    and ran ``python -m langgraph_warden.cli ...``)."""
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.chdir(tmp_path)  # the example runs its commands from the repository root itself
    from examples import resume_from_cli as example

    ran: list[tuple[list[str], str]] = []
    real_popen = subprocess.Popen

    def recording_popen(argv, *args, **kwargs):
        ran.append((list(argv), str(kwargs.get("cwd"))))
        return real_popen(argv, *args, **kwargs)

    monkeypatch.setattr(example.subprocess, "Popen", recording_popen)
    out = io.StringIO()
    with redirect_stdout(out):
        code = example.main(["--db", f"sqlite:///{tmp_path / 'example.db'}"])
    assert code == 0, out.getvalue()
    for line in EXAMPLES["resume_from_cli.py"]:  # the example's key lines (tests/test_examples.py runs the others)
        assert line in out.getvalue(), f"{line!r} missing from:\n{out.getvalue()}"
    assert (tmp_path / "example.db").exists()  # --db was honoured
    printed = [line.strip()[2:] for line in out.getvalue().splitlines() if line.strip().startswith("$ ")]
    assert len(printed) == len(ran) == 2, out.getvalue()
    for line, (argv, cwd) in zip(printed, ran):
        where, _, command = line.partition(" && ")
        assert where == f"cd {shlex.quote(cwd)}"
        words = shlex.split(command)
        assert words[0] == "warden" and Path(argv[0]).name == "warden", (line, argv)  # the console script
        assert words[1:] == argv[1:], (line, argv)
