"""Bad input gets a clear, typed error naming what is wrong."""

from __future__ import annotations

import time
import uuid

import keyring
import pytest
from keyring.backends import fail
from langgraph.types import Command
from sqlalchemy import create_engine, text

from langgraph_warden.checkpointers import WardenSaver
from langgraph_warden.errors import (
    ConfigurationError,
    CorruptRowError,
    DatabaseUnavailableError,
    IntegrityError,
    KeyStoreError,
    WardenError,
)
from langgraph_warden.keys import EphemeralKeyStore

from .support.graphs_chain import build_approval, build_chain

UNREACHABLE_PG = "postgresql+psycopg://postgres@127.0.0.1:1/test"  # port 1 on loopback: refused at once


def _open(url: str, **kw) -> WardenSaver:
    return WardenSaver.from_url(url, key_store=EphemeralKeyStore(), **kw)


def _exec(url: str, sql: str, **params) -> None:
    eng = create_engine(url)
    try:
        with eng.begin() as conn:
            conn.execute(text(sql), params)
    finally:
        eng.dispose()


# ------------------------------------------------------------------------------ URLs


@pytest.mark.parametrize("url", ["", "   ", "not a url", "://missing-scheme", "postgresql+psycopg//u@h/db"])
def test_malformed_url(url):
    with pytest.raises(ConfigurationError) as info:
        _open(url)
    msg = str(info.value)
    assert "sqlite:///" in msg or "postgresql" in msg, msg  # shows the expected form


def test_malformed_port_is_a_configuration_error():
    with pytest.raises(ConfigurationError, match="malformed"):
        _open("postgresql+psycopg://u@h:notaport/db")


@pytest.mark.parametrize(
    ("url", "named"),
    [("mysql://root@localhost/db", "mysql"), ("oracle+oracledb://u@h/db", "oracle"), ("mssql+pyodbc://u@h/db", "mssql")],
)
def test_unsupported_scheme(url, named):
    with pytest.raises(ConfigurationError, match=named) as info:
        _open(url)
    assert "sqlite" in str(info.value) and "postgresql" in str(info.value)


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "sqlite+aiosqlite://"])
def test_in_memory_sqlite_is_refused(url):
    with pytest.raises(ConfigurationError, match="in-memory"):
        _open(url)


def test_postgres_url_without_host():
    with pytest.raises(ConfigurationError, match="no host"):
        _open("postgresql+psycopg:///test")


def test_engine_argument_must_be_an_engine():
    with pytest.raises(ConfigurationError, match="Engine"):
        WardenSaver("sqlite:///x.db", key_store=EphemeralKeyStore())  # type: ignore[arg-type]


# ------------------------------------------------------------------ unreachable databases


@pytest.mark.parametrize("setup", [True, False])
def test_unreachable_postgres_fails_fast_naming_the_host(setup):
    t0 = time.monotonic()
    with pytest.raises(DatabaseUnavailableError) as info:
        WardenSaver.from_url(UNREACHABLE_PG, key_store=EphemeralKeyStore(), setup=setup)
    elapsed = time.monotonic() - t0
    assert elapsed < 10, f"took {elapsed:.1f}s"
    msg = str(info.value)
    assert "127.0.0.1" in msg and ":1" in msg, msg
    assert isinstance(info.value, ConnectionError) and isinstance(info.value, WardenError)


def test_unreachable_postgres_with_blackhole_host_respects_connect_timeout():
    """A host that drops packets: the connect timeout bounds the wait (TEST-NET-1, never routed)."""
    t0 = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match="192.0.2.1"):
        WardenSaver.from_url(
            "postgresql+psycopg://postgres@192.0.2.1:5432/test", key_store=EphemeralKeyStore(), connect_timeout=1
        )
    assert time.monotonic() - t0 < 10


def test_unopenable_sqlite_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'w.db'}"
    with pytest.raises(DatabaseUnavailableError, match="SQLite file"):
        _open(url)


# ---------------------------------------------------------------------------- thread_id


def test_config_without_thread_id(db_url):
    with _open(db_url) as saver:
        graph = build_chain(nodes=2).compile(checkpointer=saver)
        # configurable present but no thread_id: reaches the saver, which names the missing key.
        with pytest.raises(ConfigurationError, match="thread_id") as info:
            graph.invoke({"log": []}, {"configurable": {"user_id": "alice"}})
        assert "graph.invoke" in str(info.value)
        with pytest.raises(ConfigurationError, match="thread_id"):
            graph.invoke({"log": []}, {"configurable": {"thread_id": ""}})
        # No configurable at all: LangGraph itself refuses first (a ValueError, as is ConfigurationError).
        with pytest.raises(ValueError, match="thread_id"):
            graph.invoke({"log": []})
        # The sync API directly.
        with pytest.raises(ConfigurationError, match="thread_id"):
            saver.get_tuple({"configurable": {}})
        with pytest.raises(ConfigurationError, match="thread_id"):
            saver.put({"configurable": {"checkpoint_ns": ""}}, {"id": "x"}, {}, {})  # type: ignore[typeddict-item]
        with pytest.raises(ConfigurationError, match="config is missing"):
            saver.get_tuple(None)  # type: ignore[arg-type]
        assert list(saver.list(None)) == []  # listing everything needs no thread


async def test_config_without_thread_id_async(db_url):
    saver = _open(db_url)
    try:
        graph = build_chain(nodes=2).compile(checkpointer=saver)
        with pytest.raises(ConfigurationError, match="thread_id"):
            await graph.ainvoke({"log": []}, {"configurable": {"user_id": "alice"}})
        with pytest.raises(ConfigurationError, match="thread_id"):
            await saver.aget_tuple({"configurable": {}})
    finally:
        await saver.aclose()


# ------------------------------------------------------------------------- corrupted rows


def _run_to_interrupt(url: str, tmp_path) -> dict:
    cfg = {"configurable": {"thread_id": f"c-{uuid.uuid4().hex[:8]}"}}
    with _open(url) as saver:
        build_approval(tmp_path / "side.txt").compile(checkpointer=saver).invoke({"log": [], "request": "r"}, cfg)
    return cfg


def test_corrupted_checkpoint_row(db_url, tmp_path):
    cfg = _run_to_interrupt(db_url, tmp_path)
    tid = cfg["configurable"]["thread_id"]
    _exec(
        db_url,
        "UPDATE warden_checkpoints SET checkpoint = :g WHERE thread_id = :t",
        g=b"\xc1\xc1 this is not msgpack \xff\x00",
        t=tid,
    )
    with _open(db_url) as saver:
        # Default: the signed chain catches the changed row before anything is decoded or run.
        with pytest.raises(IntegrityError, match="checkpoint_changed") as info:
            saver.get_tuple(cfg)
        assert info.value.thread_id == tid and info.value.reason == "checkpoint_changed"
        graph = build_approval(tmp_path / "side.txt").compile(checkpointer=saver)
        with pytest.raises(IntegrityError):
            graph.invoke(Command(resume="yes"), cfg)
        assert not saver.ledger.verify().ok

        # Verification off (display tools): the decoder reports a corrupt row, naming the table.
        saver.verify_reads = False
        with pytest.raises(CorruptRowError) as info:
            saver.get_tuple(cfg)
        msg = str(info.value)
        assert "warden_checkpoints" in msg and tid in msg, msg
        with pytest.raises(CorruptRowError, match="warden_checkpoints"):
            list(saver.list(cfg, verify=False))
        with pytest.raises(CorruptRowError, match="warden_checkpoints"):
            graph.invoke(Command(resume="yes"), cfg)


def test_corrupted_write_row(db_url, tmp_path):
    cfg = _run_to_interrupt(db_url, tmp_path)
    tid = cfg["configurable"]["thread_id"]
    _exec(db_url, "UPDATE warden_writes SET blob = :g WHERE thread_id = :t", g=b"\xc1\xc1garbage", t=tid)
    with _open(db_url) as saver:
        with pytest.raises(IntegrityError, match="writes_changed"):
            saver.get_tuple(cfg)
        saver.verify_reads = False
        with pytest.raises(CorruptRowError, match="warden_writes"):
            saver.get_tuple(cfg)


def test_corrupted_metadata_names_the_table(db_url, tmp_path):
    cfg = _run_to_interrupt(db_url, tmp_path)
    _exec(
        db_url,
        "UPDATE warden_checkpoints SET metadata = :g WHERE thread_id = :t",
        g=b"\xc1\xc1garbage",
        t=cfg["configurable"]["thread_id"],
    )
    with _open(db_url) as saver:
        saver.verify_reads = False
        with pytest.raises(CorruptRowError, match="warden_checkpoints"):
            saver.get_tuple(cfg)


def test_garbage_that_decodes_to_a_scalar_is_still_a_corrupt_row(db_url, tmp_path):
    cfg = _run_to_interrupt(db_url, tmp_path)
    _exec(
        db_url,
        "UPDATE warden_checkpoints SET checkpoint = :g WHERE thread_id = :t",
        g=b"garbage!!",
        t=cfg["configurable"]["thread_id"],
    )
    with _open(db_url) as saver:
        saver.verify_reads = False
        with pytest.raises(CorruptRowError, match="warden_checkpoints"):
            saver.get_tuple(cfg)


# ----------------------------------------------------------------------------- key store


@pytest.fixture
def no_keyring_backend():
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        yield
    finally:
        keyring.set_keyring(previous)


def test_default_key_store_without_keyring_backend(db_url, no_keyring_backend):
    with pytest.raises(KeyStoreError) as info:
        WardenSaver.from_url(db_url)  # no key_store: the keyring is the default, no silent downgrade
    msg = str(info.value)
    assert "keyring" in msg
    assert "WARDEN_KEY_DIR" in msg  # the headless fix (server, CI)
    assert "ephemeral_keys=True" in msg and "--ephemeral-keys" in msg  # the dev fix, for Python and the CLI
    assert "EphemeralKeyStore" in msg  # and the saver-alone form


def test_keyring_head_store_without_keyring_backend_names_the_file_store(no_keyring_backend):
    from langgraph_warden.anchors import KeyringHeadStore

    with pytest.raises(KeyStoreError) as info:
        KeyringHeadStore().load("t-1")
    msg = str(info.value)
    assert "no usable backend" in msg and "FileHeadStore(DIR)" in msg
    assert "signing key" not in msg  # the head store's fix, not the key store's
