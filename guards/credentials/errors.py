"""The credential broker's errors: each says what went wrong and what to do."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from langgraph_warden.errors import ConfigurationError, WardenError

__all__ = [
    "CredentialError",
    "ScopeNotGrantedError",
    "TtlTooLongError",
    "UnknownProviderError",
    "SecretNotFoundError",
    "CredentialRejected",
    "NoCredentialError",
]


class CredentialError(WardenError):
    """Base of the credential broker's errors."""


class ScopeNotGrantedError(CredentialError, PermissionError):
    """Scopes were requested that the policy decision did not grant."""

    def __init__(self, missing: Sequence[str], granted: Sequence[str], tool_name: str) -> None:
        super().__init__(
            f"scopes_requested {sorted(missing)} were not granted by the policy for tool {tool_name!r} "
            f"(granted: {sorted(granted)}); a policy grants only the scopes its decision lists (an allow-all "
            "policy that lists none grants none): have it grant them (in Rego, \"scopes\": input.tool.scopes), "
            "or request a subset of the granted scopes"
        )
        self.missing = tuple(sorted(missing))
        self.granted = tuple(sorted(granted))


class TtlTooLongError(CredentialError, ConfigurationError):
    """An explicitly requested TTL is above the broker's maximum."""

    def __init__(self, requested: int, maximum: int) -> None:
        super().__init__(
            f"ttl_seconds={requested} is above max_ttl_seconds={maximum}; request at most {maximum}s "
            "(per-step credentials are meant to be short) or raise the broker's max_ttl_seconds"
        )
        self.requested = requested
        self.maximum = maximum


class UnknownProviderError(CredentialError, ConfigurationError):
    """No provider with that name is registered with the broker."""

    def __init__(self, provider: str, known: Iterable[str]) -> None:
        super().__init__(
            f"provider={provider!r} is not registered with the credential broker (known: {sorted(known)}); "
            "register it in CredentialBroker(providers=...) or fix the name"
        )
        self.provider = provider


class SecretNotFoundError(CredentialError, LookupError):
    """The keyring holds no secret for the tool/audience."""


class CredentialRejected(CredentialError):
    """A resource server refused a credential; ``reason`` is a stable code.

    Codes: malformed, wrong_alg, wrong_typ, unknown_key, bad_signature,
    wrong_issuer, missing_claim, expired, wrong_audience, insufficient_scope,
    revoked.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"credential rejected ({reason})" + (f": {detail}" if detail else ""))
        self.reason = reason


class NoCredentialError(CredentialError, LookupError):
    """``current_credential()`` was called outside a guarded step."""
