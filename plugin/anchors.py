"""Head stores: signed chain heads kept OUTSIDE the database, so a cut-back history is caught.

Why: a writer to the database without the signing key cannot forge events, but it can delete
the newest ones. What remains is still a valid chain ending at an earlier signed head — for
example before an approval was used, which would let it be used again. Only a trust anchor the
database writer cannot reach tells the two apart: the newest head this workload signed.

A :class:`HeadStore` holds, per thread, the highest :class:`~langgraph_warden.events.SignedHead`
saved so far (saving a lower one is a no-op). The ledger updates it (see
``checkpointers/anchoring.py``) and checks it when it first verifies a thread. Two stores ship:

* :class:`FileHeadStore` — one small JSON file per thread in a directory (on another volume,
  or at least with permissions the database's writers lack);
* :class:`KeyringHeadStore` — one keyring entry per thread (the OS secret store the signing key
  already lives in).

Any object with ``load`` and ``save`` works (a witness service, an object store with retention
locks). Heads are public data: a store must protect them from being changed, not from being read.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from .errors import ConfigurationError
from .events import SignedHead

__all__ = ["HeadStore", "FileHeadStore", "KeyringHeadStore"]


@runtime_checkable
class HeadStore(Protocol):
    """Where signed heads are kept outside the database."""

    def load(self, thread_id: str) -> SignedHead | None:
        """The highest head saved for ``thread_id``, or ``None``."""
        ...

    def save(self, heads: Sequence[SignedHead]) -> None:
        """Keep each head unless a head with a higher (or equal) seq is stored for its thread."""
        ...


def _decode(text: str | bytes | None, where: str) -> SignedHead | None:
    if not text:
        return None
    try:
        return SignedHead.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(
            f"the saved head in {where} is not a signed head ({type(exc).__name__}); restore it from a backup "
            "or remove it to stop checking this thread against it"
        ) from None


class FileHeadStore:
    """One JSON file per thread under ``directory`` (created if missing), written atomically.

    A save writes a temporary file, fsyncs it and renames it over the old one, under an
    exclusive lock on ``directory/.lock`` (POSIX ``flock``), so two processes never replace a
    higher head by a lower one.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"head store directory {str(self.directory)!r} cannot be created ({exc.strerror}); "
                "pass a writable directory outside the database's reach"
            ) from None
        self._lock = threading.Lock()

    def _path(self, thread_id: str) -> Path:
        return self.directory / (hashlib.sha256(thread_id.encode()).hexdigest()[:40] + ".json")

    def load(self, thread_id: str) -> SignedHead | None:
        path = self._path(thread_id)
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return None
        head = _decode(text, str(path))
        return head if head is not None and head.thread_id == thread_id else None

    def save(self, heads: Sequence[SignedHead]) -> None:
        if not heads:
            return
        import fcntl

        with self._lock, open(self.directory / ".lock", "a+b") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            for head in heads:
                current = self.load(head.thread_id)
                if current is not None and current.seq >= head.seq:
                    continue
                path = self._path(head.thread_id)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                with open(tmp, "wb") as f:
                    f.write(json.dumps(head.to_dict(), sort_keys=True).encode())
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)

    def __repr__(self) -> str:
        return f"FileHeadStore({str(self.directory)!r})"


class KeyringHeadStore:
    """One keyring entry per thread (service ``langgraph-warden-heads`` by default)."""

    def __init__(self, service: str = "langgraph-warden-heads") -> None:
        self.service = service
        self._lock = threading.Lock()

    def _backend(self):
        from .identity import usable_keyring_backend

        # Head-store advice, not the signing key's: the fix here is another head store.
        return usable_keyring_backend(
            "KeyringHeadStore keeps each thread's last signed head in the OS keyring. On a server or in CI "
            "use FileHeadStore(DIR) (a directory outside the database, e.g. on another volume) or your own "
            "HeadStore; on a desktop, install and unlock a Secret Service (gnome-keyring, KeePassXC)."
        )

    def load(self, thread_id: str) -> SignedHead | None:
        head = _decode(self._backend().get_password(self.service, thread_id), f"keyring service {self.service!r}")
        return head if head is not None and head.thread_id == thread_id else None

    def save(self, heads: Sequence[SignedHead]) -> None:
        backend = self._backend()
        with self._lock:
            for head in heads:
                current = self.load(head.thread_id)
                if current is not None and current.seq >= head.seq:
                    continue
                backend.set_password(self.service, head.thread_id, json.dumps(head.to_dict(), sort_keys=True))

    def __repr__(self) -> str:
        return f"KeyringHeadStore({self.service!r})"
