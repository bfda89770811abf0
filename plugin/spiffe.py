"""SPIFFE IDs: ``spiffe://<trust-domain>/<path>``, parsed and validated once.

Why its own module: the workload's name is checked by the identity provider, by SVID
verification and by the run charter; the rules of the SPIFFE ID standard live in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ConfigurationError

__all__ = ["SpiffeId"]

_SCHEME = "spiffe://"
_MAX_ID_LEN = 2048
_MAX_TD_LEN = 255
_TD_CHARS = re.compile(r"[a-z0-9._-]+")
_SEGMENT_CHARS = re.compile(r"[A-Za-z0-9._-]+")


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
