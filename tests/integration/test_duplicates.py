"""The same events produced twice — a producer retry that re-sends a batch the broker had in fact
written — change nothing: every profile equals the in-process `models/` result for the events once."""
from __future__ import annotations

import time
from collections import defaultdict

import pytest

from models.catalog import Catalog
from models.events import parse_event
from models.loaders import open_log
from models.profile import build_profiles
from tests.integration.harness import (
    Worker,
    assert_all_profiles_match,
    group_caught_up,
    isolated_env,
    produce_raw,
    publish,
    wait_until,
)

pytestmark = pytest.mark.integration

RETRY_BATCH = 100  # events per producer batch; every batch is sent, then sent again


def test_events_produced_twice_change_nothing(kafka, tmp_path):
    source = open_log("users=600,items=3000,events=15000", "synthetic", seed=21)
    catalog_records = list(source.catalog())
    events = list(source.events())

    messages = []
    for start in range(0, len(events), RETRY_BATCH):
        chunk = [(e["user_id"].encode(), parse_event(e, time.time()).to_json()) for e in events[start:start + RETRY_BATCH]]
        messages += chunk + chunk  # the retry: the same records again, right after the first copy

    worker = Worker(isolated_env(kafka, "dupes"), tmp_path / "data")
    params = worker.settings.profile
    # The premise the dedup window must cover: between a record and its retried copy, a user has
    # fewer own events than the window holds (the window is per user, in the user's partition).
    gaps = defaultdict(int)
    for start in range(0, len(events), RETRY_BATCH):
        per_user = defaultdict(int)
        for e in events[start:start + RETRY_BATCH]:
            per_user[e["user_id"]] += 1
        for user, n in per_user.items():
            gaps[user] = max(gaps[user], n)
    assert max(gaps.values()) < params.dedup_window

    worker.start()
    try:
        publish(worker.settings, catalog_records, [])
        wait_until(lambda: worker.get("/healthz")[1].get("catalog_entries", 0) >= len(catalog_records), 30, "catalog loaded")
        produce_raw(worker.settings, messages)
        wait_until(lambda: group_caught_up(worker.settings), 180, "every message processed and committed")

        reference = build_profiles((parse_event(e, time.time()) for e in events), Catalog.from_records(catalog_records), params)
        assert_all_profiles_match(worker, reference, params)
        assert worker.metric("strata_events_processed_total") == len(events)
        assert worker.metric("strata_events_duplicate_total") == len(events)
        assert worker.metric("strata_update_latency_seconds_count") == len(events)  # the copies updated nothing
    finally:
        worker.stop()
