"""Signing keys: keyring storage without silent fallback, ephemeral marking, rotation."""

from __future__ import annotations

import pytest

from langgraph_warden.checkpointers import WardenSaver
from langgraph_warden.errors import KeyStoreError
from langgraph_warden.events import EventDraft
from langgraph_warden.keys import EphemeralKeyStore, KeyringKeyStore, verify_signature







def test_keyring_store_persists_key(memory_keyring):
    a = KeyringKeyStore(service="svc", username="u").signing_key()
    b = KeyringKeyStore(service="svc", username="u").signing_key()
    assert a.key_id == b.key_id and a.store_kind == "keyring"
    assert ("svc", "u") in memory_keyring.items
    assert verify_signature(a.public_key, b.sign(b"x"), b"x")
    assert "svc" not in repr(a) and memory_keyring.items[("svc", "u")] not in repr(a)


def test_no_backend_is_an_error_with_instructions(no_keyring):
    with pytest.raises(KeyStoreError) as info:
        KeyringKeyStore().signing_key()
    msg = str(info.value)
    assert "no usable backend" in msg and "WARDEN_KEY_DIR=DIR" in msg and "key_store=EphemeralKeyStore()" in msg
    assert "ephemeral_keys=True" in msg and "--ephemeral-keys" in msg


def test_corrupt_keyring_entry_is_reported(memory_keyring):
    memory_keyring.store[("svc", "u")] = "not base64 !!"
    with pytest.raises(KeyStoreError, match="not a base64 Ed25519 seed"):
        KeyringKeyStore(service="svc", username="u").signing_key()


def test_saver_records_key_store_kind_and_rotation_keeps_old_signatures(tmp_path, memory_keyring):
    url = f"sqlite:///{tmp_path / 'k.db'}"
    with WardenSaver.from_url(url, key_store=KeyringKeyStore(service="svc", username="u")) as saver:
        saver.ledger.append("t", [EventDraft(kind="note", payload={"i": 1})])
        old = saver.ledger.signing_key().key_id
        new = saver.ledger.rotate_key()
        assert new != old
        saver.ledger.append("t", [EventDraft(kind="note", payload={"i": 2})])
        report = saver.ledger.verify(signatures="all")
        assert report.ok, report.findings
        assert report.threads["t"].signatures_checked == 2
        events = saver.ledger.events("t")
        assert [e.payload["i"] for e in events] == [1, 2]
        with saver.engine.connect() as conn:
            keys = saver.ledger.public_keys(conn)
        assert keys[old].retired_at is not None and keys[new].retired_at is None
        assert {k.store_kind for k in keys.values()} == {"keyring"}
        head = saver.ledger.head("t")
        assert head.key_id == new and head.key_store == "keyring"


def test_ephemeral_signatures_are_marked(tmp_path):
    with WardenSaver.from_url(f"sqlite:///{tmp_path / 'e.db'}", key_store=EphemeralKeyStore()) as saver:
        saver.ledger.append("t", [EventDraft(kind="note")])
        assert saver.ledger.head("t").key_store == "ephemeral"


def test_default_saver_without_keyring_fails_on_first_write_with_instructions(tmp_path, no_keyring):
    with pytest.raises(KeyStoreError, match="EphemeralKeyStore"):
        WardenSaver.from_url(f"sqlite:///{tmp_path / 'd.db'}")
