"""Compiled search patterns for a set of secrets, and the scrubbers of the storage boundary.

Why its own module: this is the hot path — every checkpoint blob and event body is searched here
before it is digested and written. A pattern is found by a fixed window (one ``bytes.find`` per
group of forms sharing it), then masked at the same byte length so msgpack and JSON stay valid
(see :mod:`langgraph_warden.redaction` for the rules).
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from . import canonical
from .secret_forms import MIN_SECRET_LENGTH, Anchored, plan

__all__ = ["REDACTED", "Patterns", "mask"]

REDACTED = "[REDACTED]"


def mask(n: int) -> str:
    """The same-length mask: ``[REDACTED]`` padded with ``*`` (all ``*`` below 10 characters)."""
    return REDACTED + "*" * (n - len(REDACTED)) if n >= len(REDACTED) else "*" * n


# --------------------------------------------------------------------------- compiled patterns

#: A group's entries, (offset of the window in the pattern, pattern), in chunks of at most _CHUNK
#: (adding one copies only the last chunk); every entry is tried, in no particular order.
_Chunks = tuple[tuple[tuple[int, Any], ...], ...]
_Groups = dict  # key window -> _Chunks
_CHUNK = 64
#: A pattern is searched for by a window of at most _WINDOW units: CPython's find is several times
#: faster for a 32-byte needle than for an 8-byte one (~4 vs ~12 µs over 15 KB).
_WINDOW = 32


#: A window's worth of characters free of ``+/-_`` (where base64 and base64url differ).
_RUN = re.compile("[^+/_-]{%d}" % _WINDOW)
_RUN_B = re.compile(b"[^+/_-]{%d}" % _WINDOW)


def _window(p: Any) -> tuple[int, Any]:
    """(offset, key) of the window a pattern is found by: the first one free of ``+/-_`` if any
    (so a base64 form and its base64url twin share it: one search finds both), else its prefix.
    A pattern shorter than the window is its own key."""
    if len(p) <= _WINDOW:
        return 0, p
    m = (_RUN if isinstance(p, str) else _RUN_B).search(p)
    return (m.start(), m.group()) if m is not None else (0, p[:_WINDOW])


def _with_entry(chunks: _Chunks, entry: tuple[int, Any]) -> _Chunks:
    """``chunks`` with ``entry`` added: copies the last chunk (at most ``_CHUNK`` entries) and the
    outer tuple, never the entries of the other chunks."""
    if chunks and len(chunks[-1]) < _CHUNK:
        return (*chunks[:-1], (*chunks[-1], entry))
    return (*chunks, (entry,))


def _grouped(patterns: Iterable[Any], into: Mapping[Any, _Chunks] | None = None) -> _Groups:
    """``into``'s groups (shared, not copied: they are immutable) with ``patterns`` added.

    Why not regroup everything: a process registers every credential it hands out, and many
    share a window (tokens of one issuer start alike); rebuilding all groups per registration
    made the thousandth live token cost ~16 ms to register. Adding touches only the groups
    the new patterns fall in, and in them only the last chunk, without looking for duplicates
    (callers add the forms of new secrets only; a pattern listed twice would only be matched
    twice, and masked once).
    """
    groups: dict[Any, _Chunks] = dict(into) if into else {}
    added: dict[Any, list[tuple[int, Any]]] = {}
    for p in patterns:
        off, key = _window(p)
        added.setdefault(key, []).append((off, p))
    for key, new in added.items():
        chunks = groups.get(key, ())
        if len(new) <= 4:  # a registration: a few forms of one secret
            for entry in new:
                chunks = _with_entry(chunks, entry)
        else:  # a whole set at once (compile, a rebuild after pruning)
            flat = [e for chunk in chunks for e in chunk] + new
            chunks = tuple(tuple(flat[i : i + _CHUNK]) for i in range(0, len(flat), _CHUNK))
        groups[key] = chunks
    return groups


def _spans(data: Any, groups: Mapping[Any, _Chunks], lo: int = 0, hi: int | None = None) -> list[tuple[int, int]]:
    """(start, end) of every occurrence found in ``data[lo:hi]``, unsorted (overlaps and duplicates possible)."""
    spans: list[tuple[int, int]] = []
    find, startswith = data.find, data.startswith
    hi = len(data) if hi is None else hi
    for key, chunks in groups.items():
        i = find(key, lo, hi)
        while i != -1:
            for chunk in chunks:
                for off, p in chunk:
                    s = i - off
                    if s >= lo and startswith(p, s, hi):
                        spans.append((s, s + len(p)))
            i = find(key, i + 1, hi)
    return spans


def _anchored_spans(
    data: Any, anchored: Sequence[Anchored], as_bytes: bool, lo: int = 0, hi: int | None = None
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
        self, secrets: frozenset[str], blob: _Groups, json_: _Groups, text: _Groups, anchored: tuple[Anchored, ...] = ()
    ) -> None:
        self.secrets = secrets
        self.blob = blob
        self.json = json_
        self.text = text
        self.anchored = anchored

    @classmethod
    def compile(cls, secrets: Iterable[str]) -> Patterns | None:
        """Patterns for ``secrets`` (those shorter than :data:`MIN_SECRET_LENGTH` are skipped); None if none."""
        return cls._build({s: plan(s) for s in set(secrets) if isinstance(s, str) and len(s) >= MIN_SECRET_LENGTH})

    @classmethod
    def _build(cls, plans: Mapping[str, tuple[Sequence[str], Anchored | None]], base: Patterns | None = None) -> Patterns | None:
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
        new = {s: plan(s) for s in set(secrets) if isinstance(s, str) and len(s) >= MIN_SECRET_LENGTH and s not in self.secrets}
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

