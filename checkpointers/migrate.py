"""Create or upgrade the warden schema with the Alembic migrations shipped in the package.

Re-running is a no-op. A database stamped with a revision this package does
not know (written by a newer langgraph-warden) is refused with
:class:`~langgraph_warden.errors.SchemaVersionError` instead of being touched.

:func:`check_schema` is the read-only counterpart: it says whether a database
holds the warden schema this package can read, without creating or changing
anything (commands that only read use it instead of :func:`upgrade`).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect

from langgraph_warden.errors import NotAWardenDatabaseError, SchemaVersionError

from . import statements as sql
from .engine import WRITE
from .schema import metadata

__all__ = ["upgrade", "check_schema", "current_revision", "head_revision", "VERSION_TABLE"]

VERSION_TABLE = "warden_alembic_version"
_MIGRATIONS = Path(__file__).with_name("migrations")


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def head_revision() -> str:
    return ScriptDirectory.from_config(_config()).get_current_head() or ""


def current_revision(conn: Connection) -> str | None:
    ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return ctx.get_current_revision()


def _check_known(current: str | None, known: set[str], head: str) -> None:
    if current is not None and current not in known:
        raise SchemaVersionError(
            f"the database schema is at revision {current!r}, which this langgraph-warden does not know "
            f"(its newest is {head!r}): it was written by a newer version. Upgrade langgraph-warden; "
            "it will not modify a schema it does not understand."
        )


def check_schema(conn: Connection, *, where: str = "the database", require_head: bool = True) -> str:
    """Check, reading only, that ``conn`` holds a warden schema this package can use; return its revision.

    Raises :class:`NotAWardenDatabaseError` when there is no warden schema (no version table, or
    warden tables missing) and :class:`SchemaVersionError` when the revision is unknown (a newer
    langgraph-warden wrote it) or, with ``require_head``, older than this package's (a read-only
    command does not migrate). ``where`` names the database in the messages.
    """
    script = ScriptDirectory.from_config(_config())
    known = {rev.revision for rev in script.walk_revisions()}
    head = script.get_current_head() or ""
    tables = set(inspect(conn).get_table_names())
    if VERSION_TABLE not in tables:
        found = sorted(tables)
        held = (
            f"it has {len(found)} other table(s): {', '.join(found[:5])}{', ...' if len(found) > 5 else ''}"
            if found else "it has no tables"
        )
        raise NotAWardenDatabaseError(
            f"{where} is not a langgraph-warden database ({held}; no {VERSION_TABLE} table). "
            "Check --db: a command that only reads never creates or migrates a database; "
            "the application creates it on first use (WardenSaver.from_url or Warden.open)"
        )
    current = current_revision(conn)
    _check_known(current, known, head)
    if current is None:
        raise NotAWardenDatabaseError(
            f"{where} has an empty {VERSION_TABLE} table: its warden schema was never completed. "
            "Open it once with the application (WardenSaver.from_url migrates), or check --db"
        )
    missing = sorted(t for t in metadata.tables if t not in tables)
    if missing:
        raise NotAWardenDatabaseError(
            f"{where} is stamped with warden schema revision {current!r} but lacks the table(s) {', '.join(missing)}: "
            "it was damaged or partly deleted. Restore it from a backup"
        )
    if require_head and current != head:
        raise SchemaVersionError(
            f"{where} has warden schema revision {current!r}, older than this langgraph-warden's {head!r}; "
            "a command that only reads does not migrate. Upgrade the database by opening it once with the "
            "application (WardenSaver.from_url runs the migrations), or use the langgraph-warden version that wrote it"
        )
    return current


def upgrade(engine: Engine) -> str:
    """Bring the schema to the package's head revision; return that revision.

    Safe when many workers start at once: on PostgreSQL the upgrade runs under a
    transaction-scoped advisory lock and re-reads the revision once it holds it
    (SQLite serialises writers with ``BEGIN IMMEDIATE``).
    """
    script = ScriptDirectory.from_config(_config())
    known = {rev.revision for rev in script.walk_revisions()}
    head = script.get_current_head() or ""
    with engine.connect() as probe:
        current = current_revision(probe)
    _check_known(current, known, head)
    if current == head:
        return head
    with engine.execution_options(**WRITE).begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(sql.PG_MIGRATION_LOCK)
        current = current_revision(conn)
        _check_known(current, known, head)
        if current == head:
            return head
        cfg = _config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return head
