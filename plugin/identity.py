"""Workload identity: a SPIFFE ID and an ES256 key that mints JWT-SVIDs.

Why: tools and resource services must be able to tell *which workload* is
calling them and verify it offline. The agent workload gets a SPIFFE ID
(``spiffe://<trust-domain>/<path>``) and presents JWT-SVIDs signed with an
ES256 (P-256) key — the JWT-SVID spec allows RS/ES/PS algorithms only, so the
Ed25519 history-signing key of :mod:`langgraph_warden.keys` cannot be reused.
The public keys are published as a JWK set (current *and* rotated keys, so
tokens minted before a rotation still verify until they expire).

The private key is held through ``keyring`` with the same no-silent-fallback
rule as the signing key: :class:`KeyringWorkloadKeyStore` raises
:class:`~langgraph_warden.errors.KeyStoreError` naming the fixes;
``$WARDEN_KEY_DIR`` switches the default to a private file
(:class:`~langgraph_warden.keyfiles.FileWorkloadKeyStore`) for servers and CI;
:class:`EphemeralWorkloadKeyStore` is the explicit in-memory store for demos and
tests.

:class:`IdentityProvider` is a protocol so a SPIRE-issued identity (Workload
API) can replace :class:`LocalIdentityProvider` without touching the guards.
:class:`JwtSigner` is the narrower capability the local credential broker needs
(sign arbitrary claims with the workload key); SPIRE does not offer it, so a
SPIRE deployment pairs its identity with a separate token signer.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import jwt
from cryptography.hazmat.primitives.asymmetric import ec

from .errors import ConfigurationError, KeyStoreError, WardenError
from .keys import KEY_DIR_ENV, b64u, b64u_decode, keyring_help

__all__ = [
    "SpiffeId",
    "WorkloadKey",
    "WorkloadKeyStore",
    "EphemeralWorkloadKeyStore",
    "KeyringWorkloadKeyStore",
    "default_workload_key_store",
    "workload_key_doc",
    "parse_workload_key_doc",
    "IdentityProvider",
    "JwtSigner",
    "LocalIdentityProvider",
    "SvidValidationError",
    "verify_svid",
    "public_key_from_jwk",
    "MAX_SVID_TTL_SECONDS",
    "usable_keyring_backend",
    "decode_verified",
]

#: JWT-SVIDs are meant to be short-lived; a longer one is a configuration mistake.
MAX_SVID_TTL_SECONDS = 3600

_SCHEME = "spiffe://"
_MAX_ID_LEN = 2048
_MAX_TD_LEN = 255
_TD_CHARS = re.compile(r"[a-z0-9._-]+")
_SEGMENT_CHARS = re.compile(r"[A-Za-z0-9._-]+")


# --------------------------------------------------------------------------- SPIFFE ID


def _bad_id(text: str, rule: str, fix: str) -> ConfigurationError:
    shown = text if len(text) <= 120 else text[:117] + "..."
    return ConfigurationError(f"spiffe_id {shown!r} is invalid: {rule}; {fix}")


@dataclass(frozen=True, slots=True)
class SpiffeId:
    """A validated SPIFFE ID (https://github.com/spiffe/spiffe/blob/main/standards/SPIFFE-ID.md).

    ``path`` is ``""`` or starts with ``/``. Build one with :meth:`parse`; the
    constructor does not validate.
    """

    trust_domain: str
    path: str = ""

    @classmethod
    def parse(cls, text: str | SpiffeId) -> SpiffeId:
        """Parse and validate; the :class:`ConfigurationError` names the rule broken."""
        if isinstance(text, SpiffeId):
            return text
        if not isinstance(text, str) or not text:
            raise ConfigurationError(
                "spiffe_id is empty; pass e.g. 'spiffe://example.org/agents/billing'"
            )
        if len(text.encode("utf-8")) > _MAX_ID_LEN:
            raise _bad_id(text, f"longer than {_MAX_ID_LEN} bytes", "shorten the path")
        if not text.startswith(_SCHEME):
            if text.lower().startswith(_SCHEME):
                raise _bad_id(text, "the scheme must be lowercase 'spiffe://'", "lowercase the scheme")
            raise _bad_id(text, "the scheme must be 'spiffe://'", "write it as spiffe://<trust-domain>/<path>")
        rest = text[len(_SCHEME) :]
        for ch, what in (("?", "a query"), ("#", "a fragment")):
            if ch in rest:
                raise _bad_id(text, f"it contains {what} ({ch!r})", "SPIFFE IDs carry no query or fragment")
        slash = rest.find("/")
        td, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
        if not td:
            raise _bad_id(text, "the trust domain is empty", "write spiffe://<trust-domain>/<path>")
        if "@" in td:
            raise _bad_id(text, "the trust domain contains userinfo ('@')", "remove 'user@'")
        if ":" in td:
            raise _bad_id(text, "the trust domain contains a port (':')", "remove ':<port>'")
        if len(td) > _MAX_TD_LEN:
            raise _bad_id(text, f"the trust domain is longer than {_MAX_TD_LEN} characters", "shorten it")
        if not _TD_CHARS.fullmatch(td):
            if _TD_CHARS.fullmatch(td.lower()):
                raise _bad_id(text, "the trust domain must be lowercase", f"use {td.lower()!r}")
            raise _bad_id(
                text,
                "the trust domain may contain only lowercase letters, digits, '.', '-' and '_'",
                "remove the other characters",
            )
        if path:
            if path.endswith("/"):
                raise _bad_id(text, "the path has a trailing '/'", "remove the trailing slash")
            for segment in path[1:].split("/"):
                if segment == "":
                    raise _bad_id(text, "the path has an empty segment ('//')", "remove the doubled slash")
                if segment in (".", ".."):
                    raise _bad_id(text, f"the path has a {segment!r} segment", "use the resolved path")
                if not _SEGMENT_CHARS.fullmatch(segment):
                    raise _bad_id(
                        text,
                        f"path segment {segment!r} may contain only letters, digits, '.', '-' and '_' "
                        "(no percent-encoding)",
                        "remove the other characters",
                    )
        return cls(td, path)

    def __str__(self) -> str:
        return f"{_SCHEME}{self.trust_domain}{self.path}"

    @property
    def uri(self) -> str:
        return str(self)


# --------------------------------------------------------------------------- workload key


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


class KeyringWorkloadKeyStore:
    """The workload's ES256 key stored in the OS keyring.

    One keyring entry holds a small JSON document: the private scalar ``d``
    (base64url) and the retired public JWKs, so a restart publishes the same
    JWK set. Writing one entry keeps rotation atomic.
    """

    kind = "keyring"

    def __init__(self, service: str = "langgraph-warden", username: str = "workload-key") -> None:
        self.service = service
        self.username = username
        self._lock = threading.Lock()
        self._key: WorkloadKey | None = None
        self._retired: list[dict[str, str]] = []

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


# --------------------------------------------------------------------------- identity providers


@runtime_checkable
class IdentityProvider(Protocol):
    """A workload identity: who the agent is, and proof of it for a given audience."""

    @property
    def spiffe_id(self) -> SpiffeId: ...

    def mint_svid(self, audience: str, ttl_seconds: int = 300, extra_claims: Mapping[str, Any] | None = None) -> str:
        """A JWT-SVID for exactly one audience."""
        ...

    def jwks(self) -> dict[str, Any]:
        """The JWK set (RFC 7517) that verifies this workload's tokens, rotated keys included."""
        ...


@runtime_checkable
class JwtSigner(Protocol):
    """Signs arbitrary claims with the workload key (used by the local credential broker)."""

    @property
    def spiffe_id(self) -> SpiffeId: ...

    def sign_jwt(self, claims: Mapping[str, Any], *, typ: str) -> str: ...

    def jwks(self) -> dict[str, Any]: ...


_RESERVED_SVID_CLAIMS = frozenset({"sub", "aud", "exp", "iat", "jti"})


class LocalIdentityProvider:
    """The local workload identity: a SPIFFE ID and a key from a :class:`WorkloadKeyStore`.

    ``clock`` returns epoch seconds; inject one in tests to exercise expiry
    without sleeping.
    """

    def __init__(
        self,
        spiffe_id: SpiffeId | str,
        key_store: WorkloadKeyStore,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._spiffe_id = SpiffeId.parse(spiffe_id)
        if not isinstance(key_store, WorkloadKeyStore):
            raise ConfigurationError(
                f"key_store is {type(key_store).__name__}; pass KeyringWorkloadKeyStore(), FileWorkloadKeyStore(DIR) "
                "or, for tests, EphemeralWorkloadKeyStore()"
            )
        self.key_store = key_store
        self.clock = clock

    @property
    def spiffe_id(self) -> SpiffeId:
        return self._spiffe_id

    @property
    def kid(self) -> str:
        return self.key_store.workload_key().kid

    def mint_svid(self, audience: str, ttl_seconds: int = 300, extra_claims: Mapping[str, Any] | None = None) -> str:
        if not isinstance(audience, str) or not audience.strip():
            raise ConfigurationError("audience is empty; pass the one service the JWT-SVID is for")
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds <= 0:
            raise ConfigurationError(f"ttl_seconds={ttl_seconds!r}; pass a positive whole number of seconds")
        if ttl_seconds > MAX_SVID_TTL_SECONDS:
            raise ConfigurationError(
                f"ttl_seconds={ttl_seconds} is above the JWT-SVID maximum of {MAX_SVID_TTL_SECONDS}s; "
                "mint a fresh short-lived SVID instead"
            )
        extra = dict(extra_claims or {})
        clash = sorted(_RESERVED_SVID_CLAIMS & extra.keys())
        if clash:
            raise ConfigurationError(f"extra_claims may not set {clash}; they are set by the identity provider")
        now = int(self.clock())
        claims = {
            **extra,
            "sub": str(self._spiffe_id),
            "aud": [audience],
            "iat": now,
            "exp": now + ttl_seconds,
            "jti": uuid.uuid4().hex,
        }
        return self.key_store.workload_key().sign_jwt(claims, typ="JWT")

    def sign_jwt(self, claims: Mapping[str, Any], *, typ: str) -> str:
        return self.key_store.workload_key().sign_jwt(claims, typ=typ)

    def jwks(self) -> dict[str, Any]:
        return {"keys": self.key_store.public_jwks()}

    def __repr__(self) -> str:
        return f"LocalIdentityProvider(spiffe_id={str(self._spiffe_id)!r}, key_store={self.key_store.kind!r})"


# --------------------------------------------------------------------------- verification


class SvidValidationError(WardenError):
    """A JWT-SVID failed validation; ``reason`` is a stable machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"JWT-SVID rejected ({reason}): {detail}")
        self.reason = reason


def decode_verified(
    token: str, jwks: Mapping[str, Any], *, typs: tuple[str | None, ...], error: Callable[[str, str], Exception]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check header (alg ES256, typ, kid in ``jwks``) and signature; return (header, claims).

    Claims are *not* checked here (callers do it with their own clock).
    Shared by :func:`verify_svid` and the local credential provider.
    """
    if not isinstance(token, str) or token.count(".") != 2:
        raise error("malformed", "not a compact JWS (header.payload.signature)")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise error("malformed", "the header is not valid base64url JSON") from None
    if header.get("alg") != "ES256":
        raise error("wrong_alg", f"alg is {header.get('alg')!r}; only ES256 is accepted")
    typ = header.get("typ")
    if typ not in typs:
        raise error("wrong_typ", f"typ is {typ!r}; expected one of {list(t for t in typs if t)}")
    kid = header.get("kid")
    match = next((k for k in jwks.get("keys", []) if k.get("kid") == kid), None) if kid else None
    if match is None:
        raise error("unknown_key", f"kid {kid!r} is not in the JWK set")
    try:
        public = public_key_from_jwk(match)
    except ConfigurationError as exc:
        raise error("unknown_key", str(exc)) from None
    try:
        decoded = jwt.PyJWS().decode_complete(token, public, algorithms=["ES256"])
    except jwt.InvalidSignatureError:
        raise error("bad_signature", "the signature does not verify with the published key") from None
    except jwt.PyJWTError as exc:
        raise error("malformed", type(exc).__name__) from None
    try:
        claims = json.loads(decoded["payload"])
    except ValueError:
        raise error("malformed", "the payload is not JSON") from None
    if not isinstance(claims, dict):
        raise error("malformed", "the payload is not a JSON object")
    return header, claims


def verify_svid(
    token: str,
    audience: str,
    jwks: Mapping[str, Any],
    *,
    trust_domain: str | None = None,
    clock: Callable[[], float] = time.time,
    leeway_seconds: int = 0,
) -> dict[str, Any]:
    """Validate a JWT-SVID offline against a JWK set; return its claims.

    Checks alg ES256, typ JWT/JOSE/absent, known kid, signature, ``sub`` is a
    valid SPIFFE ID (in ``trust_domain`` if given), ``aud`` contains
    ``audience``, and ``exp`` is in the future. Raises
    :class:`SvidValidationError` with a stable ``reason``.
    """
    _, claims = decode_verified(token, jwks, typs=("JWT", "JOSE", None), error=SvidValidationError)
    for name in ("sub", "aud", "exp"):
        if claims.get(name) in (None, "", []):
            raise SvidValidationError("missing_claim", f"claim {name!r} is required")
    try:
        sub = SpiffeId.parse(claims["sub"])
    except ConfigurationError as exc:
        raise SvidValidationError("bad_subject", str(exc)) from None
    if trust_domain is not None and sub.trust_domain != trust_domain:
        raise SvidValidationError("wrong_trust_domain", f"sub is in {sub.trust_domain!r}, expected {trust_domain!r}")
    aud = claims["aud"]
    auds = [aud] if isinstance(aud, str) else list(aud) if isinstance(aud, list) else []
    if audience not in auds:
        raise SvidValidationError("wrong_audience", f"aud {auds} does not contain {audience!r}")
    exp = claims["exp"]
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        raise SvidValidationError("malformed", "exp is not a number")
    if clock() >= exp + leeway_seconds:
        raise SvidValidationError("expired", "exp is in the past")
    return claims
