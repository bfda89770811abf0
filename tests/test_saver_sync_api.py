"""The saver's sync API, called directly (the conformance suite only exercises the async one).

Every test ends by verifying the signed ledger: each mutation must leave the
rows and the event history consistent.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from langgraph.checkpoint.base import ERROR, INTERRUPT, RESUME, WRITES_IDX_MAP, Checkpoint, empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from sqlalchemy import create_engine, text

from langgraph_warden.checkpointers import WardenSaver
from langgraph_warden.errors import ConfigurationError, SchemaVersionError
from langgraph_warden.keys import EphemeralKeyStore

_SEQ = iter(range(1, 10**9))


def _open(url: str, **kw: Any) -> WardenSaver:
    return WardenSaver.from_url(url, key_store=EphemeralKeyStore(), **kw)


def _checkpoint(**values: Any) -> Checkpoint:
    cp = empty_checkpoint()
    cp["id"] = str(uuid6(clock_seq=next(_SEQ)))
    cp["channel_values"] = dict(values)
    cp["channel_versions"] = {k: f"{1:032}.0" for k in values}
    return cp


def _conf(thread_id: str, ns: str = "", checkpoint_id: str | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ns}
    if checkpoint_id:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def _chain(saver: WardenSaver, thread_id: str, n: int, ns: str = "", **md: Any) -> list[dict[str, Any]]:
    """Put ``n`` checkpoints in a parent chain; return their configs (oldest first)."""
    configs: list[dict[str, Any]] = []
    parent = _conf(thread_id, ns)
    for i in range(n):
        cp = _checkpoint(step=i, thread=thread_id)
        meta = {"source": "input" if i == 0 else "loop", "step": i - 1, "parents": {}, **md}
        parent = saver.put(parent, cp, meta, {})
        configs.append(parent)
    return configs


def _cid(config: dict[str, Any]) -> str:
    return config["configurable"]["checkpoint_id"]


def _verified(saver: WardenSaver) -> None:
    report = saver.ledger.verify()
    assert report.ok, report.to_dict()


def _sql(url: str, query: str, **params: Any) -> list[Any]:
    eng = create_engine(url)
    try:
        with eng.begin() as conn:
            result = conn.execute(text(query), params)
            return result.all() if result.returns_rows else []
    finally:
        eng.dispose()


@pytest.fixture
def saver(db_url):
    with _open(db_url) as s:
        yield s


# ------------------------------------------------------------------------ put / get / list


def test_put_and_get_tuple(saver):
    tid = f"t-{uuid.uuid4().hex[:8]}"
    assert saver.get_tuple(_conf(tid)) is None
    first = _checkpoint(a=1)
    cfg1 = saver.put({**_conf(tid), "metadata": {"owner": "alice"}}, first, {"source": "input", "step": -1}, {})
    assert cfg1 == _conf(tid, "", first["id"])
    second = _checkpoint(a=2, b=[1, 2, {"x": b"\x00bytes"}])
    cfg2 = saver.put(cfg1, second, {"source": "loop", "step": 0}, {})

    latest = saver.get_tuple(_conf(tid))
    assert latest.config == cfg2
    assert latest.checkpoint["channel_values"] == {"a": 2, "b": [1, 2, {"x": b"\x00bytes"}]}
    assert latest.checkpoint["id"] == second["id"]
    assert latest.parent_config == cfg1
    assert latest.metadata["source"] == "loop" and latest.metadata["step"] == 0
    assert latest.pending_writes == []

    by_id = saver.get_tuple(cfg1)
    assert by_id.checkpoint["channel_values"] == {"a": 1}
    assert by_id.parent_config is None
    assert by_id.metadata["owner"] == "alice"  # config metadata is merged, as langgraph's savers do
    assert saver.get_tuple(_conf(tid, "", str(uuid6(clock_seq=0)))) is None
    assert saver.get_tuple(_conf(tid, "other-ns")) is None

    # Re-putting the same checkpoint is harmless.
    assert saver.put(cfg1, second, {"source": "loop", "step": 0}, {}) == cfg2
    assert len(list(saver.list(_conf(tid)))) == 2
    _verified(saver)


def test_list_filter_before_limit(saver):
    a, b = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    ca = _chain(saver, a, 5, user="ann")
    cb = _chain(saver, b, 2, user="bob")
    ca_sub = _chain(saver, a, 2, ns="child:1")

    newest_first = [_cid(c) for c in reversed(ca)]
    listed = list(saver.list(_conf(a, "")))
    assert [_cid(t.config) for t in listed] == newest_first
    assert [t.metadata["step"] for t in listed] == [3, 2, 1, 0, -1]

    # without checkpoint_ns: every namespace of the thread
    assert len(list(saver.list({"configurable": {"thread_id": a}}))) == 7
    assert {_cid(t.config) for t in saver.list(_conf(a, "child:1"))} == {_cid(c) for c in ca_sub}
    # config None: every thread
    everything = list(saver.list(None))
    assert len(everything) == 9
    ids = [_cid(t.config) for t in everything]
    assert ids == sorted(ids, reverse=True)

    assert [_cid(t.config) for t in saver.list(_conf(a, ""), limit=2)] == newest_first[:2]
    assert [_cid(t.config) for t in saver.list(_conf(a, ""), before=ca[2])] == newest_first[3:]
    assert [_cid(t.config) for t in saver.list(_conf(a, ""), before=ca[2], limit=1)] == newest_first[3:4]
    assert list(saver.list(_conf(a, ""), before=ca[0])) == []

    assert [t.metadata["step"] for t in saver.list(_conf(a, ""), filter={"source": "loop"})] == [3, 2, 1, 0]
    assert [t.metadata["step"] for t in saver.list(_conf(a, ""), filter={"source": "loop"}, limit=2)] == [3, 2]
    assert [t.metadata["step"] for t in saver.list(_conf(a, ""), filter={"source": "loop", "step": 1})] == [1]
    assert list(saver.list(_conf(a, ""), filter={"source": "nope"})) == []
    assert {t.config["configurable"]["thread_id"] for t in saver.list(None, filter={"user": "bob"})} == {b}
    assert [_cid(t.config) for t in saver.list(None, filter={"user": "bob"})] == [_cid(c) for c in reversed(cb)]
    assert list(saver.list(_conf("no-such-thread"))) == []
    _verified(saver)


# --------------------------------------------------------------------------- put_writes


def test_put_writes_ordered_by_task_path_task_id_idx(saver, db_url):
    tid = f"w-{uuid.uuid4().hex[:8]}"
    cfg = saver.put(_conf(tid), _checkpoint(x=1), {"source": "loop", "step": 0}, {})
    # Saved out of order on purpose: the task_path decides first, then task_id, then idx.
    saver.put_writes(cfg, [("c", "t1-0"), ("d", "t1-1")], task_id="t1", task_path="p2")
    saver.put_writes(cfg, [("c", "t9-0"), ("d", "t9-1"), ("e", "t9-2")], task_id="t9", task_path="p1")
    saver.put_writes(cfg, [("c", "t5-0")], task_id="t5", task_path="p1")
    pending = saver.get_tuple(cfg).pending_writes
    assert pending == [
        ("t5", "c", "t5-0"),
        ("t9", "c", "t9-0"),
        ("t9", "d", "t9-1"),
        ("t9", "e", "t9-2"),
        ("t1", "c", "t1-0"),
        ("t1", "d", "t1-1"),
    ]
    # list() returns the same pending writes in the same order.
    assert next(iter(saver.list(cfg))).pending_writes == pending
    _verified(saver)


def test_put_writes_is_idempotent(saver, db_url):
    tid = f"w-{uuid.uuid4().hex[:8]}"
    cfg = saver.put(_conf(tid), _checkpoint(x=1), {"source": "loop", "step": 0}, {})
    saver.put_writes(cfg, [("c", 1), ("d", 2)], task_id="t1", task_path="p")
    events_before = len(saver.ledger.events(tid))
    saver.put_writes(cfg, [("c", 1), ("d", 2)], task_id="t1", task_path="p")  # exact retry
    assert len(saver.ledger.events(tid)) == events_before, "an exact retry must not append history"
    # A regular write that already exists is never overwritten (first write wins), new idx appended.
    saver.put_writes(cfg, [("c", 100), ("d", 200), ("e", 3)], task_id="t1", task_path="p")
    assert saver.get_tuple(cfg).pending_writes == [("t1", "c", 1), ("t1", "d", 2), ("t1", "e", 3)]
    rows = _sql(db_url, "SELECT idx FROM warden_writes WHERE thread_id = :t ORDER BY idx", t=tid)
    assert [r[0] for r in rows] == [0, 1, 2]
    _verified(saver)


def test_special_writes_use_negative_idx_and_upsert(saver, db_url):
    tid = f"w-{uuid.uuid4().hex[:8]}"
    cfg = saver.put(_conf(tid), _checkpoint(x=1), {"source": "loop", "step": 0}, {})
    saver.put_writes(cfg, [(ERROR, "boom-1")], task_id="t-err")
    saver.put_writes(cfg, [(INTERRUPT, ["first"])], task_id="t-int")
    saver.put_writes(cfg, [(ERROR, "boom-2")], task_id="t-err")  # replaces
    saver.put_writes(cfg, [(INTERRUPT, ["second"])], task_id="t-int")  # replaces
    saver.put_writes(cfg, [(RESUME, "r")], task_id="t-int")
    pending = sorted(saver.get_tuple(cfg).pending_writes)
    assert pending == sorted([("t-err", ERROR, "boom-2"), ("t-int", INTERRUPT, ["second"]), ("t-int", RESUME, "r")])
    rows = _sql(db_url, "SELECT task_id, idx, channel FROM warden_writes WHERE thread_id = :t ORDER BY task_id, idx", t=tid)
    assert [tuple(r) for r in rows] == [
        ("t-err", WRITES_IDX_MAP[ERROR], ERROR),
        ("t-int", WRITES_IDX_MAP[RESUME], RESUME),
        ("t-int", WRITES_IDX_MAP[INTERRUPT], INTERRUPT),
    ]
    assert all(r[1] < 0 for r in rows)
    # get_tuple verified the upserted rows against the chain; so does the full verify.
    _verified(saver)


def test_writes_may_arrive_before_their_checkpoint(saver):
    tid = f"w-{uuid.uuid4().hex[:8]}"
    cp = _checkpoint(x=1)
    early = _conf(tid, "", cp["id"])
    saver.put_writes(early, [("c", "early")], task_id="t1")
    cfg = saver.put(_conf(tid), cp, {"source": "loop", "step": 0}, {})
    assert saver.get_tuple(cfg).pending_writes == [("t1", "c", "early")]
    _verified(saver)


def test_put_writes_needs_a_checkpoint_id(saver):
    with pytest.raises(ConfigurationError, match="checkpoint_id"):
        saver.put_writes(_conf("t"), [("c", 1)], task_id="t1")


# ------------------------------------------------------------- delete / copy / prune


def test_delete_thread(saver, db_url):
    a, b = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    ca = _chain(saver, a, 3)
    saver.put_writes(ca[-1], [("c", 1)], task_id="t1")
    cb = _chain(saver, b, 2)
    saver.put_writes(cb[-1], [("c", 2)], task_id="t1")
    saver.delete_thread(a)
    assert saver.get_tuple(_conf(a)) is None
    assert list(saver.list({"configurable": {"thread_id": a}})) == []
    assert _sql(db_url, "SELECT count(*) FROM warden_writes WHERE thread_id = :t", t=a)[0][0] == 0
    assert saver.get_tuple(_conf(b)).pending_writes == [("t1", "c", 2)]
    assert len(list(saver.list(_conf(b)))) == 2
    saver.delete_thread("never-existed")  # no-op
    _verified(saver)


def test_copy_thread(saver):
    src, dst = f"s-{uuid.uuid4().hex[:8]}", f"d-{uuid.uuid4().hex[:8]}"
    cs = _chain(saver, src, 3)
    _chain(saver, src, 1, ns="child:1")
    saver.put_writes(cs[-1], [("c", "w0"), ("d", "w1")], task_id="t1", task_path="p")
    _chain(saver, dst, 2)  # the target's old content is replaced
    saver.copy_thread(src, dst)

    def view(thread_id: str) -> list[tuple[Any, ...]]:
        return [
            (
                t.config["configurable"]["checkpoint_ns"],
                _cid(t.config),
                t.parent_config and _cid(t.parent_config),
                t.checkpoint["channel_values"]["step"],
                t.pending_writes,
            )
            for t in saver.list({"configurable": {"thread_id": thread_id}})
        ]

    assert view(dst) == view(src)
    assert len(view(dst)) == 4
    copied = saver.get_tuple(_conf(dst))  # verified against the target's own chain
    assert copied.config["configurable"]["thread_id"] == dst
    assert copied.pending_writes == [("t1", "c", "w0"), ("t1", "d", "w1")]
    # The source is untouched and both keep evolving independently.
    saver.put(_conf(dst, "", _cid(copied.config)), _checkpoint(step=99), {"source": "loop", "step": 3}, {})
    assert len(list(saver.list(_conf(src)))) == 3
    assert len(list(saver.list(_conf(dst)))) == 4
    _verified(saver)


def test_delete_for_runs(saver, db_url):
    a, b = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    r1, r2 = str(uuid.uuid4()), str(uuid.uuid4())
    ka = _chain(saver, a, 2, run_id=r1)
    parent = ka[-1]
    kept = saver.put(parent, _checkpoint(step=5), {"source": "loop", "step": 5, "run_id": r2}, {})
    kb = _chain(saver, b, 1, run_id=r1)
    saver.put_writes(ka[-1], [("c", 1)], task_id="t1")
    saver.put_writes(kb[-1], [("c", 1)], task_id="t1")
    saver.delete_for_runs([r1])
    assert [_cid(t.config) for t in saver.list(_conf(a))] == [_cid(kept)]
    assert list(saver.list(_conf(b))) == []
    assert _sql(db_url, "SELECT count(*) FROM warden_writes WHERE thread_id IN (:a, :b)", a=a, b=b)[0][0] == 0
    saver.delete_for_runs([])  # no-op
    saver.delete_for_runs(["no-such-run"])  # no-op
    assert saver.get_tuple(_conf(a)).config == kept
    _verified(saver)


def test_prune_keep_latest_and_delete(saver):
    a, b = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    ca = _chain(saver, a, 4)
    csub = _chain(saver, a, 3, ns="child:1")
    saver.put_writes(ca[-1], [("c", "latest")], task_id="t1")
    saver.put_writes(ca[0], [("c", "old")], task_id="t1")
    _chain(saver, b, 3)

    saver.prune([a], strategy="keep_latest")
    assert [_cid(t.config) for t in saver.list(_conf(a))] == [_cid(ca[-1])]
    assert [_cid(t.config) for t in saver.list(_conf(a, "child:1"))] == [_cid(csub[-1])]
    assert saver.get_tuple(_conf(a)).pending_writes == [("t1", "c", "latest")]
    assert len(list(saver.list(_conf(b)))) == 3  # other threads untouched

    saver.prune([a, b], strategy="delete")
    assert list(saver.list({"configurable": {"thread_id": a}})) == []
    assert list(saver.list({"configurable": {"thread_id": b}})) == []
    with pytest.raises(ConfigurationError, match="strategy"):
        saver.prune([a], strategy="shred")
    _verified(saver)


def test_prune_delete_with_writes_ahead_of_their_checkpoint_keeps_the_ledger_valid(saver):
    a, b = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    ca = _chain(saver, a, 2)
    # Writes may arrive before their checkpoint (and stay orphaned if the process dies in between).
    saver.put_writes(_conf(a, "", str(uuid6(clock_seq=next(_SEQ)))), [("c", 1)], task_id="t1")
    saver.put_writes(_conf(b, "", str(uuid6(clock_seq=next(_SEQ)))), [("c", 1)], task_id="t1")
    assert ca
    saver.prune([a, b], strategy="delete")
    assert list(saver.list({"configurable": {"thread_id": a}})) == []
    _verified(saver)


def test_get_next_version_is_monotonic(saver):
    versions: list[str] = []
    current = None
    for _ in range(200):
        current = saver.get_next_version(current)
        versions.append(current)
    assert versions == sorted(versions)
    assert len(set(versions)) == len(versions)
    assert [int(v.split(".")[0]) for v in versions] == list(range(1, 201))
    assert saver.get_next_version(7) > saver.get_next_version(6)
    assert saver.get_next_version("00000000000000000000000000000009.123") > "00000000000000000000000000000009.999"


# -------------------------------------------------------------------- schema / migrations


def test_setup_rerun_is_a_noop(db_url):
    with _open(db_url) as saver:
        cfgs = _chain(saver, "keep", 2)
        rev = _sql(db_url, "SELECT version_num FROM warden_alembic_version")
        saver.setup()
        saver.setup()
        assert _sql(db_url, "SELECT version_num FROM warden_alembic_version") == rev
        assert len(rev) == 1
    with _open(db_url) as saver:  # a second process/saver on the same database
        saver.setup()
        assert saver.get_tuple(_conf("keep")).config == cfgs[-1]
        assert _sql(db_url, "SELECT version_num FROM warden_alembic_version") == rev
        _verified(saver)


def test_newer_schema_is_refused(db_url):
    with _open(db_url) as saver:
        _chain(saver, "t", 1)
    _sql(db_url, "UPDATE warden_alembic_version SET version_num = '9999_from_the_future'")
    with pytest.raises(SchemaVersionError, match="9999_from_the_future"):
        _open(db_url)
    # Refused without touching the schema.
    assert _sql(db_url, "SELECT version_num FROM warden_alembic_version")[0][0] == "9999_from_the_future"
    assert _sql(db_url, "SELECT count(*) FROM warden_checkpoints")[0][0] == 1


def test_a_database_at_the_first_revision_is_upgraded_in_place(db_url):
    """0002 drops two indexes no query uses (a page write each per commit); data written before stays."""
    from alembic import command
    from sqlalchemy import inspect

    from langgraph_warden.checkpointers import migrate

    def indexes() -> set[str]:
        eng = create_engine(db_url)
        try:
            insp = inspect(eng)
            return {i["name"] for t in ("warden_events", "warden_checkpoints") for i in insp.get_indexes(t)}
        finally:
            eng.dispose()

    eng = create_engine(db_url)
    try:
        with eng.begin() as conn:
            cfg = migrate._config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001_initial")
    finally:
        eng.dispose()
    assert {"ix_warden_events_kind", "ix_warden_checkpoints_run", "ix_warden_events_subject"} <= indexes()
    with _open(db_url) as saver:
        cfgs = _chain(saver, "old", 3)
        assert _sql(db_url, "SELECT version_num FROM warden_alembic_version")[0][0] == migrate.head_revision()
        assert not {"ix_warden_events_kind", "ix_warden_checkpoints_run"} & indexes()
        assert "ix_warden_events_subject" in indexes()
        saver.delete_for_runs(["no-such-run"])
        assert saver.get_tuple(_conf("old")).config == cfgs[-1]
        _verified(saver)


def test_the_migrations_build_exactly_the_schema_the_code_describes(db_url):
    """``schema.metadata`` (what the runtime code queries) and the Alembic migrations (what
    ``setup()`` creates) are written separately: any drift between them, a column, type, index
    or table in one and not the other, is a schema the code does not expect."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from langgraph_warden.checkpointers import migrate, schema

    with _open(db_url):
        pass  # setup() ran the migrations
    eng = create_engine(db_url)
    try:
        with eng.connect() as conn:
            assert set(schema.metadata.tables) <= set(conn.dialect.get_table_names(conn))
            ctx = MigrationContext.configure(
                conn, opts={"version_table": migrate.VERSION_TABLE, "compare_type": True}
            )
            assert compare_metadata(ctx, schema.metadata) == []
    finally:
        eng.dispose()
