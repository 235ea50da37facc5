"""One event can move no one's clock but its own user's (docs/design.md §3): in a historical replay (event
times of 2023), one event stamped nearly a day after today's wall clock — accepted, it is within
the 1-day limit — leaves the shop's clock among the replay's times and every other user's
recommendations as they were (to the clock's step up one event time), still meaningful rather than
decayed to nothing."""
from __future__ import annotations

import time

import pytest

from strata.models.logs.loaders import open_log
from tests.integration.harness import Worker, isolated_env, produce_raw, publish, shop_state_caught_up, wait_until

pytestmark = pytest.mark.integration

K = 10


def _recommendations(worker: Worker, users: list[str]) -> dict[str, list[tuple[str, float]]]:
    out = {}
    for user in users:
        status, body = worker.get(f"/users/{user}/recommendations?k={K}")
        assert status == 200, body
        out[user] = [(r["item_id"], r["score"]) for r in body["items"]]
    return out


def _clock(worker: Worker) -> float | None:
    return worker.get("/healthz")[1]["ranker"]["clock"]


def test_a_far_ahead_event_moves_no_other_users_clock(kafka, tmp_path):
    source = open_log("users=600,items=2000,events=20000,duration_s=259200", "synthetic", seed=13)
    catalog, events = list(source.catalog()), list(source.events())
    latest = max(e["ts"] for e in events)
    assert latest < time.time() - 365 * 86_400  # history
    worker = Worker(isolated_env(kafka, "clock"), tmp_path / "data")
    worker.start()
    try:
        publish(worker.settings, catalog, events)
        wait_until(lambda: worker.metric("strata_events_processed_total") == len(events) and shop_state_caught_up(worker),
                   120, "the replay applied")
        clock = _clock(worker)
        assert clock is not None and clock <= latest
        others = sorted({e["user_id"] for e in events})[:60]
        before = _recommendations(worker, others)

        ahead = time.time() + 23 * 3600.0
        # A new item, bought once: at the shop's present it would be one of the least popular, and it
        # is learned at most an hour past the shop's clock (models.clock), so nobody's scores may move.
        event = {"event_id": "from-the-future", "user_id": "time-traveller", "item_id": "i-new", "type": "purchase", "ts": ahead}
        import orjson

        produce_raw(worker.settings, [(b"time-traveller", orjson.dumps(event))])
        # The clock is the DEPTH-th latest time the shop's activity carried: the event's time takes the
        # top of its heap, so the clock moves up one time — within the replay's, not to the event's.
        wait_until(lambda: worker.metric("strata_events_processed_total") == len(events) + 1 and shop_state_caught_up(worker),
                   30, "the event to reach the shop's state")
        assert clock < _clock(worker) <= latest
        assert worker.get("/users/time-traveller/profile")[1]["as_of"] == ahead  # its own user's time is its own

        after = _recommendations(worker, others)
        for user in others:
            items_before, items_after = dict(before[user]), dict(after[user])
            shared = items_before.keys() & items_after.keys()
            assert len(shared) >= K - 1, (user, before[user], after[user])  # the clock's step up may swap a near tie
            for item in shared:
                assert items_after[item] == pytest.approx(items_before[item], rel=0.01, abs=1e-9), (user, item)
            assert max(abs(s) for s in items_after.values()) > 1e-3  # meaningful scores, not decayed to nothing
    finally:
        worker.stop()
