"""The text forms a live secret is searched for, and the matcher for secrets no escaping leaves alone.

Why its own module: which encodings count as "the secret" (JSON, repr, URL, base64 at every
alignment) and how a secret with special characters is matched around its plain *anchor* are
decided once, when a secret is registered; the scrubbers (:mod:`langgraph_warden.secret_patterns`)
only search for what is planned here. The catalogue of forms is described in
:mod:`langgraph_warden.redaction`.
"""

from __future__ import annotations

import base64
import json
import re
import string
from urllib.parse import quote, quote_plus

__all__ = ["MIN_SECRET_LENGTH", "Anchored", "encodings", "byte_encodings", "base64_variants", "plan"]

#: Shorter secrets are not registered: their patterns would match unrelated data.
MIN_SECRET_LENGTH = 8

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


def base64_variants(raw: bytes) -> list[str]:
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
    forms = once | twice | set(_url_variants(secret)) | set(base64_variants(secret.encode("utf-8", "surrogatepass")))
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


class Anchored:
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


def plan(secret: str) -> tuple[list[str], Anchored | None]:
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
    b64 = [f for f in set(base64_variants(secret.encode("utf-8", "surrogatepass"))) if len(f) >= MIN_SECRET_LENGTH]
    return b64, Anchored(secret, start, end)

