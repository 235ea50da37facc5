"""The activity record the hot path sends and the popularity feed reads (no broker: the record
bytes are what travels, so encoding and decoding them is the whole contract)."""
from __future__ import annotations

from types import SimpleNamespace

import msgpack
import pytest

from streams.config import Settings
from streams.feeds import PopularityFeed, activity_message

HOUR = 3600.0


@pytest.fixture
def feed():
    return PopularityFeed(Settings.from_env({}), half_life_s=HOUR)


def record(value: bytes, offset: int = 0):
    return SimpleNamespace(value=value, offset=offset)


def test_items_and_revisit_counts_arrive(feed):
    feed.on_record(record(activity_message([("i1", "c1", 2.0, 1000.0), ("i2", None, 1.0, 1000.0)], (3, 4))))
    feed.on_record(record(activity_message([("i1", "c1", 1.0, 1000.0)], (0, 2))))
    assert (feed.revisits.returns, feed.revisits.chances) == (3, 6)
    assert feed.popularity.top_ranked(2)[0][0] == "i1"


def test_records_from_before_revisit_counts_still_count_items(feed):
    feed.on_record(record(msgpack.packb([["i9", "c1", 5.0, 1000.0]])))
    assert feed.popularity.top_ranked(1)[0][0] == "i9"
    assert feed.revisits.chances == 0


@pytest.mark.parametrize(
    "value",
    [b"\xc1not msgpack", msgpack.packb({"returns": 1}), msgpack.packb({"items": [], "returns": 5, "chances": 2})],
)
def test_a_malformed_record_is_skipped(feed, value):
    feed.on_record(record(value))
    assert (feed.revisits.returns, feed.revisits.chances) == (0, 0)
