"""Canonical JSON: the one byte encoding every writer and verifier hashes.

Why one encoding: a hash chain is only verifiable if the verifier produces exactly
the bytes the writer hashed. This module is the single definition used by the
ledger, the guards, the credential broker and the offline verifier.

Rules (version 1):

* UTF-8, object keys sorted by code point, no insignificant whitespace.
* ``None``/``bool``/``int``/``str``/``list``/``tuple``/``dict`` map to JSON
  (tuples encode as lists). Dict keys must be ``str``.
* ``float`` must be finite; it is written as Python's shortest round-trip
  ``repr`` so ``1`` (int) and ``1.0`` (float) stay distinct. NaN and ±inf are
  refused: JSON cannot carry them and implementations disagree on them.
* ``bytes`` encode as ``{"$bytes": "<base64>"}``; timezone-aware
  ``datetime`` as ``{"$datetime": "<ISO-8601 in UTC>"}``. Naive datetimes are
  refused (their instant is ambiguous).
* A user key that begins with ``$`` gets one more ``$`` prepended, so no user
  data can impersonate a tagged value. This keeps the encoding injective:
  :func:`decode` recovers the value from the bytes.

:func:`encode` runs on every commit, so it takes an orjson fast path when the
value is made only of types whose orjson bytes are known to equal the reference
encoder's (see :func:`_scan`); anything else goes to :func:`_encode_reference`,
which stays the definition.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = [
    "CANONICAL_VERSION",
    "CanonicalEncodingError",
    "encode",
    "decode",
    "digest",
    "digest_bytes",
    "datetime_text",
]

CANONICAL_VERSION = 1

_BYTES_TAG = "$bytes"
_DATETIME_TAG = "$datetime"

_encoder = json.JSONEncoder(
    ensure_ascii=False,
    allow_nan=False,
    sort_keys=True,
    separators=(",", ":"),
)


class CanonicalEncodingError(TypeError, ValueError):
    """A value cannot be canonically encoded; the message names where it is."""


def _normalise(value: Any, path: str) -> Any:
    # Fast paths first: most event and policy data is plain JSON.
    if value is None or value is True or value is False or type(value) is str or type(value) is int:
        return value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalEncodingError(
                    f"{path}: object key {key!r} is {type(key).__name__}; canonical JSON keys must be str"
                )
            out[("$" + key) if key.startswith("$") else key] = _normalise(item, f"{path}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_normalise(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, bool):  # bool subclasses
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CanonicalEncodingError(f"{path}: {value!r} is not finite; canonical JSON refuses NaN and infinity")
        return float(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {_BYTES_TAG: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise CanonicalEncodingError(
                f"{path}: naive datetime {value.isoformat()}; pass a timezone-aware datetime"
            )
        utc = value.astimezone(UTC)
        return {_DATETIME_TAG: utc.isoformat(timespec="microseconds").replace("+00:00", "Z")}
    raise CanonicalEncodingError(
        f"{path}: {type(value).__name__} is not canonically encodable; "
        "convert it to str/int/float/bool/None/list/dict/bytes/datetime first"
    )


def _encode_reference(value: Any) -> bytes:
    """The definition of the encoding (and of its error messages); slow but plain."""
    return _encoder.encode(_normalise(value, "$")).encode("utf-8")


class _Fallback(Exception):
    """The fast path cannot vouch for this value; use the reference encoder."""


# Exact types orjson writes exactly as the reference does (verified over every code
# point for str; ints beyond 64 bits make orjson raise, which falls back).
_PLAIN = frozenset({str, int, bool, type(None)})


def _scan(value: Any) -> int:
    """Vouch for ``value`` (raise :class:`_Fallback` otherwise); return how many tags it will emit.

    Exact types only: floats (orjson formats some differently, e.g. ``1e-7``, and
    writes NaN as ``null``), UUIDs, enums, ``orjson.Fragment`` and subclasses of
    anything are left to the reference, which refuses or converts them its own way.
    """
    t = type(value)
    if t is dict:
        tags = 0
        for key, item in value.items():
            if type(key) is not str:
                raise _Fallback
            if type(item) not in _PLAIN:
                tags += _scan(item)
        return tags
    if t is list or t is tuple:
        tags = 0
        for item in value:
            if type(item) not in _PLAIN:
                tags += _scan(item)
        return tags
    if t in _PLAIN:
        return 0
    if t is bytes or t is datetime:
        return 1  # written by _default as a one-key tag object
    raise _Fallback


def _datetime_text(value: datetime) -> str:
    """What the reference writes for an aware datetime, about a third cheaper than isoformat.

    ``isoformat`` pads the year to four digits and, at ``timespec="microseconds"``,
    always writes six fraction digits; the UTC offset it appends is ``+00:00``,
    which the reference turns into ``Z``. Pinned against the reference by a property test.
    """
    u = value.astimezone(UTC)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (u.year, u.month, u.day, u.hour, u.minute, u.second, u.microsecond)


def datetime_text(value: datetime) -> str:
    """The text the encoding writes for an aware datetime (inside its ``$datetime`` tag)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise TypeError(f"naive datetime {value.isoformat()}; pass a timezone-aware datetime")
    return _datetime_text(value)


def _default(value: Any) -> Any:
    # Only exact bytes and datetime get here (see _scan); the rest raises, i.e. falls back.
    t = type(value)
    if t is datetime and value.tzinfo is not None and value.utcoffset() is not None:
        return {_DATETIME_TAG: _datetime_text(value)}
    if t is bytes:
        return {_BYTES_TAG: base64.b64encode(value).decode("ascii")}
    raise _Fallback


_ORJSON_OPTIONS = (
    orjson.OPT_SORT_KEYS  # sorts by UTF-8 bytes, i.e. by code point, as Python does
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


def encode(value: Any) -> bytes:
    """Return the canonical UTF-8 bytes of ``value``.

    Fast path, then a check: every ``"$`` in the output must be one of the tags
    ``_scan`` counted, otherwise a user key (which needs escaping) or a string
    starting with ``$`` is present and the reference encoder decides.
    """
    try:
        tags = _scan(value)
        out = orjson.dumps(value, default=_default, option=_ORJSON_OPTIONS)
    except (_Fallback, orjson.JSONEncodeError, RecursionError):
        return _encode_reference(value)
    if out.count(b'"$') != tags:
        return _encode_reference(value)
    return out


def _revive(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1:
            (key, item), = value.items()
            if key == _BYTES_TAG and isinstance(item, str):
                return base64.b64decode(item, validate=True)
            if key == _DATETIME_TAG and isinstance(item, str):
                return datetime.fromisoformat(item.replace("Z", "+00:00"))
        return {(k[1:] if k.startswith("$") else k): _revive(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_revive(v) for v in value]
    return value


def revive(value: Any) -> Any:
    """Turn a parsed canonical JSON value back into Python values (tags, escaped keys)."""
    return _revive(value)


def decode(data: bytes | str) -> Any:
    """Inverse of :func:`encode` (tuples come back as lists)."""
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    return _revive(json.loads(text))


def digest_bytes(data: bytes) -> str:
    """``sha256:<hex>`` of raw bytes: the digest format used across the package."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest(value: Any) -> str:
    """``sha256:<hex>`` of the canonical encoding of ``value``."""
    return digest_bytes(encode(value))
