"""What a credential is: the secret that refuses to be shown, the lease of one step, the request for one.

Also the vocabulary they share: why a lease ended (:class:`RevokeReason`) and what a scope is
(:func:`check_scopes`, RFC 6749 §3.3).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from langgraph_warden.errors import ConfigurationError

from .errors import NoCredentialError
from .redact import register_handed_out

__all__ = ["RevokeReason", "SecretValue", "LeaseRecord", "Lease", "CredentialRequest", "short_digest", "check_scopes"]


class RevokeReason:
    """Why a lease ended (stored in ``warden_leases.revoke_reason`` and events)."""

    STEP_ENDED = "step_ended"
    STEP_FAILED = "step_failed"
    STEP_INTERRUPTED = "step_interrupted"
    STEP_CANCELLED = "step_cancelled"
    RUN_REVOKED = "run_revoked"
    #: the call's attempt was cut off (a crashed process) and the guard recorded it aborted
    CALL_ABORTED = "call_aborted"
    ISSUE_ABORTED = "issue_aborted"
    NOT_REVOCABLE = "not_revocable_step_ended"


class SecretValue:
    """A token or secret that refuses to be printed, compared or serialised.

    ``repr``/``str``/``format`` give ``***``; pickling raises, so it cannot be
    written into a checkpoint by accident. Use :meth:`reveal` at the call site.
    """

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "SecretValue('***')"

    def __str__(self) -> str:
        return "***"

    def __format__(self, spec: str) -> str:
        return "***"

    def __bool__(self) -> bool:
        return bool(self._value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("SecretValue is immutable")

    def __reduce__(self):
        raise TypeError("SecretValue cannot be pickled or serialised: keep credentials out of graph state")

    def __copy__(self) -> SecretValue:
        return self

    def __deepcopy__(self, memo: Any) -> SecretValue:
        return self


_EMPTY_SECRET = SecretValue("")


def iso_utc(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def short_digest(token: str) -> str:
    """``sha256:`` + 16 hex chars: enough to correlate a token, not to store it."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]


@runtime_checkable
class LeaseRecord(Protocol):
    """What a :class:`LeaseStore` returns for a stored lease (no secret, no digest); read-only."""

    @property
    def lease_id(self) -> str: ...
    @property
    def jti(self) -> str | None: ...
    @property
    def thread_id(self) -> str: ...
    @property
    def tool_call_id(self) -> str | None: ...
    @property
    def provider(self) -> str: ...
    @property
    def audience(self) -> str: ...
    @property
    def scopes(self) -> tuple[str, ...]: ...
    @property
    def issued_at(self) -> datetime: ...
    @property
    def expires_at(self) -> datetime: ...
    @property
    def revoked_at(self) -> datetime | None: ...
    @property
    def revoke_reason(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Lease:
    """One credential for one step. The value is in ``secret`` (never in repr/eq/records).

    ``jit`` is False for secrets that cannot be revoked (keyring API keys):
    their "revocation" only records that the step ended. ``token_digest`` is
    None for those: a digest of a long-lived secret would be an offline
    guessing oracle in the audit log.
    """

    lease_id: str
    provider: str
    jit: bool
    scopes: tuple[str, ...]
    audience: str
    thread_id: str
    tool_call_id: str | None
    issued_at: datetime
    expires_at: datetime
    token_digest: str | None
    jti: str | None = None
    secret: SecretValue = field(default=_EMPTY_SECRET, repr=False, compare=False)

    def reveal(self) -> str:
        """The token or secret, for the call that needs it. Do not store or log it."""
        if not self.secret:
            raise NoCredentialError(
                f"lease {self.lease_id} carries no value (it was loaded from the lease store, which never "
                "holds secrets)"
            )
        value = self.secret.reveal()
        register_handed_out(value, self)
        return value

    def authorization_header(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.reveal()}"}

    def to_record(self) -> dict[str, Any]:
        """JSON-ready, secret-free description (event payloads, logs, CLI output)."""
        return {
            "lease_id": self.lease_id,
            "provider": self.provider,
            "jit": self.jit,
            "scopes": list(self.scopes),
            "audience": self.audience,
            "tool_call_id": self.tool_call_id,
            "expires_at": iso_utc(self.expires_at),
            "token_digest": self.token_digest,
        }

    def __reduce__(self):
        raise TypeError(
            "Lease cannot be pickled or serialised (it carries a credential); store lease.to_record() instead"
        )

    @classmethod
    def from_record(cls, rec: LeaseRecord) -> Lease:
        """A value-less lease rebuilt from the store (for revoke-run after a crash).

        The table has no ``jit`` column: a lease with a ``jti`` is a revocable
        per-step token, one without is a non-revocable secret.
        """
        return cls(
            lease_id=rec.lease_id,
            provider=rec.provider,
            jit=rec.jti is not None,
            scopes=tuple(rec.scopes),
            audience=rec.audience,
            thread_id=rec.thread_id,
            tool_call_id=rec.tool_call_id,
            issued_at=rec.issued_at,
            expires_at=rec.expires_at,
            token_digest=None,
            jti=rec.jti,
        )


@dataclass(frozen=True, slots=True)
class CredentialRequest:
    """What the broker asks a provider for, after validating it against the decision."""

    lease_id: str
    thread_id: str
    tool_call_id: str | None
    tool_name: str
    audience: str
    scopes: tuple[str, ...]
    issued_at: datetime
    expires_at: datetime

    @property
    def ttl_seconds(self) -> int:
        return int((self.expires_at - self.issued_at).total_seconds())

    def lease(
        self, provider: str, secret: SecretValue, *, jit: bool, token_digest: str | None = None, jti: str | None = None
    ) -> Lease:
        """The lease answering this request: its ids, scopes and times, with what the provider issued."""
        return Lease(
            lease_id=self.lease_id,
            provider=provider,
            jit=jit,
            scopes=self.scopes,
            audience=self.audience,
            thread_id=self.thread_id,
            tool_call_id=self.tool_call_id,
            issued_at=self.issued_at,
            expires_at=self.expires_at,
            token_digest=token_digest,
            jti=jti,
            secret=secret,
        )


_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")  # RFC 6749 §3.3 scope-token


def check_scopes(field_name: str, scopes: Iterable[str] | str | None) -> tuple[str, ...]:
    if scopes is None:
        return ()
    if isinstance(scopes, str):
        scopes = scopes.split()
    out: list[str] = []
    for s in scopes:
        if not isinstance(s, str) or not _SCOPE_TOKEN.fullmatch(s):
            raise ConfigurationError(
                f"{field_name} contains {s!r}; a scope is a non-empty token of printable ASCII without "
                "spaces, quotes or backslashes (RFC 6749 §3.3)"
            )
        if s not in out:
            out.append(s)
    return tuple(out)
