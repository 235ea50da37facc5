"""Control records on the events topic (models.events.parse_message): forget, and what is refused."""
from __future__ import annotations

import pytest

from models.events import Event, Forget, InvalidEvent, parse_keyed_message, parse_message

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
