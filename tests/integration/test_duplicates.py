"""The same events produced twice change nothing: a producer retry that re-sends a batch right away,
and a late copy (an outbox replay, a second `make demo`) after the whole log — also to a worker
restarted after `kill -9` with its data directory deleted.  Every profile equals the in-process
`models/` result for the events once."""
from __future__ import annotations

import shutil
import signal
import time

import pytest

from strata.models.catalog import Catalog
from strata.models.events import parse_event
from strata.models.logs.loaders import open_log
from strata.models.profile import build_profiles
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


LATE_LOG, LATE_COPIES = 50_000, 5_000


def test_late_copies_change_nothing_also_after_kill_9_and_a_lost_data_dir(kafka, tmp_path):
    """The log's first 5,000 events again after the whole 50,000 (7.5 days of event time): each copy
    is dropped — as a duplicate when its user's newest event is within the 7-day horizon, else
    dead-lettered as too_late — never counted twice.  Then the same copies once more, to a worker
    killed with -9 and restarted with its data directory deleted (state rebuilt from Kafka)."""
    source = open_log(f"users=2000,items=5000,events={LATE_LOG},duration_s=648000", "synthetic", seed=8)
    catalog_records = list(source.catalog())
    events = list(source.events())
    copies = [(e["user_id"].encode(), parse_event(e, time.time()).to_json()) for e in events[:LATE_COPIES]]
    env, data_dir = isolated_env(kafka, "late-dupes"), tmp_path / "data"
    worker = Worker(env, data_dir)
    params = worker.settings.profile
    reference = build_profiles((parse_event(e, time.time()) for e in events), Catalog.from_records(catalog_records), params)

    def dropped() -> float:
        return worker.metric("strata_events_duplicate_total") + worker.metric('strata_events_deadlettered_total{reason="too_late"}')

    worker.start()
    try:
        publish(worker.settings, catalog_records, events)
        wait_until(lambda: group_caught_up(worker.settings) and worker.metric("strata_events_processed_total") == LATE_LOG,
                   240, "the log applied and committed")
        produce_raw(worker.settings, copies)
        wait_until(lambda: group_caught_up(worker.settings) and dropped() == LATE_COPIES, 120, "every late copy dropped")
        assert worker.metric("strata_events_duplicate_total") > 0  # both paths taken
        assert worker.metric('strata_events_deadlettered_total{reason="too_late"}') > 0
        assert worker.metric("strata_events_processed_total") == LATE_LOG
        assert_all_profiles_match(worker, reference, params)
        worker.stop(signal.SIGKILL)
        shutil.rmtree(data_dir)

        worker = Worker(env, data_dir, port=worker.settings.web_port)
        worker.start(timeout=90)
        produce_raw(worker.settings, copies)
        wait_until(lambda: group_caught_up(worker.settings) and dropped() == LATE_COPIES, 180, "every copy dropped again")
        assert worker.metric("strata_events_processed_total") == 0
        assert_all_profiles_match(worker, reference, params)
    finally:
        worker.stop()
