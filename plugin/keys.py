"""Ed25519 signing keys for the event history, held through ``keyring``.

Why keyring: the private key that signs history must not sit in the database
next to the history it protects, nor in graph state. ``keyring`` reaches the
OS secret store (Secret Service, macOS Keychain, Windows Credential Locker)
or an explicitly configured backend.

No silent downgrade: when keyring has no usable backend,
:class:`KeyringKeyStore` raises :class:`~langgraph_warden.errors.KeyStoreError`
naming the fixes (:func:`keyring_help`). Where no keyring can be unlocked (a
server, CI), :envvar:`WARDEN_KEY_DIR` or ``Warden.open(key_dir=...)`` keeps the
keys in private files (:mod:`langgraph_warden.keyfiles`).
:class:`EphemeralKeyStore` is the explicit in-memory store for demos and tests;
every signed head records which kind of store held its key (``key_store``), so a
verifier can tell a dev signature from a production one.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .errors import KeyStoreError

__all__ = [
    "SigningKey",
    "KeyStore",
    "EphemeralKeyStore",
    "KeyringKeyStore",
    "KEY_DIR_ENV",
    "default_key_store",
    "keyring_help",
    "key_id_for",
    "verify_signature",
    "b64u",
    "b64u_decode",
]


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id_for(public_key: bytes) -> str:
    """A stable id derived from the public key, so a key cannot be swapped under its id."""
    return "ed25519:" + hashlib.sha256(public_key).hexdigest()[:32]


@dataclass(frozen=True)
class SigningKey:
    """A private Ed25519 key with its id and the kind of store that held it."""

    key_id: str
    store_kind: str
    _private: Ed25519PrivateKey

    @property
    def public_key(self) -> bytes:
        return self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def sign(self, data: bytes) -> bytes:
        return self._private.sign(data)

    def __repr__(self) -> str:  # never print key material
        return f"SigningKey(key_id={self.key_id!r}, store_kind={self.store_kind!r})"

    @classmethod
    def from_private(cls, private: Ed25519PrivateKey, store_kind: str) -> SigningKey:
        pub = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(key_id=key_id_for(pub), store_kind=store_kind, _private=private)


def verify_signature(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """Verify an Ed25519 signature; False (never an exception) on mismatch or bad key."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


@runtime_checkable
class KeyStore(Protocol):
    """Where the workload's current signing key lives."""

    kind: str

    def signing_key(self) -> SigningKey:
        """The current key, created on first use."""
        ...

    def rotate(self) -> SigningKey:
        """Replace the current key with a new one. Old public keys stay registered."""
        ...


class EphemeralKeyStore:
    """An in-memory key that dies with the process. For demos and tests only.

    Signatures made with it verify (its public key is registered in the
    database) but are marked ``key_store="ephemeral"`` in every signed head.
    """

    kind = "ephemeral"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: SigningKey | None = None

    def signing_key(self) -> SigningKey:
        with self._lock:
            if self._key is None:
                self._key = SigningKey.from_private(Ed25519PrivateKey.generate(), self.kind)
            return self._key

    def rotate(self) -> SigningKey:
        with self._lock:
            self._key = SigningKey.from_private(Ed25519PrivateKey.generate(), self.kind)
            return self._key


#: A directory holding the keys as private files; when set, it replaces the keyring as the default store.
KEY_DIR_ENV = "WARDEN_KEY_DIR"


def keyring_help(key: str = "signing key") -> str:
    """How to get past a missing keyring, for each context a user may be in (Python, CLI, server, desktop).

    Why one text for every key: the signing key and the workload key fail at different moments, and
    advice naming only one store sent users into a second error on the other.
    """
    saver = " (WardenSaver alone: key_store=EphemeralKeyStore())" if key == "signing key" else ""
    return (
        f"The {key} is kept in the OS keyring unless told otherwise. To fix it — on a server or in CI: "
        f"set {KEY_DIR_ENV}=DIR (read by Warden, WardenSaver and the warden CLI) or pass Warden.open(url, key_dir=DIR): "
        "both keys are kept in files only this user can read, created on first use or ahead with "
        "`python -m langgraph_warden.keyfiles DIR` (README: \"Keys on a server or in CI\"); "
        "on a desktop: install and unlock a Secret Service (gnome-keyring, KeePassXC); "
        "for demos and tests only: Warden.open(url, ephemeral_keys=True), which covers both the signing key "
        f"and the workload key{saver}, or the warden CLI's --ephemeral-keys."
    )


_KEYRING_HELP = keyring_help("signing key")


def seed_text(private: Ed25519PrivateKey) -> str:
    """The stored form of a signing key: base64 of its 32-byte seed (keyring entry, key file, ``--key FILE``)."""
    from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

    return base64.b64encode(private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())).decode("ascii")


def private_from_seed_text(text: str, where: str) -> Ed25519PrivateKey:
    """Load :func:`seed_text`'s form; KeyStoreError names ``where`` (never the content)."""
    try:
        return Ed25519PrivateKey.from_private_bytes(base64.b64decode(text.strip(), validate=True))
    except ValueError:
        raise KeyStoreError(
            f"{where} is not a base64 Ed25519 seed; delete it to have a new key generated, or restore the right one"
        ) from None


def default_key_store() -> KeyStore:
    """The signing-key store used when none is passed: files in ``$WARDEN_KEY_DIR`` if set, else the keyring."""
    directory = os.environ.get(KEY_DIR_ENV)
    if directory:
        from .keyfiles import FileKeyStore

        return FileKeyStore(directory)
    return KeyringKeyStore()


class KeyringKeyStore:
    """The signing key stored in the OS keyring (service/username configurable).

    The key is stored as the base64 of its 32-byte Ed25519 seed. Rotation
    overwrites the stored seed; the previous public key remains registered in
    the database so everything it signed still verifies.
    """

    kind = "keyring"

    def __init__(self, service: str = "langgraph-warden", username: str = "signing-key") -> None:
        self.service = service
        self.username = username
        self._lock = threading.Lock()
        self._key: SigningKey | None = None

    def _backend(self):
        import keyring
        from keyring.backends import fail

        try:
            backend = keyring.get_keyring()
        except Exception as exc:  # keyring raises varied errors on broken configs
            raise KeyStoreError(f"keyring could not load a backend ({type(exc).__name__}). {_KEYRING_HELP}") from None
        if isinstance(backend, fail.Keyring) or getattr(backend, "priority", 1) <= 0:
            raise KeyStoreError(
                f"keyring has no usable backend (found {type(backend).__module__}.{type(backend).__name__}). "
                + _KEYRING_HELP
            )
        return backend

    def _store(self, private: Ed25519PrivateKey) -> None:
        try:
            self._backend().set_password(self.service, self.username, seed_text(private))
        except KeyStoreError:
            raise
        except Exception as exc:
            raise KeyStoreError(
                f"keyring refused to store the signing key under service={self.service!r} "
                f"username={self.username!r} ({type(exc).__name__}). {_KEYRING_HELP}"
            ) from None

    def signing_key(self) -> SigningKey:
        with self._lock:
            if self._key is not None:
                return self._key
            try:
                stored = self._backend().get_password(self.service, self.username)
            except KeyStoreError:
                raise
            except Exception as exc:
                raise KeyStoreError(
                    f"keyring could not read service={self.service!r} username={self.username!r} "
                    f"({type(exc).__name__}). {_KEYRING_HELP}"
                ) from None
            if stored is None:
                private = Ed25519PrivateKey.generate()
                self._store(private)
            else:
                private = private_from_seed_text(
                    stored, f"the keyring entry service={self.service!r} username={self.username!r}"
                )
            self._key = SigningKey.from_private(private, self.kind)
            return self._key

    def rotate(self) -> SigningKey:
        with self._lock:
            private = Ed25519PrivateKey.generate()
            self._store(private)
            self._key = SigningKey.from_private(private, self.kind)
            return self._key
