"""Control records on the events topic (models.events.parse_message): forget, and what is refused."""
from __future__ import annotations

import pytest

from strata.models.events import MAX_SERVED_ITEMS, Event, Forget, InvalidEvent, Served, parse_keyed_message, parse_message

NOW = 1_700_000_000.0


def test_forget_round_trips_and_events_still_parse():
    assert parse_message(Forget("u1", NOW).to_json(), NOW) == Forget("u1", NOW)
    event = parse_message(b'{"event_id":"e","user_id":"u1","item_id":"i","type":"view","ts":1}', NOW)
    assert isinstance(event, Event) and event.user_id == "u1"


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b'{"control":"drop_table","user_id":"u1"}', "unknown_control"),
        (b'{"control":"forget"}', "missing_field"),
        (b'{"control":"forget","user_id":"' + b"x" * 129 + b'"}', "bad_id"),
        (b'{"control":"forget","user_id":"u1","requested_at":"soon"}', "wrong_type"),
        (b'{"control":"served","user_id":"u1","rec_id":"r","ts":1,"variant":"a","items":"i1"}', "wrong_type"),
        (b'{"control":"served","user_id":"u1","rec_id":"r","ts":1,"variant":"a","items":[""]}', "bad_id"),
        (b'{"control":"served","user_id":"u1","rec_id":"r","ts":1e300,"variant":"a","items":[]}', "bad_ts"),
        (b'{"control":"served","user_id":"u1","ts":1,"variant":"a","items":[]}', "missing_field"),
        (b'{"control":"served","user_id":"u1","rec_id":"' + b"r" * 65 + b'","ts":1,"variant":"a","items":[]}', "bad_id"),
        (b'{"control":"served","user_id":"u1","rec_id":"r","ts":1,"variant":"' + b"v" * 33 + b'","items":[]}', "bad_id"),
        (b"not json", "not_json"),
        (b"[1,2]", "not_object"),
    ],
)
def test_bad_control_records_are_refused_with_a_reason(raw, reason):
    with pytest.raises(InvalidEvent) as exc:
        parse_message(raw, NOW)
    assert exc.value.reason == reason


def test_a_message_must_be_keyed_by_its_user():
    """Workers and the trainer apply the same rule: a message keyed by another user (or by
    nothing) would sit on the wrong partition, so both refuse it."""
    event = Event("e1", "u1", "i1", "view", 1000.0).to_json()
    forget = Forget("u1", 1000.0).to_json()
    assert parse_keyed_message(b"u1", event, 2000.0).user_id == "u1"
    assert isinstance(parse_keyed_message(b"u1", forget, 2000.0), Forget)
    for key in (b"u2", None):
        for raw in (event, forget):
            with pytest.raises(InvalidEvent) as refused:
                parse_keyed_message(key, raw, 2000.0)
            assert refused.value.reason == "wrong_key"


def test_a_served_list_round_trips_with_its_top_items():
    served = Served("u1", "r1", NOW, "control", tuple(f"i{n}" for n in range(MAX_SERVED_ITEMS + 5)))
    parsed = parse_keyed_message(b"u1", served.to_json(), NOW)
    assert isinstance(parsed, Served)
    assert parsed.items == served.items[:MAX_SERVED_ITEMS] and parsed.rec_id == "r1" and parsed.variant == "control"


def test_an_event_carries_the_rec_id_of_its_list():
    raw = b'{"event_id":"e","user_id":"u1","item_id":"i","type":"click","ts":1,"rec_id":"r1"}'
    assert parse_message(raw, NOW).rec_id == "r1"
    assert Event("e", "u1", "i", "click", 1.0, rec_id="r1").to_dict()["rec_id"] == "r1"
    with pytest.raises(InvalidEvent) as exc:
        parse_message(raw.replace(b'"r1"', b'""'), NOW)
    assert exc.value.reason == "bad_id"
