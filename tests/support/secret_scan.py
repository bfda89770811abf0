"""Where a leaked secret would show, and the shapes a careless tool hides one in. Tests only.

``forms`` is written here independently of ``langgraph_warden.redaction.encodings``:
the scanner must not share a blind spot with the scrubber it checks.
"""

from __future__ import annotations

import base64
import glob
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

from sqlalchemy import Engine, MetaData, inspect, select


def forms(secret: str) -> dict[str, bytes]:
    """The encodings a stored secret must not appear in (name -> bytes)."""
    raw = secret.encode()
    basic = b"user:" + raw  # an HTTP Basic header: the secret starts at byte 5 of the encoded text
    inner = base64.b64encode(basic).decode()[7 : (8 * len(basic)) // 6]  # the characters only the secret decides
    out = {
        "raw": raw,
        "json": json.dumps(secret)[1:-1].encode(),
        "json-utf8": json.dumps(secret, ensure_ascii=False)[1:-1].encode(),
        "url": quote(secret, safe="").encode(),
        "url-path": quote(secret).encode(),
        "url-plus": quote_plus(secret).encode(),
        "repr": repr(secret)[1:-1].encode(),
        "repr-in-json": json.dumps(repr(secret)[1:-1], ensure_ascii=False)[1:-1].encode(),
        "repr-in-repr": repr(repr(secret)[1:-1] + "\"'")[1:-4].encode(),
        "base64": base64.b64encode(raw),
        "base64url": base64.urlsafe_b64encode(raw).rstrip(b"="),
        "basic-auth": inner.encode(),
    }
    if secret.count(".") == 2:  # a JWT: its signature alone is what makes it valid
        out["jwt-signature"] = secret.rsplit(".", 1)[1].encode()
    return out


def _as_bytes(value: Any) -> bytes:
    if value is None:
        return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value).encode("utf-8", "surrogatepass")


def table_bytes(engine: Engine) -> dict[str, bytes]:
    """Every column of every row of every table, as bytes, per table."""
    meta = MetaData()
    names = inspect(engine).get_table_names()
    meta.reflect(engine, only=names)
    out: dict[str, bytes] = {}
    with engine.connect() as conn:
        for name in names:
            rows = conn.execute(select(meta.tables[name])).all()
            out[f"table {name}"] = b"\x00".join(_as_bytes(v) for row in rows for v in row)
    return out


def sqlite_file_bytes(engine: Engine) -> dict[str, bytes]:
    """The raw bytes of the SQLite database file, its -wal and -shm (empty on other databases)."""
    if engine.dialect.name != "sqlite":
        return {}
    path = engine.url.database
    files = sorted(glob.glob(path + "*"))
    assert path in files, files
    return {f"file {Path(f).name}": Path(f).read_bytes() for f in files}


def leaks(haystacks: Mapping[str, bytes], secrets: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(where, which secret, which encoding) for every encoding of every secret found."""
    return [
        (where, label, name)
        for label, secret in secrets.items()
        for name, form in forms(secret).items()
        for where, data in haystacks.items()
        if form in data
    ]


# --------------------------------------------------------------------------- hiding places


class Headers(Mapping):
    """A case-insensitive header mapping, like an HTTP client's (not a dict)."""

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._d = {str(k).lower(): (k, v) for k, v in dict(data or {}).items()}

    def __getitem__(self, key: str) -> Any:
        return self._d[key.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._d.values())

    def __len__(self) -> int:
        return len(self._d)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


class Opaque:
    """Holds a value privately and shows it only through its own ``__repr__``."""

    __slots__ = ("_inner",)

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __repr__(self) -> str:
        return f"<Opaque {self._inner!r}>"


class DetailError(Exception):
    """Keeps the detail in an attribute, not in args; only ``__str__`` shows it."""

    def __init__(self, message: str, detail: Any) -> None:
        super().__init__(message)
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.args[0]}: {self.detail!r}"


class LoudError(Exception):
    """Shows what it holds through a custom ``__repr__`` and ``__str__`` (args stay empty)."""

    def __init__(self, payload: Any) -> None:
        super().__init__()
        self._payload = payload

    def __repr__(self) -> str:
        return f"LoudError(upstream said {self._payload!r})"

    __str__ = __repr__
