"""Issue 19 item 4: errors a new user meets in the first hour say what is wrong and how to fix it.

- a PostgreSQL URL without the ``postgres`` extra names ``pip install 'langgraph-warden[postgres]'``
  (it was a 70-line traceback about psycopg);
- every command fails in one stderr line with exit 2 on a WardenError (``warden demo`` on an
  unreachable server printed ~400 lines of traceback);
- a SQLite file in a read-only directory, or a read-only file, is named as such (it was "check that
  the server is running");
- ``Warden.open(policy="file.rego")`` loads the file or fails at open (it failed at the first call
  with an AttributeError).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from langgraph_warden.cli import app
from langgraph_warden.cli_errors import WardenGroup
from langgraph_warden.errors import ConfigurationError, DatabaseUnavailableError
from langgraph_warden.guards.policy import DEFAULT_CEDAR_POLICY, DEFAULT_REGO_POLICY
from langgraph_warden.warden import Warden

ROOT = Path(__file__).resolve().parents[1]
UNREACHABLE_PG = "postgresql+psycopg://postgres@127.0.0.1:1/test"
PIP_EXTRA = "pip install 'langgraph-warden[postgres]'"


def run(argv: list[str], *, cwd: Path, pythonpath: list[str] = (), prefix: list[str] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*pythonpath, str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("WARDEN_DB", None)
    return subprocess.run([*prefix, sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)


def warden(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return run(["-m", "langgraph_warden.cli", *args], **kwargs)


def one_line_exit_2(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# ------------------------------------------------------------------- the postgres extra
@pytest.fixture
def without_psycopg(tmp_path) -> list[str]:
    """A PYTHONPATH entry that makes ``import psycopg`` fail as on a machine without the extra."""
    stub = tmp_path / "no_psycopg"
    stub.mkdir()
    (stub / "psycopg.py").write_text('raise ModuleNotFoundError("No module named \'psycopg\'", name="psycopg")\n')
    return [str(stub)]


@pytest.mark.parametrize("command", [["demo", "--approve-all"], ["audit", "verify"], ["approvals", "list"],
                                     ["credentials", "list"]], ids=" ".join)
def test_a_postgres_url_without_the_extra_names_the_extra(tmp_path, without_psycopg, command):
    line = one_line_exit_2(warden(*command, "--db", UNREACHABLE_PG, cwd=tmp_path, pythonpath=without_psycopg))
    assert PIP_EXTRA in line and "psycopg" in line


def test_warden_open_without_the_extra_raises_a_configuration_error(tmp_path, without_psycopg):
    code = ("from langgraph_warden.errors import ConfigurationError\n"
            "from langgraph_warden.warden import Warden\n"
            "try:\n"
            f"    Warden.open({UNREACHABLE_PG!r}, ephemeral_keys=True)\n"
            "except ConfigurationError as exc:\n"
            "    print('ConfigurationError:', exc)\n")
    proc = run(["-c", code], cwd=tmp_path, pythonpath=without_psycopg)
    assert proc.returncode == 0 and proc.stdout.startswith("ConfigurationError:") and PIP_EXTRA in proc.stdout, (
        proc.stdout + proc.stderr)


# ------------------------------------------------------------------ one handler, one line
def test_demo_on_an_unreachable_server_is_one_line(tmp_path):
    line = one_line_exit_2(warden("demo", "--approve-all", "--db", UNREACHABLE_PG, cwd=tmp_path))
    assert "cannot reach" in line and "127.0.0.1:1" in line


def test_every_command_group_fails_in_one_line_on_a_warden_error():
    """The handler is the group class of the app and of every sub-app, so a WardenError a command did
    not expect is still one line and exit 2 (and an IntegrityError exit 1)."""
    from langgraph_warden.errors import IntegrityError

    probe = typer.Typer(cls=WardenGroup)

    @probe.command("boom")
    def boom(kind: str) -> None:
        raise {"config": ConfigurationError("bad --x: use --x 3"), "integrity": IntegrityError("event 3 changed")}[kind]

    @probe.command("other")
    def other() -> None:
        pass

    runner = CliRunner()
    res = runner.invoke(probe, ["boom", "config"])
    assert res.exit_code == 2 and res.stderr == "error: bad --x: use --x 3\n", res.output
    assert runner.invoke(probe, ["boom", "integrity"]).exit_code == 1
    warden_cmd = typer.main.get_command(app)
    groups = {"warden": warden_cmd, **{n: c for n, c in warden_cmd.commands.items() if hasattr(c, "commands")}}
    assert set(groups) == {"warden", "audit", "approvals", "credentials", "policy"}
    for name, group in groups.items():
        assert isinstance(group, WardenGroup), name


def test_the_help_documents_the_exit_codes():
    res = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "Exit codes: 0 success; 1" in res.output and "2 the command could not do its job" in res.output


# --------------------------------------------------------------- a read-only SQLite place
def _unprivileged() -> list[str]:
    """A prefix that makes root obey file permissions (drops CAP_DAC_OVERRIDE), or [] when not root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    drop = [setpriv, "--bounding-set", "-dac_override,-dac_read_search,-fowner,-linux_immutable"] if setpriv else []
    if not drop or subprocess.run([*drop, "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root without a way to drop CAP_DAC_OVERRIDE: root writes anywhere")
    return drop


def _open(url: str, cwd: Path) -> subprocess.CompletedProcess:
    code = ("from langgraph_warden.errors import DatabaseUnavailableError\n"
            "from langgraph_warden.warden import Warden\n"
            "try:\n"
            f"    Warden.open({url!r}, ephemeral_keys=True).close()\n"
            "    print('opened')\n"
            "except DatabaseUnavailableError as exc:\n"
            "    print(exc)\n")
    return run(["-c", code], cwd=cwd, prefix=_unprivileged())


def test_a_read_only_directory_is_named_with_the_fix(tmp_path):
    prefix = _unprivileged()
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        proc = _open(f"sqlite:///{ro / 'agent.db'}", tmp_path)
        assert f"directory '{ro}' is not writable" in proc.stdout and "server is running" not in proc.stdout, (
            proc.stdout + proc.stderr)
        line = one_line_exit_2(warden("demo", "--approve-all", "--db", f"sqlite:///{ro / 'agent.db'}", cwd=tmp_path,
                                      prefix=prefix))
        assert "is not writable" in line and "writable directory" in line
        assert os.listdir(ro) == []
    finally:
        ro.chmod(0o755)


def test_a_read_only_file_and_a_file_in_a_read_only_directory(tmp_path):
    _unprivileged()
    for name in ("file", "dir"):
        (tmp_path / name).mkdir()
        with Warden.open(f"sqlite:///{tmp_path / name / 'agent.db'}", ephemeral_keys=True) as w:
            w.start_run("t", owner="alice@example.com", intent="x")
    for p in (tmp_path / "file").iterdir():
        p.chmod(0o444)
    (tmp_path / "dir").chmod(0o555)
    try:
        proc = _open(f"sqlite:///{tmp_path / 'file' / 'agent.db'}", tmp_path)
        assert "is read-only for" in proc.stdout and "chmod u+w" in proc.stdout, proc.stdout + proc.stderr
        proc = _open(f"sqlite:///{tmp_path / 'dir' / 'agent.db'}", tmp_path)
        assert f"its directory '{tmp_path / 'dir'}' is not" in proc.stdout and "agent.db-wal" in proc.stdout, (
            proc.stdout + proc.stderr)
    finally:
        (tmp_path / "dir").chmod(0o755)


def test_a_missing_directory_is_named(tmp_path):
    with pytest.raises(DatabaseUnavailableError, match="its directory .* does not exist. Create it"):
        Warden.open(f"sqlite:///{tmp_path / 'nope' / 'agent.db'}", ephemeral_keys=True)
    assert not (tmp_path / "nope").exists()


# ------------------------------------------------------------------------ policy= a path
def test_policy_path_is_loaded_by_its_extension(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    for path, engine in ((str(DEFAULT_REGO_POLICY), "rego"), (DEFAULT_CEDAR_POLICY, "cedar")):
        with Warden.open(url, ephemeral_keys=True, policy=path) as w:
            assert w.policy.name == engine and w.guard.policy is w.policy


@pytest.mark.parametrize(("policy", "message"), [
    ("file.rego", r"policy='file.rego': no such file .*file.rego"),
    ("policy.txt", r"expected a .rego or .cedar file.*RegoEngine\('policy.rego'\)"),
    ("package warden\ndefault allow := true\n", r"policy text; pass RegoEngine.from_source\(text\)"),
    (42, r"expects a policy engine or a .rego/.cedar path, got int"),
])
def test_a_bad_policy_fails_at_open(tmp_path, monkeypatch, policy, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match=message):
        Warden.open(f"sqlite:///{tmp_path / 'w.db'}", ephemeral_keys=True, policy=policy)
