"""The canonical encoding is deterministic and injective (property tests), and refuses ambiguity."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langgraph_warden import canonical
from langgraph_warden.canonical import CanonicalEncodingError

aware_datetimes = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(timezone.utc)
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
    | st.binary(max_size=64)
    | aware_datetimes
)
values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)


def _same(a, b) -> bool:
    """Structural equality that tells 1 from 1.0 from True and -0.0 from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@settings(max_examples=400, deadline=None)
@given(values)
def test_roundtrip_proves_injective(value):
    # decode(encode(x)) == x for every x means encode never maps two values to the same bytes.
    assert _same(canonical.decode(canonical.encode(value)), value)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=6), st.integers(), max_size=8))
def test_deterministic_regardless_of_insertion_order(d):
    reordered = dict(reversed(list(d.items())))
    assert canonical.encode(d) == canonical.encode(reordered)
    assert canonical.digest(d) == canonical.digest(reordered)


@settings(max_examples=300, deadline=None)
@given(values, values)
def test_distinct_values_distinct_bytes(a, b):
    if not _same(a, b):
        assert canonical.encode(a) != canonical.encode(b)


def test_exact_bytes_are_stable():
    value = {"b": [1, 2.5, None, True], "a": "é", "$x": b"\x00\xff", "t": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)}
    assert canonical.encode(value) == (
        '{"$$x":{"$bytes":"AP8="},"a":"é","b":[1,2.5,null,true],"t":{"$datetime":"2026-01-02T03:04:05.000000Z"}}'
    ).encode("utf-8")


def test_user_keys_cannot_impersonate_tags():
    assert canonical.encode({"$bytes": "AP8="}) != canonical.encode(b"\x00\xff")
    assert canonical.decode(canonical.encode({"$bytes": "AP8="})) == {"$bytes": "AP8="}


def test_int_float_and_bool_stay_distinct():
    assert len({canonical.encode(1), canonical.encode(1.0), canonical.encode(True)}) == 3


def test_timezones_normalised_to_utc():
    plus_two = timezone(timedelta(hours=2))
    assert canonical.encode(datetime(2026, 1, 1, 14, tzinfo=plus_two)) == canonical.encode(
        datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    )


@pytest.mark.parametrize(
    "bad, where",
    [
        ({"x": float("nan")}, "$.x"),
        ({"x": [float("inf")]}, "$.x[0]"),
        ({"when": datetime(2026, 1, 1)}, "$.when"),
        ({1: "int key"}, "$"),
        ({"obj": object()}, "$.obj"),
    ],
)
def test_refusals_name_the_path(bad, where):
    with pytest.raises(CanonicalEncodingError) as info:
        canonical.encode(bad)
    assert str(info.value).startswith(where)
