"""The activity record the hot path sends and every worker's shop feed reads (no broker: the
record bytes are what travels, so encoding and decoding them is the whole contract)."""
from __future__ import annotations

import time
from types import SimpleNamespace

import msgpack
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from strata.models.events import EVENT_TYPES, Event
from strata.models.popularity import Popularity
from strata.models.profile import DEFAULT_BETA
from strata.models.terms import TERMS, TERMS_ID, theta0
from strata.streams.config import Settings
from strata.streams.feeds import ActivitySums, ShopFeed, ThetaSteps, activity_message, theta_snapshot_message
from strata.streams.metrics import metrics

HOUR = 3600.0


@pytest.fixture
def feed():
    return ShopFeed(Settings.from_env({}), half_life_s=HOUR)


def record(value: bytes, offset: int = 0):
    return SimpleNamespace(value=value, offset=offset)


def test_items_arrive_and_older_records_still_count(feed):
    feed.on_record(record(activity_message([("i1", "c1", 2.0, 1000.0), ("i2", None, 1.0, 1000.0)])))
    feed.on_record(record(msgpack.packb([["i9", "c1", 5.0, 1000.0]])))  # the first form: the items alone
    feed.on_record(record(msgpack.packb({"items": [["i1", "c1", 1.0, 1000.0]], "returns": 1, "chances": 2})))  # with counts once sent
    assert feed.popularity.top_ranked(2)[0] == ["i9", "i1"]


@pytest.mark.parametrize(
    "value",
    [
        b"\xc1not msgpack",
        msgpack.packb({"returns": 1}),
        msgpack.packb({"items": [["i1", "c1", 1.0, 1000.0], ["i2", "c1", 1.0, float("inf")]]}),
        msgpack.packb({"items": [["i1", "c1", float("nan"), 1000.0]]}),
        msgpack.packb({"items": [["i1", "c1", 1.0, 10**18]]}),
        msgpack.packb({"items": [["i1", "c1", 2**63, 1000.0]]}),
        msgpack.packb({"items": [["i1", 7, 1.0, 1000.0]]}),
        msgpack.packb({"items": [["", "c1", 1.0, 1000.0]]}),
        msgpack.packb({"items": [["i1", "c1", 1.0]]}),
        msgpack.packb(7),
        None,
    ],
)
def test_a_malformed_record_is_refused_whole(feed, value):
    refused = sum(metrics.rejected.values())
    feed.take(record(value))
    assert len(feed.popularity) == 0
    assert feed.popularity.last_ts is None
    assert sum(metrics.rejected.values()) == refused + 1


_events = st.lists(
    st.tuples(st.sampled_from(["i1", "i2", "i3"]), st.sampled_from(["c1", None]), st.sampled_from(EVENT_TYPES),
              st.floats(0.0, 20 * HOUR)),
    max_size=40,
)


@given(_events, st.lists(st.integers(0, 40), max_size=4))
def test_a_batch_sent_as_sums_teaches_the_popularity_that_every_event_would(events, cuts):
    """The hot path sends one (item, category, weight, time) per item and category, summed by the
    decay identity and added a partition at a time; the feed learning those sums must know what
    learning every event would."""
    beta = dict(DEFAULT_BETA)
    applied = [(Event(f"e{n}", "u", item, etype, ts, category), category) for n, (item, category, etype, ts) in enumerate(events)]
    each, summed = Popularity(half_life_s=HOUR), Popularity(half_life_s=HOUR)
    for event, category in applied:
        each.learn(event.item_id, category, beta[event.type], event.ts)
    activity = ActivitySums(beta, HOUR)
    bounds = [0, *sorted(min(c, len(applied)) for c in cuts), len(applied)]
    for start, end in zip(bounds, bounds[1:]):  # partitions of the batch, added one by one
        activity.add(applied[start:end])
    assert bool(activity) == bool(applied)
    sums = activity.entries()
    assert len(sums) == len({(e.item_id, c) for e, c in applied})
    for item, category, w, ts in sums:
        summed.learn(item, category, w, ts)
    as_of = 21 * HOUR
    for item in ("i1", "i2", "i3"):
        for category in ("c1", None):
            assert summed.score(item, as_of, category) == pytest.approx(each.score(item, as_of, category), rel=1e-12, abs=1e-300)


# -- co-visitation and θ, read by every worker ------------------------------------------
def _steps(*deltas) -> ThetaSteps:
    steps = ThetaSteps()
    for d in deltas:
        steps.add(np.asarray(d, np.float64))
    return steps


def _delta(term: str, value: float) -> np.ndarray:
    d = np.zeros(len(TERMS))
    d[TERMS.index(term)] = value
    return d


def test_visits_pair_items_in_every_worker(feed):
    visits = [("b", 1000.0, ["a"]), ("c", 1000.0, ["b", "a"]), ("c", 1000.0, ["b"])]
    feed.on_record(record(activity_message([("b", None, 1.0, 1000.0)], visits)))
    assert sorted(feed.covisits.row("a")) == ["b", "c"]
    assert feed.covisits.row("c")["b"] == pytest.approx(2 * feed.covisits.row("a")["b"], rel=1e-9)
    assert feed.pairs == 4


def test_theta_is_the_prior_plus_every_workers_steps(feed):
    feed.on_record(record(activity_message([("i", None, 1.0, 1000.0)], (), _steps(_delta("pop", 0.5))), offset=0))
    feed.on_record(record(activity_message([("i", None, 1.0, 1000.0)], (), _steps(_delta("pop", 0.25), _delta("own", -1.0))), offset=1))
    expected = theta0() + _delta("pop", 0.75) + _delta("own", -1.0)
    assert np.allclose(feed.weights.theta, expected)
    assert feed.steps == 3


def _with_steps(offset: int, value: float) -> SimpleNamespace:
    return record(activity_message([], (), _steps(_delta("pop", value))), offset=offset)


def test_a_snapshot_changes_nothing_for_a_worker_that_read_every_step(feed):
    for offset in range(4):
        feed.on_record(_with_steps(offset, 0.1))
    theta_at_2 = theta0() + _delta("pop", 0.2)  # what a worker held after offsets 0 and 1
    feed.on_record(record(theta_snapshot_message(theta_at_2, 2), offset=4))
    assert np.allclose(feed.weights.theta, theta0() + _delta("pop", 0.4))


def test_a_worker_that_starts_after_retention_begins_from_the_snapshot():
    older = theta0() + _delta("pop", 5.0)  # steps whose records retention deleted
    late = ShopFeed(Settings.from_env({}), half_life_s=HOUR)
    late.on_record(_with_steps(100, 0.1))  # the first record it can read
    late.on_record(_with_steps(101, 0.1))
    late.on_record(record(theta_snapshot_message(older + _delta("pop", 0.1), 101), offset=102))  # taken after 100
    assert np.allclose(late.weights.theta, older + _delta("pop", 0.2))
    late.on_record(_with_steps(103, 0.1))
    assert np.allclose(late.weights.theta, older + _delta("pop", 0.3))


@pytest.mark.parametrize(
    "extra",
    [
        {"visits": [["b", 1000.0, ["a"], 1.0]]},
        {"visits": [["b", 1000.0, ["a"] * 21]]},  # more partners than an event pairs with
        {"visits": [["b", float("nan"), ["a"]]]},
        {"visits": [["b", 1000.0, [""]]]},
        {"visits": "b"},
        {"theta": {"terms": 1, "delta": [0.0] * len(TERMS), "steps": 1}},  # other terms
        {"theta": {"terms": TERMS_ID, "delta": [0.0] * (len(TERMS) - 1), "steps": 1}},
        {"theta": {"terms": TERMS_ID, "delta": [float("inf")] + [0.0] * (len(TERMS) - 1), "steps": 1}},
        {"theta": {"terms": TERMS_ID, "delta": [0.0] * len(TERMS), "steps": 0}},
        {"theta_at": {"terms": TERMS_ID, "theta": [0.0] * len(TERMS), "offset": -1}},
    ],
)
def test_malformed_visits_or_steps_refuse_the_record_whole(feed, extra):
    theta = feed.weights.theta.copy()
    value = msgpack.packb({"items": [["i1", "c1", 1.0, 1000.0]], **extra})
    refused = sum(metrics.rejected.values())
    feed.take(record(value))
    assert len(feed.popularity) == 0 and len(feed.covisits) == 0
    assert np.array_equal(feed.weights.theta, theta)
    assert sum(metrics.rejected.values()) == refused + 1


def test_a_sampled_batchs_pairs_weigh_one_over_the_share_sampled(feed):
    feed.on_record(record(activity_message([("b", None, 1.0, 1000.0)], [("b", 1000.0, ["a"])], None, 4.0)))
    feed.on_record(record(activity_message([("c", None, 1.0, 1000.0)], [("c", 1000.0, ["a"])])))
    assert feed.covisits.row("a")["b"] == pytest.approx(4 * feed.covisits.row("a")["c"], rel=1e-9)
    for bad in (0.5, float("inf"), "2"):
        refused = sum(metrics.rejected.values())
        feed.take(record(msgpack.packb({"items": [], "visits": [["d", 1000.0, ["a"]]], "visit_weight": bad})))
        assert sum(metrics.rejected.values()) == refused + 1 and "d" not in feed.covisits.row("a")


def test_the_shops_clock_ignores_one_far_ahead_time(feed):
    feed.on_record(record(activity_message([(f"i{n}", None, 1.0, 1000.0 + n) for n in range(100)])))
    before = feed.clock.now
    feed.on_record(record(activity_message([("bad", None, 1.0, time.time() + 3600.0)])))
    assert before == 1000.0 + 100 - 64 and feed.clock.now == before + 1


def test_one_far_ahead_time_does_not_make_its_item_outweigh_the_shop(feed):
    """In a historical stream, an event stamped today would weigh 2^(years / 1 day) times any other."""
    for n in range(200):
        feed.on_record(record(activity_message([("hit", None, 5.0, 1000.0 + n), (f"i{n}", None, 1.0, 1000.0 + n)],
                                               [(f"i{n}", 1000.0 + n, ["hit"])])))
    feed.on_record(record(activity_message([("bad", None, 1.0, time.time())], [("bad", time.time(), ["hit"])])))
    assert feed.popularity.top_ranked(1)[0] == ["hit"]
    row = feed.covisits.row("hit")
    assert row["bad"] < 2 * max(w for j, w in row.items() if j != "bad")  # an hour's decay at most, not years'
