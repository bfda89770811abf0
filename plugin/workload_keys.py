"""The workload's ES256 key: its JWK form, and the stores that hold it (in memory, keyring).

Why its own module: the key that signs JWT-SVIDs and per-step credentials has a lifecycle of
its own — created on first use, rotated with its retired public halves still published, stored
under the same no-silent-fallback rule as the history-signing key (see
:mod:`langgraph_warden.identity`). The file store is :class:`~langgraph_warden.keyfiles.FileWorkloadKeyStore`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from cryptography.hazmat.primitives.asymmetric import ec

from .errors import ConfigurationError, KeyStoreError
from .keys import KEY_DIR_ENV, b64u, b64u_decode, keyring_help

__all__ = [
    "WorkloadKey",
    "WorkloadKeyStore",
    "EphemeralWorkloadKeyStore",
    "KeyringWorkloadKeyStore",
    "RetainingWorkloadKeyStore",
    "RETAINED_RETIRED_KEYS",
    "default_workload_key_store",
    "workload_key_doc",
    "parse_workload_key_doc",
    "public_key_from_jwk",
    "usable_keyring_backend",
]


def _jwk_thumbprint(jwk: Mapping[str, str]) -> str:
    """RFC 7638 thumbprint: a kid bound to the key, so a key cannot be swapped under its id."""
    required = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    data = json.dumps(required, separators=(",", ":"), sort_keys=True).encode("ascii")
    return b64u(hashlib.sha256(data).digest())


def _public_jwk(public: ec.EllipticCurvePublicKey) -> dict[str, str]:
    numbers = public.public_numbers()
    jwk = {
        "kty": "EC",
        "crv": "P-256",
        "x": b64u(numbers.x.to_bytes(32, "big")),
        "y": b64u(numbers.y.to_bytes(32, "big")),
    }
    jwk["kid"] = _jwk_thumbprint(jwk)
    jwk["use"] = "sig"
    jwk["alg"] = "ES256"
    return jwk


@functools.lru_cache(maxsize=64)
def _p256_public_key(x_b64: str, y_b64: str) -> ec.EllipticCurvePublicKey:
    # Point validation costs ~100 µs; a resource server verifies many tokens per key.
    x = int.from_bytes(b64u_decode(x_b64), "big")
    y = int.from_bytes(b64u_decode(y_b64), "big")
    return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()


def public_key_from_jwk(jwk: Mapping[str, Any]) -> ec.EllipticCurvePublicKey:
    """Load a P-256 public key from a JWK; ConfigurationError names what is wrong."""
    if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256":
        raise ConfigurationError(
            f"jwk kid={jwk.get('kid')!r} is kty={jwk.get('kty')!r} crv={jwk.get('crv')!r}; "
            "only EC P-256 (ES256) keys are accepted"
        )
    try:
        return _p256_public_key(str(jwk["x"]), str(jwk["y"]))
    except (KeyError, ValueError) as exc:
        raise ConfigurationError(f"jwk kid={jwk.get('kid')!r} has no valid x/y coordinates ({exc})") from None


@dataclass(frozen=True)
class WorkloadKey:
    """A private ES256 key with its ``kid`` and the kind of store that held it."""

    kid: str
    store_kind: str
    _private: ec.EllipticCurvePrivateKey = field(repr=False, compare=False)

    @classmethod
    def from_private(cls, private: ec.EllipticCurvePrivateKey, store_kind: str) -> WorkloadKey:
        if not isinstance(private.curve, ec.SECP256R1):
            raise KeyStoreError(f"workload key is on curve {private.curve.name}; ES256 needs P-256 (secp256r1)")
        return cls(kid=_public_jwk(private.public_key())["kid"], store_kind=store_kind, _private=private)

    @property
    def public_jwk(self) -> dict[str, str]:
        return _public_jwk(self._private.public_key())

    def sign_jwt(self, claims: Mapping[str, Any], *, typ: str) -> str:
        """Compact JWS, ES256, with this key's ``kid`` and the given ``typ``."""
        import jwt  # here, not at the top: PyJWT costs ~80 ms to import and only minting needs it

        return jwt.encode(dict(claims), self._private, algorithm="ES256", headers={"kid": self.kid, "typ": typ})

    def __repr__(self) -> str:  # never print key material
        return f"WorkloadKey(kid={self.kid!r}, store_kind={self.store_kind!r})"


@runtime_checkable
class WorkloadKeyStore(Protocol):
    """Where the workload's ES256 key lives; keeps retired public keys for the JWK set."""

    kind: str

    def workload_key(self) -> WorkloadKey:
        """The current key, created on first use."""
        ...

    def rotate(self) -> WorkloadKey:
        """Replace the current key; its public half stays in :meth:`public_jwks`."""
        ...

    def public_jwks(self) -> list[dict[str, str]]:
        """Public JWKs of the current key and the retained retired keys (current first)."""
        ...


#: How many retired public keys stay published (tokens live minutes; a few suffice).
RETAINED_RETIRED_KEYS = 8


class EphemeralWorkloadKeyStore:
    """An in-memory ES256 key that dies with the process. For demos and tests only."""

    kind = "ephemeral"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: WorkloadKey | None = None
        self._retired: list[dict[str, str]] = []

    def workload_key(self) -> WorkloadKey:
        with self._lock:
            if self._key is None:
                self._key = WorkloadKey.from_private(ec.generate_private_key(ec.SECP256R1()), self.kind)
            return self._key

    def rotate(self) -> WorkloadKey:
        with self._lock:
            if self._key is not None:
                self._retired = ([self._key.public_jwk, *self._retired])[:RETAINED_RETIRED_KEYS]
            self._key = WorkloadKey.from_private(ec.generate_private_key(ec.SECP256R1()), self.kind)
            return self._key

    def public_jwks(self) -> list[dict[str, str]]:
        current = self.workload_key()
        with self._lock:
            return [current.public_jwk, *self._retired]


_KEYRING_HELP = keyring_help("workload key (ES256, signs per-step credentials)")


def workload_key_doc(private: ec.EllipticCurvePrivateKey, retired: list[dict[str, str]]) -> str:
    """The stored form of a workload key (keyring entry or key file): its scalar and the retired public JWKs."""
    d = private.private_numbers().private_value.to_bytes(32, "big")
    return json.dumps({"v": 1, "alg": "ES256", "d": b64u(d), "retired": retired}, separators=(",", ":"))


def parse_workload_key_doc(text: str, where: str) -> tuple[ec.EllipticCurvePrivateKey, list[dict[str, str]]]:
    """Load :func:`workload_key_doc`'s form; KeyStoreError names ``where`` (never the content)."""
    try:
        doc = json.loads(text)
        d = int.from_bytes(b64u_decode(doc["d"]), "big")
        return ec.derive_private_key(d, ec.SECP256R1()), [dict(j) for j in doc.get("retired", [])]
    except (ValueError, KeyError, TypeError, AttributeError):
        raise KeyStoreError(
            f"{where} is not a langgraph-warden workload key; delete it to have a new key generated, "
            "or restore the right one"
        ) from None


def default_workload_key_store() -> WorkloadKeyStore:
    """The workload-key store used when none is passed: files in ``$WARDEN_KEY_DIR`` if set, else the keyring."""
    directory = os.environ.get(KEY_DIR_ENV)
    if directory:
        from .keyfiles import FileWorkloadKeyStore

        return FileWorkloadKeyStore(directory)
    return KeyringWorkloadKeyStore()


def usable_keyring_backend(help_text: str = _KEYRING_HELP):
    """The active keyring backend, or KeyStoreError with ``help_text`` (no silent fallback)."""
    import keyring
    from keyring.backends import fail

    try:
        backend = keyring.get_keyring()
    except Exception as exc:  # keyring raises varied errors on broken configs
        raise KeyStoreError(f"keyring could not load a backend ({type(exc).__name__}). {help_text}") from None
    if isinstance(backend, fail.Keyring) or getattr(backend, "priority", 1) <= 0:
        raise KeyStoreError(
            f"keyring has no usable backend (found {type(backend).__module__}.{type(backend).__name__}). "
            + help_text
        )
    return backend


class RetainingWorkloadKeyStore:
    """What every stored workload key shares: loaded once, rotated under a lock, the retired public
    keys kept (up to ``RETAINED_RETIRED_KEYS``) so tokens signed before a rotation still verify.

    A store says where the key lives: ``_load`` (sets ``_key`` and ``_retired``, creating the key
    on first use) and ``_save``.
    """

    kind: str

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: WorkloadKey | None = None
        self._retired: list[dict[str, str]] = []

    def _load(self) -> None:
        raise NotImplementedError

    def _save(self, private: ec.EllipticCurvePrivateKey, retired: list[dict[str, str]]) -> None:
        raise NotImplementedError

    def workload_key(self) -> WorkloadKey:
        with self._lock:
            if self._key is None:
                self._load()
            assert self._key is not None
            return self._key

    def rotate(self) -> WorkloadKey:
        with self._lock:
            if self._key is None:
                self._load()
            assert self._key is not None
            retired = ([self._key.public_jwk, *self._retired])[:RETAINED_RETIRED_KEYS]
            private = ec.generate_private_key(ec.SECP256R1())
            self._save(private, retired)
            self._retired = retired
            self._key = WorkloadKey.from_private(private, self.kind)
            return self._key

    def public_jwks(self) -> list[dict[str, str]]:
        current = self.workload_key()
        with self._lock:
            return [current.public_jwk, *self._retired]


class KeyringWorkloadKeyStore(RetainingWorkloadKeyStore):
    """The workload's ES256 key stored in the OS keyring.

    One keyring entry holds a small JSON document: the private scalar ``d``
    (base64url) and the retired public JWKs, so a restart publishes the same
    JWK set. Writing one entry keeps rotation atomic.
    """

    kind = "keyring"

    def __init__(self, service: str = "langgraph-warden", username: str = "workload-key") -> None:
        super().__init__()
        self.service = service
        self.username = username

    def _where(self) -> str:
        return f"service={self.service!r} username={self.username!r}"

    def _save(self, private: ec.EllipticCurvePrivateKey, retired: list[dict[str, str]]) -> None:
        doc = workload_key_doc(private, retired)
        backend = usable_keyring_backend()
        try:
            backend.set_password(self.service, self.username, doc)
        except Exception as exc:
            raise KeyStoreError(
                f"keyring refused to store the workload key under {self._where()} ({type(exc).__name__}). "
                f"{_KEYRING_HELP}"
            ) from None

    def _load(self) -> None:
        backend = usable_keyring_backend()
        try:
            stored = backend.get_password(self.service, self.username)
        except Exception as exc:
            raise KeyStoreError(
                f"keyring could not read {self._where()} ({type(exc).__name__}). {_KEYRING_HELP}"
            ) from None
        if stored is None:
            private = ec.generate_private_key(ec.SECP256R1())
            self._save(private, [])
            self._retired = []
        else:
            private, self._retired = parse_workload_key_doc(stored, f"the keyring entry {self._where()}")
        self._key = WorkloadKey.from_private(private, self.kind)

