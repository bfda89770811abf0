"""Two credential providers: per-step tokens signed by the workload, and upstream secrets from the keyring."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from langgraph_warden import redaction
from langgraph_warden.errors import ConfigurationError, KeyStoreError
from langgraph_warden.identity import JwtSigner, decode_verified, usable_keyring_backend

from .errors import CredentialRejected, SecretNotFoundError
from .model import CredentialRequest, Lease, RevokeReason, SecretValue, check_scopes, short_digest
from .protocols import LeaseStore

__all__ = ["LocalTokenProvider", "KeyringSecretProvider"]


class LocalTokenProvider:
    """Mints per-step RFC 9068 access tokens signed with the workload key; verifies them.

    The revocation list is the shared :class:`LeaseStore` (same database as
    the history), so any resource server process with the JWK set and the
    store can reject a revoked token. A token whose lease was never recorded
    is rejected too (fail closed).
    """

    jit = True
    TYP = "at+jwt"
    #: Its tokens are checked against the lease store's revocation list, so the list entry *is* the
    #: revocation: a broker that commits that entry (with its event) need not ask it again.
    revoked_by_list = True

    def __init__(
        self,
        identity: JwtSigner,
        issuer: str,
        lease_store: LeaseStore,
        *,
        name: str = "local",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(issuer, str) or not issuer:
            raise ConfigurationError("issuer is empty; pass the broker's issuer URI, e.g. 'https://warden.local'")
        self.identity = identity
        self.issuer = issuer
        self.lease_store = lease_store
        self.name = name
        self.clock = clock
        self._jwks: Mapping[str, Any] = identity.jwks()

    def acquire(self, request: CredentialRequest) -> Lease:
        sub = str(self.identity.spiffe_id)
        claims = {
            "iss": self.issuer,
            "sub": sub,
            "client_id": sub,
            "aud": request.audience,
            "scope": " ".join(request.scopes),
            "iat": int(request.issued_at.timestamp()),
            "exp": int(request.expires_at.timestamp()),
            "jti": request.lease_id,
            "thread_id": request.thread_id,
            "tool_call_id": request.tool_call_id,
        }
        token = self.identity.sign_jwt(claims, typ=self.TYP)
        redaction.register(token, expires_at=request.expires_at.timestamp())
        return request.lease(
            self.name, SecretValue(token), jit=True, token_digest=short_digest(token), jti=request.lease_id
        )

    def revoke(self, lease: Lease, reason: str = RevokeReason.STEP_ENDED) -> bool:
        self.lease_store.mark_revoked(lease.lease_id, reason)
        return True

    def revoke_run(self, thread_id: str) -> list[str]:
        done = []
        for rec in self.lease_store.outstanding(thread_id):
            if rec.provider == self.name and self.lease_store.mark_revoked(rec.lease_id, RevokeReason.RUN_REVOKED):
                done.append(rec.lease_id)
        return done

    def verify(self, token: str, audience: str, scope: Iterable[str] | str | None = None) -> dict[str, Any]:
        """Resource-side check; returns the claims or raises :class:`CredentialRejected`.

        Order: format/alg/typ/key/signature, issuer, expiry, audience, scope,
        then the revocation list (the only database read, done last).
        """
        try:
            _, claims = decode_verified(token, self._jwks, typs=(self.TYP, "application/at+jwt"), error=CredentialRejected)
        except CredentialRejected as exc:
            if exc.reason != "unknown_key":
                raise
            self._jwks = self.identity.jwks()  # the key may have rotated since we cached the set
            _, claims = decode_verified(token, self._jwks, typs=(self.TYP, "application/at+jwt"), error=CredentialRejected)
        for name in ("iss", "sub", "aud", "exp", "iat", "jti", "client_id"):
            if claims.get(name) in (None, ""):
                raise CredentialRejected("missing_claim", f"claim {name!r} is required (RFC 9068)")
        if claims["iss"] != self.issuer:
            raise CredentialRejected("wrong_issuer", f"iss is {claims['iss']!r}, expected {self.issuer!r}")
        exp = claims["exp"]
        if isinstance(exp, bool) or not isinstance(exp, (int, float)):
            raise CredentialRejected("malformed", "exp is not a number")
        if self.clock() >= exp:
            raise CredentialRejected("expired", "the token's exp is in the past")
        aud = claims["aud"]
        auds = [aud] if isinstance(aud, str) else list(aud) if isinstance(aud, list) else []
        if audience not in auds:
            raise CredentialRejected("wrong_audience", f"the token is for {auds}, not {audience!r}")
        needed = check_scopes("scope", scope)
        held = set(str(claims.get("scope", "")).split())
        lacking = [s for s in needed if s not in held]
        if lacking:
            raise CredentialRejected("insufficient_scope", f"the token lacks scopes {lacking}")
        if self.lease_store.is_revoked(str(claims["jti"])):
            raise CredentialRejected("revoked", f"lease {claims['jti']} is on the revocation list")
        return claims

    def __repr__(self) -> str:
        return f"LocalTokenProvider(name={self.name!r}, issuer={self.issuer!r})"


class KeyringSecretProvider:
    """Hands a tool an upstream secret (API key) from the OS keyring, for the step only.

    ``mapping`` maps an audience or tool name to the keyring *username* under
    ``service``. The secret cannot be revoked (it is long-lived upstream), so
    leases are ``jit=False`` and their end is recorded as
    ``not_revocable_step_ended``; the value is dropped from the context when
    the step ends.
    """

    jit = False

    def __init__(self, service: str, mapping: Mapping[str, str], *, name: str = "keyring") -> None:
        if not isinstance(service, str) or not service:
            raise ConfigurationError("service is empty; pass the keyring service that holds the upstream secrets")
        self.service = service
        self.mapping = dict(mapping)
        self.name = name

    def acquire(self, request: CredentialRequest) -> Lease:
        username = self.mapping.get(request.audience) or self.mapping.get(request.tool_name)
        if username is None:
            raise SecretNotFoundError(
                f"no keyring entry is mapped for audience {request.audience!r} / tool {request.tool_name!r}; "
                f"add it to KeyringSecretProvider(mapping=...) (keyring service {self.service!r})"
            )
        backend = usable_keyring_backend(
            "Configure a keyring backend: on Linux install and unlock a Secret Service (gnome-keyring or "
            "KeePassXC) or set PYTHON_KEYRING_BACKEND to a backend you trust; then store the secret with "
            f"`keyring set {self.service} {username}`."
        )
        try:
            value = backend.get_password(self.service, username)
        except Exception as exc:
            raise KeyStoreError(
                f"keyring could not read service={self.service!r} username={username!r} ({type(exc).__name__})"
            ) from None
        if not value:
            raise SecretNotFoundError(
                f"the keyring has no secret for service={self.service!r} username={username!r}; store it with "
                f"`keyring set {self.service} {username}`"
            )
        redaction.register(value)  # long-lived upstream: scrubbed for the life of the process
        return request.lease(self.name, SecretValue(value), jit=False)

    def revoke(self, lease: Lease, reason: str = RevokeReason.STEP_ENDED) -> bool:
        return False  # long-lived upstream secret: nothing to invalidate

    def revoke_run(self, thread_id: str) -> list[str]:
        return []  # holds no per-run state; the broker records the end of its leases

    def __repr__(self) -> str:
        return f"KeyringSecretProvider(name={self.name!r}, service={self.service!r})"
