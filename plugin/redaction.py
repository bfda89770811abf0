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

import base64
import binascii
import copy
import dataclasses
import json
import logging
import math
import re
import string
import threading
import time
import types
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from typing import Any
from urllib.parse import quote, quote_plus

import orjson

from . import canonical

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

#: Shorter secrets are not registered: their patterns would match unrelated data.
MIN_SECRET_LENGTH = 8
#: How long a secret with an expiry stays registered after it (seconds).
DEFAULT_MARGIN_SECONDS = 600.0
REDACTED = "[REDACTED]"
#: Expired entries are pruned at most this often (seconds), in one batch.
_PRUNE_EVERY = 30.0


def mask(n: int) -> str:
    """The same-length mask: ``[REDACTED]`` padded with ``*`` (all ``*`` below 10 characters)."""
    return REDACTED + "*" * (n - len(REDACTED)) if n >= len(REDACTED) else "*" * n


# --------------------------------------------------------------------------- encodings


def _json(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)[1:-1]


def _json_ascii(s: str) -> str:
    return json.dumps(s)[1:-1]


def _repr_variants(s: str) -> list[str]:
    """The inside of ``repr`` of a string holding ``s``, for each quoting ``repr`` may choose."""
    out = [repr(s)[1:-1], repr(s + "'\"")[1:-4]]  # own choice; single quotes with \' (both kinds present)
    if '"' not in s:
        out.append(repr(s + "'")[1:-2])  # double quotes, ' unescaped (the text holds ' but no ")
    return out


def _bytes_repr_variants(s: str) -> list[str]:
    b = s.encode("utf-8", "surrogatepass")
    out = [repr(b)[2:-1], repr(b + b"'\"")[2:-4]]
    if b'"' not in b:
        out.append(repr(b + b"'")[2:-2])
    return out


def _escapes(s: str) -> list[str]:
    return [_json(s), _json_ascii(s), *_repr_variants(s)]


def _url_variants(s: str) -> list[str]:
    out = [quote(s, safe=""), quote(s, safe="/"), quote_plus(s), quote_plus(s, safe="/")]
    out += [re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), v) for v in out if "%" in v]
    return out


def _base64_variants(raw: bytes) -> list[str]:
    """base64/base64url of ``raw``: standalone (with and without padding), and at each alignment
    the run of characters that depends on ``raw`` alone (found inside a longer base64 text)."""
    out: list[str] = []
    n = len(raw)
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        full = enc(raw).decode("ascii")
        out += [full, full.rstrip("=")]
        for k in (0, 1, 2):
            text = enc(b"\x00" * k + raw).decode("ascii")
            start, end = -(-8 * k // 6), (8 * (k + n)) // 6  # characters made only of raw's bits
            out.append(text[start:end])
    return out


def encodings(secret: str) -> list[str]:
    """Every text form of ``secret`` the scrubbers look for (longest first, no duplicates).

    The raw text; JSON- and repr-escaped, once and twice; its bytes' repr; URL-encoded;
    base64/base64url (see the module docstring).
    """
    once = {secret, *_escapes(secret), *_bytes_repr_variants(secret)}
    twice = {e for v in once for e in _escapes(v)}
    forms = once | twice | set(_url_variants(secret)) | set(_base64_variants(secret.encode("utf-8", "surrogatepass")))
    return sorted((f for f in forms if len(f) >= MIN_SECRET_LENGTH), key=lambda f: (-len(f), f))


def byte_encodings(secret: str) -> list[bytes]:
    """:func:`encodings` as UTF-8 bytes."""
    return [f.encode("utf-8", "surrogatepass") for f in encodings(secret)]


# --------------------------------------------------------------------------- escape-agnostic matching

#: Characters that JSON, repr and URL quoting all leave as they are.
_PLAIN = frozenset(string.ascii_letters + string.digits + "-_.~")
#: A secret holding other characters and a run of at least this many plain ones is found by
#: that run (its *anchor*, the same in every escaped form), then matched around it by a pattern
#: that accepts each other character raw or escaped, any number of times over.
_MIN_ANCHOR = 6
#: At most this many bytes per character of an escaped form are looked at around an anchor.
_SPREAD = 24
_BS = r"(?:\\|%5[cC])"  # a backslash, or one URL-encoded
_SHORT = {'"': '"', "\\": "\\", "\n": "n", "\r": "r", "\t": "t", "\b": "b", "\f": "f", "'": "'", "/": "/", "\a": "a", "\v": "v"}


def _hex(text: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in text)


def _char_pattern(ch: str) -> str:
    """A regex for one character of a secret: raw, URL-encoded, or escaped (JSON, repr, bytes repr),
    after any number of backslashes (each escaping level adds some)."""
    if ch in _PLAIN:
        return re.escape(ch)
    utf8 = ch.encode("utf-8", "surrogatepass")
    if ch == "\\":
        return _BS + "+"
    cp = ord(ch)
    raw = [re.escape(ch), "".join("%" + _hex(f"{b:02x}") for b in utf8)]
    if ch == " ":
        raw.append(r"\+")
    escaped = [re.escape(_SHORT[ch])] if ch in _SHORT else []
    if cp < 0x10000:
        escaped.append("u" + _hex(f"{cp:04x}"))
    else:
        hi, lo = 0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF)
        escaped += ["u" + _hex(f"{hi:04x}") + _BS + "+u" + _hex(f"{lo:04x}"), "U" + _hex(f"{cp:08x}")]
    if cp < 0x100:
        escaped.append("x" + _hex(f"{cp:02x}"))
    if len(utf8) > 1:
        escaped.append((_BS + "+").join("x" + _hex(f"{b:02x}") for b in utf8))
    return f"(?:{_BS}*(?:{'|'.join(raw)})|{_BS}+(?:{'|'.join(escaped)}))"


class _Anchored:
    """How one secret with special characters is found: an anchor, then a regex around it."""

    __slots__ = ("anchor", "rx", "before", "after", "anchor_b", "rx_b", "before_b", "after_b")

    def __init__(self, secret: str, start: int, end: int) -> None:
        source = "".join(_char_pattern(c) for c in secret)
        self.anchor = secret[start:end]
        self.rx = re.compile(source)
        self.before, self.after = _SPREAD * start, _SPREAD * (len(secret) - end)
        self.anchor_b = self.anchor.encode("ascii")
        self.rx_b = re.compile(source.encode("utf-8", "surrogatepass"))
        self.before_b, self.after_b = 4 * self.before, 4 * self.after


def _plan(secret: str) -> tuple[list[str], _Anchored | None]:
    """The literal forms a secret is searched for, and its escape-agnostic matcher if it gets one.

    A secret made only of plain characters looks the same in every escaped form: its literal
    forms are it and its base64. One with other characters and a long enough plain run: its
    base64 forms, plus the anchored regex for every escaped and URL-encoded form, to any depth.
    Otherwise: :func:`encodings` (escapes enumerated to depth two).
    """
    best, run_start = (0, 0), 0
    for i, ch in enumerate(secret + "\x00"):
        if ch not in _PLAIN:
            if i - run_start > best[1] - best[0]:
                best = (run_start, i)
            run_start = i + 1
    start, end = best
    if end - start == len(secret) or end - start < _MIN_ANCHOR:
        return encodings(secret), None
    b64 = [f for f in set(_base64_variants(secret.encode("utf-8", "surrogatepass"))) if len(f) >= MIN_SECRET_LENGTH]
    return b64, _Anchored(secret, start, end)


# --------------------------------------------------------------------------- compiled patterns

_Groups = dict  # key window -> ((offset of the window in the pattern, pattern), ...), longest first
#: A pattern is searched for by a window of at most _WINDOW units: CPython's find is several times
#: faster for a 32-byte needle than for an 8-byte one (~4 vs ~12 µs over 15 KB).
_WINDOW = 32
_ALPHABET_SPLIT = frozenset("+/-_")  # where base64 and base64url differ


def _window(p: Any) -> tuple[int, Any]:
    """(offset, key) of the window a pattern is found by: the first one free of ``+/-_`` if any
    (so a base64 form and its base64url twin share it: one search finds both), else its prefix."""
    w = min(_WINDOW, len(p))
    text = p if isinstance(p, str) else p.decode("latin-1")
    run = 0
    for i, ch in enumerate(text):
        run = 0 if ch in _ALPHABET_SPLIT else run + 1
        if run == w:
            return i + 1 - w, p[i + 1 - w : i + 1]
    return 0, p[:w]


def _grouped(patterns: Iterable[Any], into: Mapping[Any, tuple[tuple[int, Any], ...]] | None = None) -> _Groups:
    groups: dict[Any, set[tuple[int, Any]]] = {k: set(v) for k, v in into.items()} if into else {}
    for p in patterns:
        off, key = _window(p)
        groups.setdefault(key, set()).add((off, p))
    return {k: tuple(sorted(v, key=lambda e: -len(e[1]))) for k, v in groups.items()}


def _spans(
    data: Any, groups: Mapping[Any, tuple[tuple[int, Any], ...]], lo: int = 0, hi: int | None = None
) -> list[tuple[int, int]]:
    """(start, end) of every occurrence found in ``data[lo:hi]``, unsorted (overlaps and duplicates possible)."""
    spans: list[tuple[int, int]] = []
    find, startswith = data.find, data.startswith
    hi = len(data) if hi is None else hi
    for key, entries in groups.items():
        i = find(key, lo, hi)
        while i != -1:
            for off, p in entries:
                s = i - off
                if s >= lo and startswith(p, s, hi):
                    spans.append((s, s + len(p)))
            i = find(key, i + 1, hi)
    return spans


def _anchored_spans(
    data: Any, anchored: Sequence[_Anchored], as_bytes: bool, lo: int = 0, hi: int | None = None
) -> list[tuple[int, int]]:
    """Matches (in ``data[lo:hi]``) of the escape-agnostic patterns that cover an occurrence of their anchor."""
    spans: list[tuple[int, int]] = []
    n = len(data) if hi is None else hi
    find = data.find
    for a in anchored:
        anchor, rx, before, after = (a.anchor_b, a.rx_b, a.before_b, a.after_b) if as_bytes else (a.anchor, a.rx, a.before, a.after)
        i = find(anchor, lo, n)
        while i != -1:
            j = i + len(anchor)
            for m in rx.finditer(data, max(lo, i - before), min(n, j + after)):
                if m.start() <= i and m.end() >= j:
                    spans.append(m.span())
                    break
            i = find(anchor, j, n)
    return spans


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for i, j in sorted(spans):
        if out and i <= out[-1][1]:
            if j > out[-1][1]:
                out[-1] = (out[-1][0], j)
        else:
            out.append((i, j))
    return out


_BACKSLASH, _U, _QUOTE = 0x5C, 0x75, 0x22
_HEX = frozenset(b"0123456789abcdefABCDEF")


def _escaped(buf: bytes | bytearray, pos: int) -> bool:
    """True if the byte at ``pos`` follows an odd run of backslashes (it is an escape's second byte)."""
    k = 0
    pos -= 1
    while pos >= 0 and buf[pos] == _BACKSLASH:
        k += 1
        pos -= 1
    return k % 2 == 1


def _widen_json(buf: bytes | bytearray, i: int, j: int) -> tuple[int, int] | None:
    """Widen [i, j) of a JSON text so it neither starts nor ends inside an escape sequence.

    None if the span holds an unescaped quote: it crosses a string's edge, so what matched
    is JSON syntax, not string content (a false match, left alone).
    """
    if _escaped(buf, i):
        i -= 1
    else:
        for back in (2, 3, 4, 5):  # inside the hex digits of a \\uXXXX
            p = i - back
            if p < 0:
                break
            if buf[p] == _BACKSLASH and buf[p + 1] == _U and not _escaped(buf, p) and all(c in _HEX for c in buf[p + 2 : i]):
                i = p
                break
    p, n = i, len(buf)
    while p < j:
        c = buf[p]
        if c == _BACKSLASH:
            p += 6 if p + 1 < n and buf[p + 1] == _U else 2
        elif c == _QUOTE:
            return None
        else:
            p += 1
    return i, min(max(j, p), n)


_BYTES_OPEN = b'{"$bytes":"'  # canonical's tag for bytes: base64 follows, up to the next quote


class Patterns:
    """Compiled search patterns for a set of secrets (immutable; build with :meth:`compile`).

    Three views of the same forms: ``blob`` (bytes, for msgpack and other blobs),
    ``json`` (bytes that can occur in a JSON text: no control byte)
    and ``text`` (str, for logs and in-memory values).
    """

    __slots__ = ("secrets", "blob", "json", "text", "anchored")

    def __init__(
        self, secrets: frozenset[str], blob: _Groups, json_: _Groups, text: _Groups, anchored: tuple[_Anchored, ...] = ()
    ) -> None:
        self.secrets = secrets
        self.blob = blob
        self.json = json_
        self.text = text
        self.anchored = anchored

    @classmethod
    def compile(cls, secrets: Iterable[str]) -> Patterns | None:
        """Patterns for ``secrets`` (those shorter than :data:`MIN_SECRET_LENGTH` are skipped); None if none."""
        return cls._build({s: _plan(s) for s in set(secrets) if isinstance(s, str) and len(s) >= MIN_SECRET_LENGTH})

    @classmethod
    def _build(cls, plans: Mapping[str, tuple[Sequence[str], _Anchored | None]], base: Patterns | None = None) -> Patterns | None:
        if not plans and base is None:
            return None
        texts = [f for fs, _ in plans.values() for f in fs]
        blobs = [f.encode("utf-8", "surrogatepass") for f in texts]
        jsons = [b for b in blobs if min(b) >= 0x20]  # a control byte never occurs in JSON text
        return cls(
            (base.secrets if base else frozenset()) | frozenset(plans),
            _grouped(blobs, base.blob if base else None),
            _grouped(jsons, base.json if base else None),
            _grouped(texts, base.text if base else None),
            (base.anchored if base else ()) + tuple(a for _, a in plans.values() if a is not None),
        )

    def plus(self, secrets: Iterable[str]) -> Patterns:
        """These patterns and those of ``secrets``."""
        new = {s: _plan(s) for s in set(secrets) if isinstance(s, str) and len(s) >= MIN_SECRET_LENGTH and s not in self.secrets}
        return self._build(new, self) if new else self  # type: ignore[return-value]

    def _find(self, data: Any, groups: _Groups, lo: int = 0, hi: int | None = None) -> list[tuple[int, int]]:
        spans = _spans(data, groups, lo, hi)
        if self.anchored:
            spans += _anchored_spans(data, self.anchored, not isinstance(data, str), lo, hi)
        return spans

    # -- search ------------------------------------------------------------------

    def contains(self, data: Any) -> bool:
        """True if ``data`` (bytes-like or str) holds any form of any secret."""
        if isinstance(data, str):
            return bool(self._find(data, self.text))
        return bool(self._find(bytes(data) if type(data) is not bytes else data, self.blob))

    # -- storage: same length ----------------------------------------------------------

    def scrub_bytes(self, data: Any) -> Any:
        """``data`` with every occurrence masked at the same length; ``data`` itself if none."""
        raw = data if type(data) is bytes else bytes(data)
        spans = self._find(raw, self.blob)
        if not spans:
            return data
        buf = bytearray(raw)
        for i, j in spans:
            buf[i:j] = mask(j - i).encode("ascii")
        return bytes(buf)

    def scrub_json(self, data: bytes) -> bytes:
        """A JSON document with every occurrence masked at the same length, escapes respected.

        Falls back to parsing, scrubbing the values and re-encoding (``json.dumps``) if the
        masked bytes would not parse. ``data`` itself if nothing was found.
        """
        raw = data if type(data) is bytes else bytes(data)
        out = self._mask_json(raw, None, ())
        if out is raw:
            return data
        try:
            orjson.loads(out)
        except orjson.JSONDecodeError:
            return json.dumps(self._walk_json(json.loads(raw)), ensure_ascii=False).encode("utf-8")
        return out

    def scrub_canonical(self, body: bytes) -> bytes:
        """A canonical-JSON body (:mod:`langgraph_warden.canonical`) with every occurrence masked.

        ``{"$bytes": "<base64>"}`` values are decoded, masked as bytes (same length, so the
        base64 keeps its length) and encoded again; the text around them is masked in place.
        If the result would not parse, the body is decoded, scrubbed as values and encoded
        canonically.
        """
        raw = body if type(body) is bytes else bytes(body)
        buf: bytearray | None = None
        tagged: list[tuple[int, int]] = []
        i = raw.find(_BYTES_OPEN)
        while i != -1:
            s = i + len(_BYTES_OPEN)
            e = raw.find(b'"', s)
            if e == -1:
                break
            tagged.append((s, e))
            try:
                value = binascii.a2b_base64(raw[s:e])
            except (binascii.Error, ValueError):
                value = b""
            clean = self.scrub_bytes(value) if value else value
            if clean is not value:
                text = binascii.b2a_base64(clean, newline=False)
                if len(text) != e - s:  # not canonical base64: rebuild the body from its value
                    return canonical.encode(self._walk_json(canonical.decode(raw)))
                if buf is None:
                    buf = bytearray(raw)
                buf[s:e] = text
            i = raw.find(_BYTES_OPEN, e)
        out = self._mask_json(raw, buf, tagged)
        if out is raw:
            return body
        try:
            orjson.loads(out)
        except orjson.JSONDecodeError:
            return canonical.encode(self._walk_json(canonical.decode(raw)))
        return out

    def _mask_json(self, raw: bytes, buf: bytearray | None, tagged: Sequence[tuple[int, int]]) -> bytes:
        data = bytes(buf) if buf is not None else raw
        if tagged:  # the base64 inside {"$bytes": ...} was masked as bytes: search only around it
            spans, lo = [], 0
            for s, e in tagged:
                spans += self._find(data, self.json, lo, s)
                lo = e
            spans += self._find(data, self.json, lo)
        else:
            spans = self._find(data, self.json)
        for i, j in spans:
            wide = _widen_json(buf if buf is not None else raw, i, j)
            if wide is not None:
                if buf is None:
                    buf = bytearray(raw)
                i, j = wide
                buf[i:j] = mask(j - i).encode("ascii")
        return raw if buf is None else bytes(buf)

    def _walk_json(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.scrub_text(value, same_length=True)
        if isinstance(value, (bytes, bytearray)):
            return self.scrub_bytes(bytes(value))
        if isinstance(value, dict):
            return {self._walk_json(k): self._walk_json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._walk_json(v) for v in value]
        if isinstance(value, int) and not isinstance(value, bool) and self._find(str(value), self.text):
            return mask(len(str(value)))
        return value

    # -- text ---------------------------------------------------------------------

    def scrub_text(self, text: str, *, same_length: bool = False) -> str:
        """``text`` with every occurrence replaced by ``[REDACTED]`` (or a same-length mask)."""
        spans = self._find(text, self.text)
        if not spans:
            return text
        parts: list[str] = []
        last = 0
        for i, j in _merged(spans):
            parts.append(text[last:i])
            parts.append(mask(j - i) if same_length else REDACTED)
            last = j
        parts.append(text[last:])
        return "".join(parts)


# --------------------------------------------------------------------------- in-memory values


class RedactedObject:
    """Stands in for an object whose ``repr``/``str`` showed a secret: both give the scrubbed text."""

    __slots__ = ("_repr", "_str")

    def __init__(self, repr_text: str, str_text: str | None = None) -> None:
        self._repr = repr_text
        self._str = repr_text if str_text is None else str_text

    def __repr__(self) -> str:
        return self._repr

    def __str__(self) -> str:
        return self._str


_SCALARS = (type(None), bool, int, float, complex)
#: Not walked: scalars, classes, modules, functions and methods (their text names code, not data).
_OPAQUE = (*_SCALARS, type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType)
#: How many objects one walk visits at most (a value that reaches a whole object graph stops there).
_MAX_NODES = 20_000
_EXC_ATTRS = ("filename", "filename2", "strerror", "msg", "text", "reason", "object", "name", "path")
_MAX_ITEMS = 100_000  # a Sequence/Mapping larger than this is not walked (e.g. range(10**12))


def _safe_text(fn: Callable[[Any], str], value: Any) -> str | None:
    try:
        text = fn(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not break redaction
        return None
    return text if isinstance(text, str) else None


class _Walker:
    """One best-effort, copy-on-change walk of a value (exceptions are redacted in place)."""

    def __init__(self, patterns: Patterns) -> None:
        self.p = patterns
        self.memo: dict[int, Any] = {}
        self.keep: list[Any] = []  # keeps walked objects alive, so their ids stay unique
        self.changed = False

    def leaks(self, value: Any) -> bool:
        for fn in (repr, str):
            text = _safe_text(fn, value)
            if text is not None and self.p._find(text, self.p.text):
                return True
        return False

    def stand_in(self, value: Any) -> RedactedObject:
        self.changed = True
        r = _safe_text(repr, value) or f"<{type(value).__name__}>"
        s = _safe_text(str, value)
        return RedactedObject(self.p.scrub_text(r), self.p.scrub_text(s) if s is not None else None)

    def value(self, v: Any) -> Any:
        if isinstance(v, str):
            clean = self.p.scrub_text(v)
            if clean is not v:
                self.changed = True
            return clean
        if isinstance(v, (bytes, bytearray, memoryview)):
            clean = self.p.scrub_bytes(v)
            if clean is not v:
                self.changed = True
                return type(v)(clean) if isinstance(v, (bytes, bytearray)) else clean
            return v
        if isinstance(v, _OPAQUE):
            return v
        key = id(v)
        if key in self.memo:
            return self.memo[key]
        if len(self.memo) >= _MAX_NODES:
            return v
        self.memo[key] = v  # a cycle back to v keeps v
        self.keep.append(v)
        try:
            out = self._container(v)
        except RecursionError:
            out = self.stand_in(v) if self.leaks(v) else v
        except Exception:  # noqa: BLE001 - best effort: an object that resists copying is replaced if it leaks
            out = self.stand_in(v) if self.leaks(v) else v
        self.memo[key] = out
        return out

    def _rebuild(self, v: Any, items: Any, plain: Callable[[Any], Any]) -> Any:
        self.changed = True
        if type(v) in (list, tuple, dict, set, frozenset):
            return plain(items)
        try:
            if isinstance(v, tuple) and hasattr(v, "_make"):
                return v._make(items)
            return type(v)(items)
        except Exception:  # noqa: BLE001 - a constructor we cannot call: the plain container
            return plain(items)

    def _container(self, v: Any) -> Any:
        if isinstance(v, BaseException):
            self.exception(v)
            return v
        if isinstance(v, Mapping):
            if len(v) > _MAX_ITEMS:
                return v
            pairs = [(k, x) for k, x in v.items()]
            clean = [(self.value(k), self.value(x)) for k, x in pairs]
            out: Any
            if all(a is c and b is d for (a, b), (c, d) in zip(pairs, clean, strict=True)):
                out = v
            else:
                out = self._rebuild(v, dict(clean), dict)
            return self._final(v, out)
        if isinstance(v, (list, tuple, Set)) or (isinstance(v, Sequence) and not isinstance(v, range)):
            if len(v) > _MAX_ITEMS:
                return v
            items = list(v)
            clean = [self.value(x) for x in items]
            if all(a is b for a, b in zip(items, clean, strict=True)):
                out = v
            else:
                plain = frozenset if isinstance(v, frozenset) else set if isinstance(v, Set) else tuple if isinstance(v, tuple) else list
                out = self._rebuild(v, clean, plain)
            return self._final(v, out)
        if dataclasses.is_dataclass(v):
            names = [f.name for f in dataclasses.fields(v)]
            return self._final(v, self._with_fields(v, {n: getattr(v, n) for n in names if hasattr(v, n)}, dataclass=True))
        attrs = getattr(v, "__dict__", None)
        if isinstance(attrs, dict) and attrs:
            clean_attrs = {k: self.value(x) for k, x in list(attrs.items())}
            if any(clean_attrs[k] is not x for k, x in attrs.items()):
                dup = copy.copy(v)  # never mutate the caller's object (a shared client, say)
                if dup is v or getattr(dup, "__dict__", None) is attrs:
                    return self.stand_in(v)
                dup.__dict__.update(clean_attrs)
                self.changed = True
                v = dup
        slots = [n for c in type(v).__mro__ for n in getattr(c, "__slots__", ()) if isinstance(n, str) and n not in ("__dict__", "__weakref__")]
        if slots:
            v = self._with_fields(v, {n: getattr(v, n) for n in slots if hasattr(v, n)})
        return self._final(v, v)

    def _with_fields(self, v: Any, values: Mapping[str, Any], *, dataclass: bool = False) -> Any:
        """``v``, or a copy of it whose fields (attributes) in ``values`` are scrubbed."""
        clean = {n: self.value(x) for n, x in values.items()}
        changed = {n: c for n, c in clean.items() if c is not values[n]}
        if not changed:
            return v
        self.changed = True
        if dataclass:
            try:
                return dataclasses.replace(v, **changed)
            except Exception:  # noqa: BLE001 - init=False fields, a validating __post_init__: copy instead
                pass
        dup = copy.copy(v)
        if dup is v:
            return self.stand_in(v)
        for n, c in changed.items():
            object.__setattr__(dup, n, c)
        return dup

    def _final(self, v: Any, out: Any) -> Any:
        """Builtin containers show their items, which were walked; anything else may have its own repr."""
        if type(out) in (list, tuple, dict, set, frozenset):
            return out
        return self.stand_in(out) if self.leaks(out) else out

    def exception(self, exc: BaseException) -> None:
        """Redact one exception and everything it links to, in place."""
        stack: list[BaseException | None] = [exc]
        seen: set[int] = set()
        while stack:
            cur = stack.pop()
            if cur is None or id(cur) in seen:
                continue
            seen.add(id(cur))
            self.keep.append(cur)
            self._one_exception(cur)
            stack.extend([cur.__cause__, cur.__context__])
            if isinstance(cur, BaseExceptionGroup):
                stack.extend(cur.exceptions)

    def _one_exception(self, exc: BaseException) -> None:
        try:
            args = exc.args
            clean = self.value(args)
            if clean is not args:
                exc.args = tuple(clean)
            notes = getattr(exc, "__notes__", None)
            if isinstance(notes, list):
                clean_notes = self.value(notes)
                if clean_notes is not notes:
                    exc.__notes__ = list(clean_notes)
            attrs = getattr(exc, "__dict__", None)
            if isinstance(attrs, dict):
                for k, x in list(attrs.items()):
                    if k == "__notes__":
                        continue
                    cx = self.value(x)
                    if cx is not x:
                        attrs[k] = cx
            names = [n for c in type(exc).__mro__ for n in getattr(c, "__slots__", ()) if isinstance(n, str)]
            for name in (*_EXC_ATTRS, *names):
                if attrs is not None and name in attrs:
                    continue
                try:
                    x = getattr(exc, name)
                except Exception:  # noqa: BLE001
                    continue
                if isinstance(x, _OPAQUE):
                    continue
                cx = self.value(x)
                if cx is not x:
                    try:
                        setattr(exc, name, cx)
                    except Exception:  # noqa: BLE001 - read-only: left as is
                        pass
        except Exception:  # noqa: BLE001 - redaction must never replace the step's own error
            pass
        if self.leaks(exc):
            _shield(exc)
            self.changed = True


_SHIELDED: dict[type, type] = {}
_SHIELD_LOCK = threading.Lock()


def _shield(exc: BaseException) -> None:
    """Give an exception whose own ``__str__``/``__repr__`` still shows a secret a subclass that scrubs them.

    Same name, module and qualname; ``except`` clauses and ``isinstance`` still match.
    Pickles as the original class. Fails silently where ``__class__`` cannot be assigned
    (builtin exception types, whose text comes from the args already scrubbed).
    """
    cls = type(exc)
    if getattr(cls, "__warden_shielded__", False):
        return
    with _SHIELD_LOCK:
        safe = _SHIELDED.get(cls)
        if safe is None:

            def __str__(self: BaseException) -> str:
                return scrub_text(_safe_text(cls.__str__, self) or "")

            def __repr__(self: BaseException) -> str:
                return scrub_text(_safe_text(cls.__repr__, self) or f"{cls.__name__}()")

            def __reduce__(self: BaseException) -> Any:
                state = getattr(self, "__dict__", None)
                return (cls, tuple(self.args), state or None)

            try:
                safe = type(cls.__name__, (cls,), {
                    "__str__": __str__, "__repr__": __repr__, "__reduce__": __reduce__,
                    "__module__": cls.__module__, "__qualname__": cls.__qualname__, "__warden_shielded__": True,
                    "__slots__": (),
                })
            except TypeError:
                return
            _SHIELDED[cls] = safe
    try:
        exc.__class__ = safe
    except TypeError:
        pass


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
        self._forms: dict[str, tuple[list[str], _Anchored | None]] = {}
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
        forms = _plan(secret) if known is None else None
        with self._lock:
            known = self._deadlines.get(secret)
            if known is not None and known >= deadline:
                return True
            self._deadlines[secret] = deadline
            if known is None:
                self._forms[secret] = forms or _plan(secret)
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
        return _Walker(p).value(value)

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
        walker = _Walker(p)
        walker.exception(exc)
        return walker.changed


#: The process-wide registry every part of the package uses.
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
