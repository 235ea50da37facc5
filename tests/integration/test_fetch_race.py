"""A fetch that a seek raced (streams/batching.py: KeyError out of aiokafka's drain, after the drain
moved the positions of other partitions past records that are now lost) neither crashes the worker
nor loses anything: the worker goes back to the committed offsets, and afterwards every profile
equals the in-process `models/` result.  The race is forced at chosen fetches by
tests/integration/raced_worker.py, on the real broker and the real RocksDB."""
from __future__ import annotations

import time

import pytest

from strata.models.catalog import Catalog
from strata.models.events import parse_event
from strata.models.logs.loaders import open_log
from strata.models.profile import build_profiles
from tests.integration.harness import (
    BackgroundReplay,
    Worker,
    assert_all_profiles_match,
    group_caught_up,
    isolated_env,
    publish,
    wait_until,
)

pytestmark = pytest.mark.integration

RACES = (2, 5, 9)  # the fetches with events whose records are lost to a forced race


def test_a_raced_fetch_loses_nothing(kafka, tmp_path):
    source = open_log("users=800,items=3000,events=20000", "synthetic", seed=33)
    catalog_records = list(source.catalog())
    events = list(source.events())
    worker = Worker(isolated_env(kafka, "race"), tmp_path / "data",
                    command=("-m", "tests.integration.raced_worker", ",".join(map(str, RACES))))
    worker.start()
    try:
        publish(worker.settings, catalog_records, [])
        wait_until(lambda: worker.get("/healthz")[1].get("catalog_entries", 0) >= len(catalog_records), 30, "catalog loaded")
        # Offered slowly enough that the events arrive over many fetches, the races among them.
        summary = BackgroundReplay(worker.settings, events, 4_000.0).start().join()
        assert summary.sent == len(events)
        wait_until(lambda: group_caught_up(worker.settings), 180, "every event processed and committed")
        assert worker.alive(), worker.log_tail()

        log = worker.log_path.read_text(errors="replace")
        forced = [line for line in log.splitlines() if line.startswith("forced fetch race")]
        assert len(forced) == len(RACES), log[-3000:]
        assert all(not line.endswith(": 0 records lost") for line in forced)
        assert log.count("a seek raced the fetch") == len(RACES), log[-3000:]

        params = worker.settings.profile
        reference = build_profiles((parse_event(e, time.time()) for e in events), Catalog.from_records(catalog_records), params)
        assert_all_profiles_match(worker, reference, params)
    finally:
        worker.stop()
