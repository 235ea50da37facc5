"""Hostile events-topic messages: every one is a record or an `InvalidEvent` with a reason, never
another exception (a worker and `strata train` would stop on it, and again on every restart)."""
from __future__ import annotations

import json

import orjson
from hypothesis import given, settings, strategies as st

from strata.models.events import Event, Forget, InvalidEvent, Served, parse_keyed_message

NOW = 1_700_000_000.0
GOOD = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "type": "view", "ts": NOW - 10}


def reason_of(key, value) -> str:
    try:
        parse_keyed_message(key, value, NOW)
    except InvalidEvent as exc:
        assert exc.reason and exc.detail
        return exc.reason
    raise AssertionError("accepted")


def test_a_310_digit_ts_is_a_future_ts_not_an_overflow():
    value = b'{"event_id":"e1","user_id":"u1","item_id":"i1","type":"view","ts":' + b"9" * 310 + b"}"
    assert reason_of(b"u1", value) == "future_ts"


def test_a_negative_310_digit_ts_is_a_bad_ts():
    value = b'{"event_id":"e1","user_id":"u1","item_id":"i1","type":"view","ts":-' + b"9" * 310 + b"}"
    assert reason_of(b"u1", value) == "bad_ts"


def test_an_id_of_400_digits_is_a_bad_id_and_one_of_5000_is_not_json():
    for digits, reason in ((400, "bad_id"), (5000, "not_json")):  # Python reads at most 4,300 digits
        value = json.dumps({**GOOD, "item_id": 0}).replace('"item_id": 0', '"item_id": ' + "7" * digits).encode()
        assert reason_of(b"u1", value) == reason, digits


def test_non_finite_ts_are_refused():
    for ts in ("NaN", "Infinity", "-Infinity"):
        value = json.dumps(GOOD).replace(str(GOOD["ts"]), ts).encode()
        assert reason_of(b"u1", value) == "bad_ts", ts


def test_a_forget_with_a_huge_or_infinite_time_is_refused():
    for at in ("9" * 400, "Infinity", "NaN"):
        assert reason_of(b"u1", b'{"control":"forget","user_id":"u1","requested_at":' + at.encode() + b"}") == "bad_ts"


def test_an_unknown_control_of_any_type_is_refused_with_its_reason():
    assert reason_of(b"u1", b'{"control":' + b"1" * 400 + b',"user_id":"u1"}') == "unknown_control"
    assert reason_of(b"u1", b'{"control":["forget"],"user_id":"u1"}') == "unknown_control"


def test_a_tombstone_is_refused():
    assert reason_of(b"u1", None) == "no_value"


def test_a_user_id_with_a_trailing_newline_is_refused():
    assert reason_of(b"u1\n", orjson.dumps({**GOOD, "user_id": "u1\n"})) == "bad_id"


def test_a_huge_key_is_the_wrong_key():
    assert reason_of(b"\x01" * (1 << 20), b"{}") == "missing_field"
    assert reason_of(b"\x01" * (1 << 20), orjson.dumps(GOOD)) == "wrong_key"


def test_an_unforeseen_failure_is_undecodable():
    assert reason_of(b"u1", 12345) == "undecodable"  # not bytes at all: the decoders raise TypeError


def _outcome(key, value) -> None:
    try:
        parsed = parse_keyed_message(key, value, NOW)
    except InvalidEvent as exc:
        assert isinstance(exc.reason, str) and exc.reason and isinstance(exc.detail, str)
        assert len(exc.detail) < 2000
        return
    assert isinstance(parsed, (Event, Forget, Served))
    assert key == parsed.user_id.encode()


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=512), st.one_of(st.none(), st.binary(max_size=64)))
def test_arbitrary_bytes_are_a_record_or_a_reason(value, key):
    _outcome(key, value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=-10**400, max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=140),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ("event_id", "user_id", "item_id", "type", "ts", "category_id", "context", "control", "requested_at")


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=len(FIELDS)), st.booleans())
def test_arbitrary_json_over_a_good_event_is_a_record_or_a_reason(changes, keyed_by_user):
    obj = {**GOOD, **changes}
    value = json.dumps(obj).encode()  # stdlib JSON: NaN, Infinity and integers of any size
    user = obj.get("user_id")
    small = isinstance(user, str) or (type(user) is int and abs(user) < 10**100)
    key = str(user).encode("utf-8", "replace") if keyed_by_user and small else b"u1"
    _outcome(key, value)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_arbitrary_json_documents_are_a_record_or_a_reason(doc):
    _outcome(b"u1", json.dumps(doc).encode())


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=len(FIELDS)))
def test_every_problem_is_listed_and_the_first_is_the_reason_parsing_gives(changes):
    """`event_problems` (HTTP ingest answers with all of them) agrees with `parse_event`: no problem
    exactly when the event is accepted, and its first problem is the reason parsing stops at."""
    from strata.models.events import event_problems, parse_event

    obj = json.loads(json.dumps({**GOOD, **changes}))
    problems = event_problems(obj, NOW)
    try:
        parse_event(obj, NOW)
    except InvalidEvent as exc:
        assert problems and problems[0].reason == exc.reason
    else:
        assert problems == []
