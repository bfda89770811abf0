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


# --- The orjson fast path of encode() must equal the reference encoder byte for byte. ---

import dataclasses  # noqa: E402
import enum  # noqa: E402
import uuid  # noqa: E402
from collections import OrderedDict, namedtuple  # noqa: E402

import orjson  # noqa: E402

from langgraph_warden.checkpointers.rows import checkpoint_digest, write_digest  # noqa: E402
from langgraph_warden.events import Event, head_signing_bytes  # noqa: E402


def _outcome(fn, value):
    try:
        return ("ok", fn(value))
    except Exception as exc:  # noqa: BLE001 - the type and message are what we compare
        return ("raised", type(exc), str(exc))


def _assert_same_as_reference(value):
    assert _outcome(canonical.encode, value) == _outcome(canonical._encode_reference, value)


# Surrogates included (exclude_categories=()): lone ones must fail the same way.
any_text = st.text(st.characters(exclude_categories=()), max_size=12)
tricky_text = st.sampled_from(["", "$", "$$", "$bytes", "$datetime", "\u2028\u2029", "\x00\x1f\x7f", '"\\/', "\U0001f600", "é"])
texts = any_text | tricky_text | any_text.map(lambda s: "$" + s)
wild_floats = st.floats() | st.sampled_from([1e16, 1e-7, 5e-324, -0.0, 1e22, 123456789012345678.0, float("nan"), float("-inf")])
wild_ints = st.integers() | st.sampled_from([2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**40])
offsets = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59))
wild_timezones = st.just(timezone.utc) | st.builds(timezone, offsets) | st.timezones()
wild_datetimes = st.datetimes(timezones=wild_timezones, allow_imaginary=True) | st.datetimes()  # naive ones are refused
wild_scalars = st.none() | st.booleans() | wild_ints | wild_floats | texts | st.binary(max_size=16) | wild_datetimes
wild_values = st.recursive(
    wild_scalars,
    lambda children: st.lists(children, max_size=4)
    | st.lists(children, max_size=4).map(tuple)
    | st.dictionaries(texts, children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=600, deadline=None)
@given(wild_values)
def test_fast_encode_equals_reference(value):
    _assert_same_as_reference(value)


# No floats or naive datetimes: the shapes the hot path sees, which mostly stay on the fast path.
plain_scalars = st.none() | st.booleans() | wild_ints | any_text | st.binary(max_size=8)
plain_values = st.recursive(
    plain_scalars | st.datetimes(timezones=wild_timezones, allow_imaginary=True),
    lambda children: st.lists(children, max_size=4)
    | st.lists(children, max_size=4).map(tuple)
    | st.dictionaries(any_text, children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=600, deadline=None)
@given(plain_values)
def test_fast_encode_equals_reference_on_plain_values(value):
    _assert_same_as_reference(value)


class _Colour(enum.Enum):
    RED = 1


class _StrColour(str, enum.Enum):
    RED = "red"


class _Level(enum.IntEnum):
    HIGH = 3


class _Str(str):
    pass


class _Int(int):
    pass


class _Dict(dict):
    pass


class _List(list):
    pass


class _Float(float):
    pass


@dataclasses.dataclass
class _Point:
    x: int = 1


_Pair = namedtuple("_Pair", "a b")


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        {"x": float("inf")},
        [1e16, 1e-7, 0.1, -0.0],
        datetime(2026, 1, 1),
        {"when": datetime(2026, 1, 1)},
        {1: "int key"},
        {_Str("k"): 1},
        {"$k": 1, "k": {"$$j": [b"\x00", "$v"]}},
        uuid.UUID(int=7),
        {"id": uuid.UUID(int=7)},
        _Colour.RED,
        {"c": _StrColour.RED},
        {"l": _Level.HIGH},
        _Str("x"),
        {"i": _Int(5)},
        _Dict(a=1),
        OrderedDict(b=1, a=2),
        _List([1]),
        _Float(1.5),
        _Pair(1, 2),
        _Point(),
        {1, 2},
        frozenset(),
        orjson.Fragment(b"1"),
        bytearray(b"ab"),
        memoryview(b"ab"),
        "\ud800",
        {"\udfff": 1},
        2**64,
        -(2**63) - 1,
        {"deep": [[[[[[{"x": 2**70}]]]]]]},
        object(),
        datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=5))).date(),
    ],
)
def test_fast_encode_equals_reference_on_awkward_values(value):
    _assert_same_as_reference(value)


def test_deep_nesting_behaves_like_reference():
    deep: list = [{"k": "v"}]
    for _ in range(300):  # past orjson's depth limit (it raises, so the reference encodes)
        deep = [deep]
    assert canonical.encode(deep) == canonical._encode_reference(deep)
    for _ in range(2000):  # past Python's recursion limit: both give up the same way
        deep = [deep]
    with pytest.raises(RecursionError):
        canonical._encode_reference(deep)
    with pytest.raises(RecursionError):
        canonical.encode(deep)


@settings(max_examples=1000, deadline=None)
@given(st.datetimes(timezones=wild_timezones, allow_imaginary=True))
def test_datetime_text_equals_reference_formatting(value):
    def reference(v):
        return canonical._normalise(v, "$")["$datetime"]

    assert _outcome(canonical._datetime_text, value) == _outcome(reference, value)


def test_plain_values_take_the_fast_path(monkeypatch):
    def refuse(value):
        raise AssertionError("fell back to the reference encoder")

    monkeypatch.setattr(canonical, "_encode_reference", refuse)
    when = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    value = {"a": [1, True, None, ("t", b"\x01")], "b": {"c": "é\u2028\x00"}, "ts": when, "n": -(2**63)}
    assert canonical.encode(value) == (
        '{"a":[1,true,null,["t",{"$bytes":"AQ=="}]],"b":{"c":"é\u2028\\u0000"},"n":-9223372036854775808,'
        '"ts":{"$datetime":"2026-03-04T05:06:07.000000Z"}}'
    ).encode("utf-8")
    Event.create(thread_id="t", checkpoint_ns="", seq=1, kind="k", actor="a", payload={"x": 1}, prev_hash="p")
    head_signing_bytes("t", 1, "sha256:00", "k", "keyring")
    checkpoint_digest("t", "", "c", None, "msgpack", b"", "json", b"")


@pytest.mark.parametrize(
    "value",
    [{"x": 1.5}, {"$k": 1}, {"v": "$not-a-tag"}, {"id": uuid.UUID(int=1)}, {"e": _Level.HIGH}, {"k": _Str("s")}, 2**64],
)
def test_fast_path_defers_to_reference(monkeypatch, value):
    calls = []
    reference = canonical._encode_reference

    def spy(v):
        calls.append(v)
        return reference(v)

    monkeypatch.setattr(canonical, "_encode_reference", spy)
    _outcome(canonical.encode, value)
    assert calls == [value]


# Computed with the encoder as it was before the fast path existed: these bytes and
# digests are in existing databases and signed heads, so they must never change.
_PINNED_BODY = (
    b'{"actor":"agent:x","checkpoint_ns":"ns","kind":"checkpoint.saved","payload":{"checkpoint_id":'
    b'"1ef4f797-8335-6428-8001-8a1503f9b875","digest":"sha256:abababababababababababababababababababababababab'
    b'abababababababab","nested":{"$$k":[1,null,true,"\\u0000\\t\\"\\\\"]},"step":-3,"when":{"$datetime":'
    b'"2026-01-02T01:04:05.000006Z"}},"prev_hash":"sha256:0000000000000000000000000000000000000000000000000000000000000000",'
    b'"seq":7,"thread_id":"thread-\xc3\xa9\xe2\x80\xa8","ts":{"$datetime":"2026-03-04T10:06:07.891011Z"},"v":1}'
)
_PINNED_PLAIN_BODY = (
    b'{"actor":"a","checkpoint_ns":"","kind":"run.started","payload":{},"prev_hash":'
    b'"sha256:0000000000000000000000000000000000000000000000000000000000000000","seq":1,"thread_id":"t",'
    b'"ts":{"$datetime":"2026-01-01T00:00:00.000000Z"},"v":1}'
)


def test_event_bodies_and_hashes_are_pinned():
    event, body = Event.create(
        thread_id="thread-é\u2028",
        checkpoint_ns="ns",
        seq=7,
        kind="checkpoint.saved",
        actor="agent:x",
        payload={
            "checkpoint_id": "1ef4f797-8335-6428-8001-8a1503f9b875",
            "digest": "sha256:" + "ab" * 32,
            "step": -3,
            "nested": {"$k": [1, None, True, '\x00\t"\\']},
            "when": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=2))),
        },
        prev_hash="sha256:" + "0" * 64,
        ts=datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=timezone(timedelta(hours=-5))),
    )
    assert body == _PINNED_BODY
    assert event.hash == "sha256:b4f681f6d18d272fd93b2584f262c3be998d866667b7e4f2d36afde0b2a69037"
    assert canonical.encode(event.body()) == body

    event, body = Event.create(
        thread_id="t",
        checkpoint_ns="",
        seq=1,
        kind="run.started",
        actor="a",
        payload={},
        prev_hash="sha256:" + "0" * 64,
        ts=datetime(2026, 1, 1, tzinfo=timezone.utc),
    )
    assert body == _PINNED_PLAIN_BODY
    assert event.hash == "sha256:bce019fd872cd91ba3047bf4a0363b6f8e39ca8569dab025e42e3f3c7d1b27a5"
    assert Event.from_body(body, event.hash) == event


def test_head_signing_bytes_are_pinned():
    assert head_signing_bytes("thread-1", 42, "sha256:" + "cd" * 32, "key-1", "keyring") == (
        b'{"domain":"langgraph-warden/chain-head/v1","hash":"sha256:cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd'
        b'cdcdcdcdcdcdcdcd","key_id":"key-1","key_store":"keyring","seq":42,"thread_id":"thread-1"}'
    )


def test_row_digests_are_pinned():
    assert (
        checkpoint_digest("t", "", "cp1", None, "msgpack", b"\x00checkpoint", "json", b'{"m":1}')
        == "sha256:b536c07d5ef3e076347e64e84260b5d009f3773c9752a38c5a86b44f4cfa72c5"
    )
    assert (
        checkpoint_digest("t", "ns", "cp2", "cp1", "msgpack", b"", "json", b"")
        == "sha256:9238aa3b62a3eb427006a44f4f3cccc45be4b5eeb13ec3090787d19d8ce99e8f"
    )
    assert (
        write_digest("t", "", "cp1", "task", 3, "p", "ch", "msgpack", b"blob")
        == "sha256:0e4b3fd572012b20138e32dba7a2dd226cb4fd4c7193b0d3d765aa5474bd5fe2"
    )
    assert (
        write_digest("t", "", "cp1", "task", -1, "", "ch", None, None)
        == "sha256:629e0c154e28896b24be0ac7a1069f74a8012eed74ab6a9d0563c16bf83a8376"
    )


# ------------------------------------------------------------------ event summaries
payload_keys = st.text(max_size=8) | st.sampled_from(["$", "$$", "$bytes", "$datetime", "tool_call_id"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(payload_keys, values, max_size=4), min_size=1, max_size=6), aware_datetimes)
def test_summaries_parsed_together_equal_each_event_decoded_alone(payloads, when):
    """``EventSummary.from_bodies`` (one JSON parse for all rows) must give what decoding each
    stored body as an Event gives: tags revived, escaped keys restored, the ts text exact."""
    from langgraph_warden.events import GENESIS_HASH, Event, EventSummary

    rows, expected = [], []
    for seq, payload in enumerate(payloads, start=1):
        event, body = Event.create(
            thread_id="t", checkpoint_ns="", seq=seq, kind="tool.completed", actor="a",
            payload=payload, prev_hash=GENESIS_HASH, ts=when,
        )
        rows.append((seq, "tool.completed", body))
        expected.append(Event.from_body(body, event.hash).summary())
    got = EventSummary.from_bodies(rows)
    assert all(_same(list(a), list(b._replace(hash=""))) for a, b in zip(got, expected)) and len(got) == len(expected)
    # a summary built from a verified read's parsed body carries the hash, and equals the decoded event's
    from langgraph_warden.chain import _loads

    assert all(_same(list(EventSummary.from_doc(_loads(body), body, e.hash)), list(e))
               for (_, _, body), e in zip(rows, expected))
    assert all(s.ts == canonical.datetime_text(when) for s in got)
