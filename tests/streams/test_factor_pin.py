"""`strata model pin|unpin`: the factor feed serves the pinned version alone, whatever its age,
and the newest valid version again once unpinned (no broker: the records are what travels)."""
from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from strata.models.factors import CorruptFactors, FactorModel, parse_pin, pin_message, to_messages
from strata.streams.config import Settings
from strata.streams.feeds import FactorFeed

NOW_MS = int(time.time() * 1000)


class Topic:
    """The factor topic as a list of records, and a feed reading it as the worker does (again
    from the beginning whenever the feed asks for a rewind)."""

    def __init__(self) -> None:
        self.records: list[SimpleNamespace] = []
        self.feed = FactorFeed(Settings.from_env({}))
        self.read = 0

    def send(self, key: bytes, value: bytes) -> None:
        self.records.append(SimpleNamespace(topic="t", partition=0, offset=len(self.records), key=key, value=value))

    def publish(self, version: int) -> None:
        model = FactorModel(version, ("a", "b"), np.full((2, 3), version % 7 + 1, dtype=np.float32), {})
        for key, value in to_messages(model):
            self.send(key, value)

    def follow(self) -> int | None:
        while self.read < len(self.records):
            self.feed.take(self.records[self.read])
            self.read += 1
            if self.feed.rewind:
                self.feed.rewind = False
                self.read = 0
        return self.feed.current.version if self.feed.current else None


def test_pin_an_older_version_then_unpin():
    topic = Topic()
    v1, v2, v3 = NOW_MS - 3000, NOW_MS - 2000, NOW_MS - 1000
    topic.publish(v1)
    topic.publish(v2)
    assert topic.follow() == v2
    topic.send(*pin_message(v1))
    assert topic.follow() == v1 and topic.feed.pinned == v1
    topic.publish(v3)
    assert topic.follow() == v1  # pinned: a newer version is not swapped in
    topic.send(*pin_message(None))
    assert topic.follow() == v3 and topic.feed.pinned is None


def test_a_fresh_reader_of_the_same_topic_ends_on_the_pin_in_force():
    topic = Topic()
    v1, v2 = NOW_MS - 2000, NOW_MS - 1000
    topic.publish(v1)
    topic.send(*pin_message(v1))
    topic.send(*pin_message(None))
    topic.publish(v2)
    topic.send(*pin_message(v1))
    assert topic.follow() == v1
    fresh = Topic()
    fresh.records = topic.records
    assert fresh.follow() == v1 and fresh.feed.pinned == v1


def test_a_damaged_pin_record_is_refused_and_changes_nothing():
    topic = Topic()
    topic.publish(NOW_MS - 1000)
    topic.send(b"control/pin", b'{"version": "soon"}')
    topic.send(b"control/pin", b"\xff")
    assert topic.follow() == NOW_MS - 1000 and topic.feed.pinned is None
    assert [line.split(": ")[1] for line in topic.feed.rejected] == ["bad_pin", "bad_pin"]


@pytest.mark.parametrize("value", [b"{}", b'{"version": -1}', b'{"version": 1.5}', b'{"version": 1, "x": 2}', b"[]", b'{"version": true}'])
def test_parse_pin_refuses_what_is_not_a_pin(value):
    with pytest.raises(CorruptFactors):
        parse_pin(value)


def test_pin_messages_round_trip():
    assert parse_pin(pin_message(12345)[1]) == 12345
    assert parse_pin(pin_message(None)[1]) is None
