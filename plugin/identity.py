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


import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import jwt

from .errors import ConfigurationError, WardenError
from .spiffe import SpiffeId
from .workload_keys import (  # re-exported: the package's public names for the workload key and its stores
    RETAINED_RETIRED_KEYS,
    EphemeralWorkloadKeyStore,
    KeyringWorkloadKeyStore,
    WorkloadKey,
    WorkloadKeyStore,
    default_workload_key_store,
    parse_workload_key_doc,
    public_key_from_jwk,
    usable_keyring_backend,
    workload_key_doc,
)

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
    "RETAINED_RETIRED_KEYS",
    "usable_keyring_backend",
    "decode_verified",
]

#: JWT-SVIDs are meant to be short-lived; a longer one is a configuration mistake.
MAX_SVID_TTL_SECONDS = 3600


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
