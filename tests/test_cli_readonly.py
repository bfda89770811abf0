"""Commands that read never create, migrate or write a database, and fail in one line with exit 2.

The careless operator of the threat model: a mistyped ``--db``, an empty or foreign file, a
corrupt one, a schema from a newer (or older) langgraph-warden, an unreachable server, a typo'd
thread id. Each gives exit code 2 (1 stays "tampering found"), exactly one line on stderr naming
the problem and the fix, and leaves the directory, the file and the schema as they were.

A few cases run ``warden`` as a real subprocess (exit codes, stderr, no traceback, directory
listing); the rest use typer's CliRunner. SQLite and, when configured, PostgreSQL (a fresh empty
schema is the "non-warden database" there).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from langgraph_warden.checkpointers.engine import parse_url
from langgraph_warden.checkpointers.migrate import VERSION_TABLE, head_revision
from langgraph_warden.checkpointers.readonly import check_existing, open_existing
from langgraph_warden.cli import app
from langgraph_warden.cli_db import open_for_reading
from langgraph_warden.errors import (
    DatabaseNotFoundError,
    DatabaseUnavailableError,
    IntegrityError,
    NotAWardenDatabaseError,
    SchemaVersionError,
)
from langgraph_warden.warden import Warden

from .conftest import PG_URL, pg_schema_url, requires_pg

runner = CliRunner()
THREAD = "t-readonly-refund"
ROOT = Path(__file__).resolve().parents[1]

#: Every command that only reads, with the arguments it needs besides --db.
READ_COMMANDS = {
    "audit verify": ["audit", "verify"],
    "audit show": ["audit", "show", THREAD],
    "audit head": ["audit", "head"],
    "audit export": ["audit", "export"],
    "audit events": ["audit", "events", THREAD],
    "approvals list": ["approvals", "list"],
    "credentials list": ["credentials", "list"],
}
#: The read commands that take a thread id, as they take it.
THREAD_COMMANDS = {
    "audit verify": lambda t: ["audit", "verify", "--thread", t],
    "audit show": lambda t: ["audit", "show", t],
    "audit head": lambda t: ["audit", "head", "--thread", t],
    "audit export": lambda t: ["audit", "export", "--thread", t],
    "audit events": lambda t: ["audit", "events", t],
    "approvals list": lambda t: ["approvals", "list", "--thread", t],
    "credentials list": lambda t: ["credentials", "list", "--thread", t],
}
#: Commands that write, but only to an existing warden database.
WRITE_COMMANDS = {
    "approvals decide": ["approvals", "decide", THREAD, "apr_0", "--approve", "--as", "bob@example.com",
                         "--graph", "tests.support.graphs_approval:graph", "--ephemeral-keys"],
    "credentials revoke-run": ["credentials", "revoke-run", THREAD, "--ephemeral-keys"],
}
ALL_COMMANDS = {**READ_COMMANDS, **WRITE_COMMANDS}


def invoke(args: list[str], db: str):
    return runner.invoke(app, [*args, "--db", db])


def one_error_line(res) -> str:
    """The single stderr line of a failed command (asserts there is exactly one, and no stdout)."""
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in res.output, res.output
    assert res.stdout == "", res.stdout
    return lines[0]


def listing(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def make_warden_db(url: str, thread: str = THREAD) -> None:
    with Warden.open(url, ephemeral_keys=True) as w:
        w.start_run(thread, owner="alice@example.com", intent="refund order o-1", risk_tier="low")


def sqlite_tables(path: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return sorted(r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    finally:
        conn.close()


def pg_tables(url: str) -> list[str]:
    eng = create_engine(parse_url(url))
    try:
        with eng.connect() as conn:
            return sorted(r[0] for r in conn.execute(text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")))
    finally:
        eng.dispose()


def set_revision(url: str, revision: str) -> None:
    eng = create_engine(parse_url(url))
    with eng.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = :r"), {"r": revision})
    eng.dispose()


def revision_of(url: str) -> str:
    eng = create_engine(parse_url(url))
    with eng.connect() as conn:
        rev = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar_one()
    eng.dispose()
    return rev


# ------------------------------------------------------------------------------- missing
@pytest.mark.parametrize("command", list(ALL_COMMANDS), ids=list(ALL_COMMANDS))
def test_missing_sqlite_file_is_refused_and_not_created(tmp_path, command):
    before = sorted(os.listdir(tmp_path))
    db = f"sqlite:///{tmp_path / 'typo.db'}"
    res = invoke(ALL_COMMANDS[command], db)
    assert res.exit_code == 2, res.output
    line = one_error_line(res)
    assert "typo.db" in line and "does not exist" in line and "--db" in line
    assert sorted(os.listdir(tmp_path)) == before  # nothing created: no file, no -wal, no -journal


def test_missing_directory_is_named(tmp_path):
    res = invoke(READ_COMMANDS["audit verify"], f"sqlite:///{tmp_path / 'nodir' / 'w.db'}")
    assert res.exit_code == 2 and "nor does its directory" in one_error_line(res)
    assert not (tmp_path / "nodir").exists()


@requires_pg
@pytest.mark.postgres
def test_missing_postgres_database_is_refused():
    url = parse_url(PG_URL).set(database="warden_no_such_db_7f3a").render_as_string(hide_password=False)
    res = invoke(READ_COMMANDS["audit verify"], url)
    assert res.exit_code == 2
    assert "does not exist" in one_error_line(res) and "warden_no_such_db_7f3a" in res.stderr


# --------------------------------------------------------------------- empty / garbage / foreign
@pytest.mark.parametrize("command", list(ALL_COMMANDS), ids=list(ALL_COMMANDS))
def test_empty_file_is_refused_and_left_empty(tmp_path, command):
    (tmp_path / "empty.db").touch()
    before = listing(tmp_path)
    res = invoke(ALL_COMMANDS[command], f"sqlite:///{tmp_path / 'empty.db'}")
    assert res.exit_code == 2, res.output
    assert "empty (0 bytes)" in one_error_line(res)
    assert listing(tmp_path) == before and (tmp_path / "empty.db").stat().st_size == 0


@pytest.mark.parametrize("command", list(ALL_COMMANDS), ids=list(ALL_COMMANDS))
def test_garbage_file_is_refused_and_untouched(tmp_path, command):
    (tmp_path / "garbage.db").write_bytes(bytes(range(256)) * 64)
    before = listing(tmp_path)
    res = invoke(ALL_COMMANDS[command], f"sqlite:///{tmp_path / 'garbage.db'}")
    assert res.exit_code == 2, res.output
    assert "not a SQLite database" in one_error_line(res)
    assert listing(tmp_path) == before


def test_corrupt_sqlite_body_is_refused(tmp_path):
    """A file with the SQLite header and garbage after it: the driver's error becomes one line."""
    path = tmp_path / "corrupt.db"
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 64)
    before = listing(tmp_path)
    res = invoke(READ_COMMANDS["audit verify"], f"sqlite:///{path}")
    assert res.exit_code == 2, res.output
    line = one_error_line(res)
    assert "corrupt" in line and "backup" in line
    assert listing(tmp_path) == before


def _foreign_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO users (name) VALUES ('ada')")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("command", list(ALL_COMMANDS), ids=list(ALL_COMMANDS))
def test_foreign_sqlite_database_is_refused_and_untouched(tmp_path, command):
    path = tmp_path / "app.db"
    _foreign_sqlite(path)
    before = listing(tmp_path)
    res = invoke(ALL_COMMANDS[command], f"sqlite:///{path}")
    assert res.exit_code == 2, res.output
    line = one_error_line(res)
    assert "not a langgraph-warden database" in line and "users" in line
    # Byte for byte as it was: no warden tables, and not switched to WAL mode either.
    assert listing(tmp_path) == before
    assert sqlite_tables(path) == ["users"]


@requires_pg
@pytest.mark.postgres
@pytest.mark.parametrize("command", list(ALL_COMMANDS), ids=list(ALL_COMMANDS))
def test_empty_postgres_schema_is_refused_and_untouched(command):
    url = pg_schema_url("ro")
    res = invoke(ALL_COMMANDS[command], url)
    assert res.exit_code == 2, res.output
    line = one_error_line(res)
    assert "not a langgraph-warden database" in line and "no tables" in line and "schema 'ro_" in line
    assert pg_tables(url) == []  # nothing created, nothing migrated


# ---------------------------------------------------------------------------- schema versions
@pytest.mark.parametrize("command", list(ALL_COMMANDS), ids=list(ALL_COMMANDS))
def test_newer_schema_is_refused_with_the_schema_version_error(db_url, command):
    make_warden_db(db_url)
    set_revision(db_url, "9999_from_the_future")
    res = invoke(ALL_COMMANDS[command], db_url)
    assert res.exit_code == 2, res.output
    line = one_error_line(res)
    assert "'9999_from_the_future', which this langgraph-warden does not know" in line
    assert "written by a newer version. Upgrade langgraph-warden" in line
    assert revision_of(db_url) == "9999_from_the_future"
    with pytest.raises(SchemaVersionError):
        check_existing(db_url)


def test_older_schema_is_not_migrated_by_a_read(db_url):
    make_warden_db(db_url)
    set_revision(db_url, "0001_initial")
    for command in READ_COMMANDS:
        res = invoke(READ_COMMANDS[command], db_url)
        assert res.exit_code == 2, (command, res.output)
        line = one_error_line(res)
        assert "'0001_initial', older than" in line and head_revision() in line
    assert revision_of(db_url) == "0001_initial"
    assert check_existing(db_url, require_head=False) == "0001_initial"


def test_a_damaged_warden_database_names_the_missing_tables(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    make_warden_db(url)
    conn = sqlite3.connect(tmp_path / "w.db")
    conn.execute("DROP TABLE warden_leases")
    conn.commit()
    conn.close()
    res = invoke(READ_COMMANDS["credentials list"], url)
    assert res.exit_code == 2 and "lacks the table(s) warden_leases" in one_error_line(res)


# ------------------------------------------------------------------------------ unknown thread
@pytest.mark.parametrize("command", list(THREAD_COMMANDS), ids=list(THREAD_COMMANDS))
def test_unknown_thread_is_exit_2_with_the_closest_ids(db_url, command):
    make_warden_db(db_url)
    make_warden_db(db_url, "t-other-run")
    res = invoke(THREAD_COMMANDS[command]("t-readonly-refnud"), db_url)
    assert res.exit_code == 2, res.output
    line = one_error_line(res)
    assert "no such thread 't-readonly-refnud'" in line and f"closest known: '{THREAD}'" in line
    res = invoke(THREAD_COMMANDS[command]("zzz"), db_url)
    assert res.exit_code == 2 and "2 other thread(s)" in one_error_line(res)
    # The known thread still works.
    res = invoke(THREAD_COMMANDS[command](THREAD), db_url)
    assert res.exit_code == 0, res.output


def test_unknown_thread_for_the_writing_commands(db_url, monkeypatch, tmp_path):
    make_warden_db(db_url)
    monkeypatch.setenv("WARDEN_TEST_EFFECTS", str(tmp_path / "effects.jsonl"))
    decide = ["approvals", "decide", "t-nope", "apr_0", "--approve", "--as", "bob@example.com",
              "--graph", "tests.support.graphs_approval:graph", "--ephemeral-keys"]
    for args in (decide, ["credentials", "revoke-run", "t-nope", "--ephemeral-keys"]):
        res = invoke(args, db_url)
        assert res.exit_code == 2, res.output
        assert "no such thread 't-nope'" in one_error_line(res)


def test_a_deleted_thread_with_a_saved_head_is_tampering_not_a_typo(db_url, tmp_path):
    """``verify --thread T --against heads`` on a thread whose history was deleted: exit 1, not 2."""
    make_warden_db(db_url)
    heads = tmp_path / "heads.json"
    res = invoke(["audit", "head"], db_url)
    assert res.exit_code == 0
    heads.write_text(res.stdout)
    eng = create_engine(parse_url(db_url))
    with eng.begin() as conn:
        conn.execute(text("DELETE FROM warden_events WHERE thread_id = :t"), {"t": THREAD})
        conn.execute(text("DELETE FROM warden_heads WHERE thread_id = :t"), {"t": THREAD})
    eng.dispose()
    res = invoke(["audit", "verify", "--thread", THREAD, "--against", str(heads), "--format", "json"], db_url)
    assert res.exit_code == 1, res.output
    assert {f["reason"] for f in json.loads(res.stdout)["findings"]} == {"truncated"}
    # Without the saved head there is no evidence the thread existed: that is a typo to the CLI.
    assert invoke(["audit", "verify", "--thread", THREAD], db_url).exit_code == 2


# ---------------------------------------------------------------------- the read-only open path
@requires_pg
@pytest.mark.postgres
def test_postgres_sessions_of_a_reading_saver_are_read_only():
    url = pg_schema_url("ro")
    make_warden_db(url)
    with open_existing(url) as saver:
        with saver.engine.connect() as conn:
            with pytest.raises(Exception, match="read-only transaction"):
                conn.exec_driver_sql("CREATE TABLE sneaky (a int)")
        assert saver.ledger.events(THREAD)  # reading works
    assert "sneaky" not in pg_tables(url)


def test_open_existing_raises_typed_errors(tmp_path):
    with pytest.raises(DatabaseNotFoundError):
        open_existing(f"sqlite:///{tmp_path / 'missing.db'}")
    (tmp_path / "empty.db").touch()
    with pytest.raises(NotAWardenDatabaseError):
        open_existing(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(DatabaseUnavailableError):
        open_existing("postgresql+psycopg://postgres@127.0.0.1:1/test", connect_timeout=1)
    assert sorted(os.listdir(tmp_path)) == ["empty.db"]


def test_a_history_failing_verification_mid_read_is_exit_1(tmp_path):
    """A read that stops at an IntegrityError is a finding (exit 1); a driver error is exit 2."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    make_warden_db(url)
    with pytest.raises(typer.Exit) as ex:
        with open_for_reading(url):
            raise IntegrityError("event 3 changed")
    assert ex.value.exit_code == 1
    with pytest.raises(typer.Exit) as ex:
        with open_for_reading(url):
            raise sqlite3.DatabaseError("database disk image is malformed")
    assert ex.value.exit_code == 2


def test_show_gives_the_verdict_on_a_tampered_history(tmp_path):
    """`audit show` reads the trail and its verdict from one read of the history: a tampered one is
    shown NOT verified, with the failure, exit 1 and no traceback."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    make_warden_db(url)
    res = invoke(["audit", "show", THREAD], url)
    assert res.exit_code == 0, res.output
    conn = sqlite3.connect(tmp_path / "w.db")
    conn.execute("UPDATE warden_events SET hash = :h WHERE seq = 1", {"h": "sha256:" + "0" * 64})
    conn.commit()
    conn.close()
    res = invoke(["audit", "show", THREAD], url)
    assert res.exit_code == 1, res.output
    assert "NOT verified" in res.stdout and "FAIL" in res.stdout and "Traceback" not in res.output


def test_reading_a_warden_database_leaves_the_directory_as_it_was(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    make_warden_db(url)
    before = listing(tmp_path)
    for command, args in READ_COMMANDS.items():
        res = invoke(args, url)
        assert res.exit_code == 0, (command, res.output)
    assert listing(tmp_path) == before


# ---------------------------------------------------------------------------- real processes
def warden_process(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("WARDEN_DB", None)
    return subprocess.run([sys.executable, "-m", "langgraph_warden.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def assert_one_line_exit_2(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == "" and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_subprocess_missing_empty_garbage_foreign_and_unknown_thread(tmp_path, monkeypatch):
    """Three real processes (a missing file, a foreign database, a clean verify) and, with the same
    relative URLs from the same directory, the other cases in this process (CliRunner: every case
    also has its own test above, for every command)."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "empty.db").touch()
    (work / "garbage.db").write_bytes(os.urandom(4096))
    _foreign_sqlite(work / "app.db")
    make_warden_db(f"sqlite:///{work / 'w.db'}")
    before = listing(work)

    line = assert_one_line_exit_2(warden_process("audit", "verify", "--db", "sqlite:///typo.db", cwd=work))
    assert "typo.db" in line and "does not exist" in line
    assert "not a langgraph-warden database" in assert_one_line_exit_2(
        warden_process("approvals", "list", "--db", "sqlite:///app.db", cwd=work))
    ok = warden_process("audit", "verify", "--db", "sqlite:///w.db", cwd=work)
    assert ok.returncode == 0 and "OK 1 thread(s)" in ok.stdout, ok.stdout + ok.stderr

    monkeypatch.chdir(work)
    for args, expected in (
        (["audit", "events", "t", "--db", "sqlite:///empty.db"], "empty (0 bytes)"),
        (["credentials", "list", "--db", "sqlite:///garbage.db"], "not a SQLite database"),
        (["audit", "verify", "--db", "sqlite:///w.db", "--thread", "nosuchthread"], "no such thread 'nosuchthread'"),
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert expected in one_error_line(res), (args, res.stderr)
    assert listing(work) == before  # same files, same bytes: nothing created, migrated or written


def test_subprocess_unreachable_postgres_is_one_line(tmp_path):
    proc = warden_process("audit", "verify", "--db", "postgresql+psycopg://postgres@127.0.0.1:1/test", cwd=tmp_path)
    line = assert_one_line_exit_2(proc)
    assert "cannot reach" in line and "127.0.0.1:1" in line and "server is running" in line


@requires_pg
@pytest.mark.postgres
def test_subprocess_postgres_non_warden_schema(tmp_path):
    url = pg_schema_url("ro")
    line = assert_one_line_exit_2(warden_process("audit", "head", "--db", url, cwd=tmp_path))
    assert "not a langgraph-warden database" in line
    assert pg_tables(url) == []
