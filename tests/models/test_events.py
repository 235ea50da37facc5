"""Event validation (docs/design.md §2): the hot path's one-expression check of the common case must agree
with the rule-by-rule checks on every input — the same event, or the same reason."""
from __future__ import annotations

import pytest

from hypothesis import example, given, settings
from hypothesis import strategies as st

from strata.models.events import EVENT_TYPES, MAX_FUTURE_S, MAX_ID_LEN, InvalidEvent, _checked_event, parse_event

NOW = 1_700_000_000.0

_good_id = st.text("abcz019-_.:/é中ß€", min_size=1, max_size=12)  # printable, ASCII and not
_any_id = st.one_of(
    _good_id,
    st.none(), st.just(""), st.just("a\nb"), st.just("x" * MAX_ID_LEN), st.just("x" * (MAX_ID_LEN + 1)),
    st.integers(-5, 10**12), st.booleans(), st.floats(), st.lists(st.integers(), max_size=2), st.text("ab \n\t\x00\x7fé", max_size=5),
)
_ts = st.one_of(
    st.floats(0, NOW), st.integers(0, int(NOW)),
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 2 * int(NOW)),
    st.just(NOW + MAX_FUTURE_S), st.just(NOW + MAX_FUTURE_S + 1e-3), st.booleans(), st.text("ab1", max_size=3), st.none(),
)
_objects = st.fixed_dictionaries(
    {},
    optional={
        "event_id": _any_id, "user_id": _any_id, "item_id": _any_id, "category_id": _any_id,
        "type": st.one_of(st.sampled_from(EVENT_TYPES), _any_id),
        "ts": _ts,
        "context": st.one_of(st.none(), st.dictionaries(st.text("ab1", max_size=3), st.integers(), max_size=2), st.integers()),
    },
)
_mostly_valid = st.fixed_dictionaries(
    {"event_id": _good_id, "user_id": _good_id, "item_id": _good_id, "type": st.sampled_from(EVENT_TYPES), "ts": st.floats(0, NOW)},
    optional={"category_id": st.one_of(st.none(), _good_id)},
)

_FIELD_VALUES = {
    "event_id": _any_id, "user_id": _any_id, "item_id": _any_id, "category_id": _any_id,
    "type": _any_id, "ts": _ts, "context": st.one_of(st.dictionaries(st.text("ab1", max_size=3), st.integers(), max_size=2), st.integers()),
}
# A valid event with one field replaced by anything (or removed): where a wrong rule would show.
_one_field_off = st.tuples(_mostly_valid, st.sampled_from(sorted(_FIELD_VALUES)), st.booleans()).flatmap(
    lambda t: _FIELD_VALUES[t[1]].map(lambda v: {k: x for k, x in {**t[0], t[1]: v}.items() if t[2] or k != t[1]})
)


def _outcome(parse, obj):
    try:
        return parse(obj, NOW)
    except InvalidEvent as exc:
        return ("rejected", exc.reason, exc.detail)


_EVENT = {"event_id": "e", "user_id": "u", "item_id": "i", "type": "view", "ts": NOW}


@settings(max_examples=1000)
@given(st.one_of(_objects, _mostly_valid, _one_field_off))
@example({**_EVENT, "ts": True})  # a bool is an int to Python, not a number to JSON
@example({**_EVENT, "ts": float("nan")})
@example({**_EVENT, "ts": NOW + MAX_FUTURE_S})
@example({**_EVENT, "user_id": 7})  # numeric ids: accepted, as text, by the full checks
@example({**_EVENT, "context": {"n": 2**64}})  # beyond JSON's integers: a reason, not a TypeError
def test_the_fast_check_and_the_full_checks_agree(obj):
    assert _outcome(parse_event, dict(obj)) == _outcome(_checked_event, dict(obj))


@given(_mostly_valid)
def test_valid_events_are_accepted_as_given(obj):
    event = parse_event(obj, NOW)
    assert (event.event_id, event.user_id, event.item_id, event.type) == (obj["event_id"], obj["user_id"], obj["item_id"], obj["type"])
    assert event.ts == obj["ts"] and type(event.ts) is float and event.category_id == obj.get("category_id")


@pytest.mark.parametrize("ts", [-1, -0.5, -1e-9, float("-inf")])
def test_a_time_before_1970_is_refused(ts):
    from strata.models.events import InvalidEvent, parse_event

    with pytest.raises(InvalidEvent) as info:
        parse_event({"event_id": "e", "user_id": "u", "item_id": "i", "type": "view", "ts": ts}, 1e9)
    assert info.value.reason == "bad_ts"
