"""Live-secret redaction: the last line of defence before anything is stored or logged.

Why a registry of *live* secrets: a tool can carry its credential into storage by
paths nobody enumerates — a case-insensitive header mapping in an exception's
args, an object whose ``__repr__`` prints it, an exception attribute ten levels
deep. LangGraph then stores ``repr(exc)`` as the task's ``__error__`` write. No
walker of Python values can promise to find every such path; the bytes that
reach the database can be searched. So every secret this process hands out
(per-step tokens, keyring secrets) is registered here, and the storage boundary
(checkpoint and write blobs in the saver, event bodies in
:meth:`~langgraph_warden.events.Event.create`) masks every occurrence of it, in
its common encodings, before the bytes are digested and written.

What is searched for: the secret as UTF-8; JSON-escaped (as ``json.dumps``
writes a string's inside, with and without ``ensure_ascii``); Python-``repr``-
escaped (both quote styles, also of its bytes); URL-encoded (``quote`` with and
without ``/`` safe, ``quote_plus``); and base64 / base64url of its UTF-8 bytes —
standalone, and the characters that depend only on the secret at each of the
three byte alignments, so a secret inside a larger base64 run (an HTTP ``Basic``
header) is found too. A secret made only of characters no escaping changes
(``A-Za-z0-9-_.~``: every token minted here, most API keys) looks the same in
every escaped form. One with other characters is found by its longest run of
those (the *anchor*, at least 6 long) and matched around it by a pattern that
accepts each other character raw, URL-encoded or escaped any number of times (a
repr of a repr inside a JSON event body); without such a run, its escaped forms
are enumerated to depth two (:func:`encodings`).

How it is masked: in stored blobs, by a mask of the SAME BYTE LENGTH made of
``[REDACTED]`` and ``*`` (all ``*`` below 10 bytes). Checkpoint and write
blobs are msgpack, whose strings are length-prefixed; event bodies are canonical
JSON. A same-length ASCII mask that holds no quote, backslash or control byte
keeps both valid and decodable: the msgpack string keeps its length, the JSON
string stays a string (a match that starts or ends inside a JSON escape is
widened to the whole escape; a ``{"$bytes": ...}`` value is decoded, masked as
bytes and encoded again). A canonical body that would still not parse is
rebuilt from its decoded value instead. In memory and in logs, where no length
is fixed, the text becomes ``[REDACTED]``.

Cost: with no live secret every scrubber returns its input after one attribute
read (~0.1 µs). With live secrets, one ``bytes.find`` of a (up to) 32-byte window
per pattern group over the blob — a signer's tokens share their JWT header, so
any number of live tokens costs about four searches; a keyring secret about four
more (~3-4 µs each over 15 KB). A blob without a match is returned unchanged
(the same object).

Lifetime: a per-step token stays registered until its expiry plus
``margin_seconds`` (it can still sit in a pending exception or in graph state
after its step), a keyring secret for the life of the process. Expired entries
are pruned in batches, so memory is bounded by issue rate x (TTL + margin).
Secrets shorter than :data:`MIN_SECRET_LENGTH` are refused (a warning is
logged, never the value): masking every occurrence of a short string would
corrupt unrelated stored data.

Logs: :class:`SecretLogFilter` scrubs the message, its args and the formatted
exception of every record of the ``langgraph_warden`` logger hierarchy. Logger
filters do not apply to child loggers, so it is installed on import through the
log-record factory (records of other loggers pass untouched), and on the
``langgraph_warden`` logger itself.

This module is core: it imports nothing from ``guards`` or ``checkpointers``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from .secret_forms import MIN_SECRET_LENGTH, Anchored, byte_encodings, encodings, plan
from .secret_patterns import REDACTED, Patterns, mask
from .secret_walk import RedactedObject, Walker

__all__ = [
    "MIN_SECRET_LENGTH",
    "DEFAULT_MARGIN_SECONDS",
    "REDACTED",
    "Patterns",
    "RedactedObject",
    "SecretRegistry",
    "SecretLogFilter",
    "registry",
    "register",
    "forget",
    "encodings",
    "byte_encodings",
    "mask",
    "contains",
    "scrub_bytes",
    "scrub_blob",
    "scrub_canonical",
    "scrub_text",
    "scrub_value",
    "redact_exception",
]

log = logging.getLogger(__name__)

#: How long a secret with an expiry stays registered after it (seconds).
DEFAULT_MARGIN_SECONDS = 600.0
#: Expired entries are pruned at most this often (seconds), in one batch.
_PRUNE_EVERY = 30.0


# --------------------------------------------------------------------------- the registry


class SecretRegistry:
    """The secrets live in this process, thread-safe; scrubbers read an immutable snapshot.

    ``register``/``forget`` take a lock and publish a new :class:`Patterns`; the
    scrubbers read the current one without locking. Empty registry: ``patterns()``
    is None and every scrubber returns its input.
    """

    def __init__(self, *, margin_seconds: float = DEFAULT_MARGIN_SECONDS, clock: Callable[[], float] = time.time) -> None:
        if not (isinstance(margin_seconds, (int, float)) and margin_seconds >= 0):
            raise ValueError(f"margin_seconds={margin_seconds!r}; pass a non-negative number of seconds")
        self.margin_seconds = float(margin_seconds)
        self.clock = clock
        self._lock = threading.Lock()
        self._deadlines: dict[str, float] = {}  # secret -> drop after (inf: never)
        self._forms: dict[str, tuple[list[str], Anchored | None]] = {}
        self._snap: Patterns | None = None
        self._next_prune = math.inf

    def __len__(self) -> int:
        return len(self._deadlines)

    def __contains__(self, secret: object) -> bool:
        return secret in self._deadlines

    def register(self, secret: str, *, expires_at: float | None = None) -> bool:
        """Scrub ``secret`` from storage and logs until ``expires_at`` + margin (None: for the life of the process).

        Registering again keeps the later deadline. False if it was refused (not a
        str, or shorter than :data:`MIN_SECRET_LENGTH`: a warning is logged, without it).
        """
        if not isinstance(secret, str) or not secret:
            return False
        if len(secret) < MIN_SECRET_LENGTH:
            log.warning(
                "a secret of %d characters was handed out; secrets shorter than %d characters cannot be scrubbed "
                "from storage safely and are not registered — use a longer secret", len(secret), MIN_SECRET_LENGTH,
            )
            return False
        deadline = math.inf if expires_at is None else float(expires_at) + self.margin_seconds
        known = self._deadlines.get(secret)
        if known is not None and known >= deadline:
            return True
        forms = plan(secret) if known is None else None
        with self._lock:
            known = self._deadlines.get(secret)
            if known is not None and known >= deadline:
                return True
            self._deadlines[secret] = deadline
            if known is None:
                self._forms[secret] = forms or plan(secret)
                self._snap = Patterns._build({secret: self._forms[secret]}, self._snap)
            if deadline < math.inf:
                self._next_prune = min(self._next_prune, deadline)
        return True

    def forget(self, secret: str) -> bool:
        """Stop scrubbing ``secret`` (tests; a secret known to be dead everywhere). True if it was registered."""
        with self._lock:
            if self._deadlines.pop(secret, None) is None:
                return False
            self._forms.pop(secret, None)
            self._rebuild()
        return True

    def clear(self) -> None:
        """Forget every secret (tests)."""
        with self._lock:
            self._deadlines.clear()
            self._forms.clear()
            self._rebuild()

    def prune(self, now: float | None = None) -> int:
        """Drop the secrets whose deadline has passed; returns how many."""
        now = self.clock() if now is None else now
        with self._lock:
            dead = [s for s, d in self._deadlines.items() if d <= now]
            for s in dead:
                del self._deadlines[s]
                del self._forms[s]
            if dead:
                self._rebuild()
            else:
                live = [d for d in self._deadlines.values() if d < math.inf]
                self._next_prune = max(min(live), now + _PRUNE_EVERY) if live else math.inf
        return len(dead)

    def _rebuild(self) -> None:  # holds the lock
        self._snap = Patterns._build(self._forms) if self._forms else None
        now = self.clock()
        live = [d for d in self._deadlines.values() if d < math.inf]
        self._next_prune = max(min(live), now + _PRUNE_EVERY) if live else math.inf

    def patterns(self, extra: Iterable[str] = ()) -> Patterns | None:
        """The current snapshot (pruned if due), plus ``extra`` secrets; None if there is nothing to look for."""
        snap = self._snap
        if snap is not None and self._next_prune <= self.clock():
            self.prune()
            snap = self._snap
        if extra:
            extra = [s for s in extra if s]
            if extra:
                return snap.plus(extra) if snap is not None else Patterns.compile(extra)
        return snap

    # -- scrubbers ------------------------------------------------------------------

    def contains(self, data: Any, extra: Iterable[str] = ()) -> bool:
        p = self.patterns(extra)
        return p is not None and p.contains(data)

    def scrub_bytes(self, data: Any) -> Any:
        """Same-length masking of a blob; ``data`` itself when nothing is found (or nothing is live)."""
        if self._snap is None or not data:
            return data
        p = self.patterns()
        return data if p is None else p.scrub_bytes(data)

    def scrub_blob(self, type_: str | None, blob: Any) -> Any:
        """A serialised value as a serde wrote it (``dumps_typed``): JSON-aware for ``json``, bytes otherwise."""
        if self._snap is None or not blob:
            return blob
        p = self.patterns()
        if p is None:
            return blob
        return p.scrub_json(blob) if type_ == "json" else p.scrub_bytes(blob)

    def scrub_canonical(self, body: bytes) -> bytes:
        """A canonical-JSON event body, masked (see :meth:`Patterns.scrub_canonical`)."""
        if self._snap is None:
            return body
        p = self.patterns()
        return body if p is None else p.scrub_canonical(body)

    def scrub_text(self, text: str, extra: Iterable[str] = ()) -> str:
        """Text with every form of every live secret (and of ``extra``) replaced by ``[REDACTED]``."""
        if (self._snap is None and not extra) or not isinstance(text, str):
            return text
        p = self.patterns(extra)
        return text if p is None else p.scrub_text(text)

    def scrub_value(self, value: Any, extra: Iterable[str] = ()) -> Any:
        """A copy of ``value`` without live secrets, to any depth (best effort); ``value`` itself if clean.

        str/bytes are scrubbed; lists, tuples (named too), sets, dicts and any other
        ``Mapping``/``Sequence`` are rebuilt when an item changed (as their own type when its
        constructor takes the items, else as the plain container); an object with a
        ``__dict__`` is shallow-copied and its attributes scrubbed; an object whose own
        ``repr``/``str`` still shows a secret is replaced by a :class:`RedactedObject`.
        Exceptions met on the way are redacted in place. Nothing the caller holds is mutated
        except those exceptions.
        """
        p = self.patterns(extra)
        if p is None:
            return value
        return Walker(p).value(value)

    def redact_exception(self, exc: BaseException, extra: Iterable[str] = ()) -> bool:
        """Remove live secrets (and ``extra``) from an exception in place; True if anything changed.

        Its args, notes, attributes (``__dict__``, slots, ``OSError.filename`` and the like) to
        any depth, its cause/context chain and the members of exception groups. An exception
        whose own ``__str__``/``__repr__`` still shows a secret gets a same-named subclass that
        scrubs them. Best effort; the storage scrubbers are the guarantee.
        """
        p = self.patterns(extra)
        if p is None:
            return False
        walker = Walker(p)
        walker.exception(exc)
        return walker.changed


#: The process-wide registry every part of the package uses. Process-wide on purpose: a secret a
#: provider hands out in one part (the broker) must be masked wherever it surfaces (the ledger's storage
#: boundary, a log record, another guard's exception), and those parts share nothing else.
registry = SecretRegistry()

register = registry.register
forget = registry.forget
contains = registry.contains
scrub_bytes = registry.scrub_bytes
scrub_blob = registry.scrub_blob
scrub_canonical = registry.scrub_canonical
scrub_text = registry.scrub_text
scrub_value = registry.scrub_value
redact_exception = registry.redact_exception


# --------------------------------------------------------------------------- logs

_HIERARCHY = "langgraph_warden"
_exc_formatter = logging.Formatter()


class SecretLogFilter(logging.Filter):
    """Scrubs live secrets from a record's message, args, exception and stack text. Never drops a record."""

    def __init__(self, secrets: SecretRegistry | None = None) -> None:
        super().__init__()
        self.secrets = secrets or registry

    def filter(self, record: logging.LogRecord) -> bool:
        reg = self.secrets
        if reg._snap is None or getattr(record, "_warden_scrubbed", False):
            return True
        p = reg.patterns()
        if p is None:
            return True
        try:
            message = record.getMessage()
            clean = p.scrub_text(message)
            if clean is not message:
                record.msg, record.args = clean, None
            exc = record.exc_info[1] if isinstance(record.exc_info, tuple) and len(record.exc_info) == 3 else None
            if exc is not None:
                reg.redact_exception(exc)
                if not record.exc_text:
                    record.exc_text = _exc_formatter.formatException(record.exc_info)  # type: ignore[arg-type]
            if record.exc_text:
                record.exc_text = p.scrub_text(record.exc_text)
            if record.stack_info:
                record.stack_info = p.scrub_text(record.stack_info)
            record._warden_scrubbed = True
        except Exception:  # noqa: BLE001 - logging must go on
            pass
        return True


_log_filter = SecretLogFilter()


def _install_log_filter() -> None:
    """Scrub every record of the ``langgraph_warden`` hierarchy, including loggers created later."""
    if getattr(logging, "_langgraph_warden_redaction", False):
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        if registry._snap is not None:
            name = record.name
            # makeLogRecord (structlog's formatter, e.g. on Agent Server) builds records with name None.
            if isinstance(name, str) and (name == _HIERARCHY or name.startswith(_HIERARCHY + ".")):
                _log_filter.filter(record)
        return record

    logging.setLogRecordFactory(factory)
    logging.getLogger(_HIERARCHY).addFilter(_log_filter)
    logging._langgraph_warden_redaction = True  # type: ignore[attr-defined]


_install_log_filter()
