"""`standby_lag`: how far a standby copy trails its changelog, and when it has no say (pure: a stub app)."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

from faust.types import TP

from strata.streams.state import STANDBY_MAX_FETCH_AGE_S, standby_lag

TOPIC = "app-user_to_profile-changelog"


def _world(standby_offsets: dict[int, int | None], highwaters: dict[int, int | None], rebalancing=False, recovered=True,
           fetch_age: float = 0.2):
    completed = asyncio.Event()
    if recovered:
        completed.set()
    tps = {TP(TOPIC, p) for p in standby_offsets}
    recovery = SimpleNamespace(standby_tps=tps, standby_offsets={TP(TOPIC, p): o for p, o in standby_offsets.items()},
                               completed=completed)

    def highwater(tp):
        if tp.partition not in highwaters:
            raise KeyError(tp)  # aiokafka: not assigned
        return highwaters[tp.partition]

    app = SimpleNamespace(rebalancing=rebalancing, tables=SimpleNamespace(recovery=recovery),
                          consumer=SimpleNamespace(highwater=highwater, fetch_age=lambda: fetch_age))
    table = SimpleNamespace(partitions=4, changelog_topic=SimpleNamespace(get_topic_name=lambda: TOPIC))
    return app, table


def test_lag_is_the_records_between_the_last_applied_and_the_end():
    app, table = _world({1: 99, 2: None, 3: 10}, {1: 100, 2: 7, 3: 15})
    assert standby_lag(app, table, 1) == 0  # offset 99 applied, the next record would be 100
    assert standby_lag(app, table, 2) == 7  # nothing applied yet: all 7 records to go
    assert standby_lag(app, table, 3) == 4


def test_no_lag_where_the_standby_has_no_say():
    app, table = _world({1: 99}, {1: 100, 0: 5})
    assert standby_lag(app, table, 0) is None  # not a standby here (active, or not held at all)
    assert standby_lag(*_world({1: 99}, {1: None}), 1) is None  # not fetched since the rebalance
    assert standby_lag(*_world({1: 99}, {}), 1) is None  # the consumer does not know the partition
    assert standby_lag(*_world({1: 99}, {1: 100}, rebalancing=True), 1) is None
    assert standby_lag(*_world({1: 99}, {1: 100}, recovered=False), 1) is None


def test_a_standby_whose_fetches_stalled_has_no_say():
    """Its high-water mark is as old as its last fetch: it would count itself caught up while the
    owner's changelog moves on.  (That a fetching worker's age stays under the bound is what
    tests/integration/test_standby_answers.py relies on: its standby answers every request.)"""
    assert standby_lag(*_world({1: 99}, {1: 100}, fetch_age=STANDBY_MAX_FETCH_AGE_S - 1), 1) == 0
    assert standby_lag(*_world({1: 99}, {1: 100}, fetch_age=STANDBY_MAX_FETCH_AGE_S + 1), 1) is None
    assert standby_lag(*_world({1: 99}, {1: 100}, fetch_age=float("inf")), 1) is None  # never fetched
