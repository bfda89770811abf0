"""The ledger's signing keys: registering the public key that signs, rotating it, and reading the
registered keys back for verification.

Why registered in the database: verification needs no secret, only the public keys, and a key
stays registered (retired) after rotation so the history it signed still verifies.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, select, update

from langgraph_warden.chain import PublicKeyInfo
from langgraph_warden.keys import SigningKey

from . import schema
from . import statements as sql
from .engine import write_lock
from .ledger_base import LedgerBase
from .rawsql import DirectTx, Raw

__all__ = ["LedgerKeys"]


class LedgerKeys(LedgerBase):
    """Register, rotate and look up the keys a ledger's heads are signed with."""

    def signing_key(self) -> SigningKey:
        return self._key_store.signing_key()

    def _ensure_key(self, conn: Connection | DirectTx, key: SigningKey) -> None:
        """Register ``key`` in the caller's transaction unless this process knows it is committed.

        Not remembered here: the transaction may still roll back (a request of a group commit
        rolls back to its savepoint), and with it the key's row. Keys are remembered once a
        transaction of their own has committed them (:meth:`register_key`).
        """
        if key.key_id in self._registered:
            return
        raw = Raw(conn)
        if raw.one(sql.KEY_EXISTS, (key.key_id,)) is None:
            raw.run(
                sql.KEY_INSERT,
                (key.key_id, "Ed25519", key.public_key, self.workload_id, key.store_kind,
                 raw.timestamp(datetime.now(UTC))),
            )

    def _remember(self, key_id: str) -> None:
        with self._lock:
            self._registered.add(key_id)

    def trusted_ids(self) -> frozenset[str] | None:
        """The keys whose signatures this ledger accepts: ``None`` (any registered key) unless
        ``trusted_key_ids`` pinned them, and then those plus the keys this process signs with."""
        if self.trusted_key_ids is None:
            return None
        with self._lock:
            own = set(self._registered)
        return self.trusted_key_ids | own

    def register_key(self) -> str:
        """Register the current public key (idempotent); returns its key id."""
        key = self.signing_key()
        with write_lock(self._engine), self._write_engine.begin() as conn:
            self._ensure_key(conn, key)
        self._remember(key.key_id)  # committed
        return key.key_id

    def _register_signing_key(self) -> None:
        """Before an append in a transaction of its own: make sure the current key is registered
        and known to be (once per key and process), so the append need not register it."""
        if self.signing_key().key_id not in self._registered:
            self.register_key()

    def rotate_key(self) -> str:
        """Rotate the signing key. The old public key stays registered (retired) for verification."""
        old = self.signing_key()
        new = self._key_store.rotate()
        with write_lock(self._engine), self._write_engine.begin() as conn:
            self._ensure_key(conn, new)
            conn.execute(
                update(schema.keys)
                .where(schema.keys.c.key_id == old.key_id, schema.keys.c.retired_at.is_(None))
                .values(retired_at=datetime.now(UTC))
            )
        self._remember(new.key_id)  # committed
        return new.key_id

    def public_keys(self, conn: Connection) -> dict[str, PublicKeyInfo]:
        rows = conn.execute(select(schema.keys)).all()
        return {
            r.key_id: PublicKeyInfo(
                key_id=r.key_id,
                public_key=bytes(r.public_key),
                workload_id=r.workload_id,
                store_kind=r.store_kind,
                created_at=r.created_at,
                retired_at=r.retired_at,
            )
            for r in rows
        }

    def _key_info(self, conn: Connection | DirectTx, key_id: str) -> dict[str, PublicKeyInfo]:
        # Keys are immutable once registered, so a per-process cache is safe.
        info = self._keys_cache.get(key_id)
        if info is None:
            if isinstance(conn, DirectTx):
                # A key that signed a visible event was committed before it: a fresh read sees it.
                with self._engine.connect() as fresh_conn:
                    fresh = self.public_keys(fresh_conn)
            else:
                fresh = self.public_keys(conn)
            with self._lock:
                self._keys_cache.update(fresh)
            info = fresh.get(key_id)
        return {key_id: info} if info is not None else {}
