"""Names of people and teams (a run's owner, an approver): which characters they may hold, and
when two of them are the same person.

Why: separation of duties compares the approver's name with the run's owner (and the workload).
An exact string comparison lets the owner approve their own run as ``ALICE@example.com``, as
``alice@EXAMPLE.com``, as fullwidth ``ａｌｉｃｅ@example.com`` or with an invisible character
appended. So names are compared by an *identity key*: NFKC-normalised and case-folded, with
whitespace runs collapsed; and a name is refused outright if it holds a character a person
reading it cannot see or that changes how it is displayed:

* control characters (Unicode category ``Cc``: NUL, newline, tab, ESC ...),
* format characters (``Cf``: zero-width space and joiners, bidi controls, the BOM, soft hyphen ...),
* surrogates (``Cs``), private-use characters (``Co``), line and paragraph separators (``Zl``/``Zp``),
* the other *default-ignorable* code points of Unicode (variation selectors, the combining
  grapheme joiner, Hangul fillers ...), which render as nothing.

This module is the core primitive (the charter uses it); the approval module builds
``normalize_identity``/``is_party`` on it. A *name* stays as given in records; only comparisons
use the key. The key does not catch look-alike letters of other scripts (Cyrillic ``а`` for Latin
``a``): authenticated (signed) approvals are the defence that does not depend on spelling.
"""

from __future__ import annotations

import unicodedata

__all__ = ["forbidden_characters", "describe_character", "identity_key"]

_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})

#: Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties), inclusive: characters
#: that render as nothing. Most are ``Cf``; these ranges add the ones of other categories.
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x3164, 0x3164),
    (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8), (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)


def _is_forbidden(ch: str) -> bool:
    if unicodedata.category(ch) in _FORBIDDEN_CATEGORIES:
        return True
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _DEFAULT_IGNORABLE)


_CATEGORY_WORDS = {"Cc": "a control character", "Cf": "a format character", "Cs": "a surrogate",
                   "Co": "a private-use character", "Cn": "an unassigned code point"}


def describe_character(ch: str) -> str:
    """``U+200B (ZERO WIDTH SPACE)`` — how an error names a character."""
    category = unicodedata.category(ch)
    return f"U+{ord(ch):04X} ({unicodedata.name(ch, '') or _CATEGORY_WORDS.get(category, category)})"


def forbidden_characters(name: str) -> list[tuple[int, str]]:
    """(index, character) of every control, format or invisible character in ``name``."""
    return [(i, ch) for i, ch in enumerate(name) if _is_forbidden(ch)]


def _nfkc_casefold(text: str) -> str:
    # Case folding can produce text that is no longer NFKC (e.g. U+0130), hence the second pass.
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def identity_key(name: str) -> str:
    """The form two names are compared in: NFKC, case-folded, whitespace collapsed and trimmed.

    Lenient on purpose: characters :func:`forbidden_characters` would refuse are dropped, so a
    recorded name that holds one still matches its visible spelling (comparisons fail closed).
    Callers that accept a name refuse such characters first.
    """
    visible = "".join(ch for ch in name if not _is_forbidden(ch))
    key = "".join(ch for ch in _nfkc_casefold(visible) if not _is_forbidden(ch))
    return " ".join(key.split())
