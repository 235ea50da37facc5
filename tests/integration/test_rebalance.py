"""The batched route stays exact across rebalances: a second worker joins mid-replay (partitions are
revoked from the first and move), then is killed -9 (they move back, recovered from the changelog).
Afterwards every profile, answered by the surviving worker, equals the in-process `models/` result."""
from __future__ import annotations

import os
import signal
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

# The races this guards against show up in a few percent of runs: STRATA_SOAK_RUNS=30 repeats it.
SOAK_RUNS = int(os.environ.get("STRATA_SOAK_RUNS", "1"))


def _owned(worker: Worker) -> set[int]:
    status, body = worker.get("/healthz")
    return set(body.get("partitions", [])) if status == 200 else set()


@pytest.mark.parametrize("run", range(SOAK_RUNS))
def test_partitions_move_and_come_back_without_loss_or_double_counting(kafka, tmp_path, run):
    source = open_log("users=1500,items=4000,events=40000", "synthetic", seed=9)
    catalog_records = list(source.catalog())
    events = list(source.events())
    env = isolated_env(kafka, "rebalance", partitions=4)
    a = Worker(env, tmp_path / "a")
    b = Worker(env, tmp_path / "b")
    a.start()
    try:
        publish(a.settings, catalog_records, [])
        wait_until(lambda: a.get("/healthz")[1].get("catalog_entries", 0) >= len(catalog_records), 30, "catalog loaded")
        replay = BackgroundReplay(a.settings, events, 2_500.0).start()
        wait_until(lambda: a.metric("strata_events_processed_total") > 2_000, 60, "worker a under way")
        b.start(timeout=60)
        wait_until(lambda: _owned(b) and len(_owned(a)) < 4, 60, "partitions split between the two workers")
        print(f"split: a {sorted(_owned(a))}, b {sorted(_owned(b))}")
        wait_until(lambda: b.metric("strata_events_processed_total") > 0, 60, "worker b processing its partitions")
        b.stop(signal.SIGKILL)
        wait_until(lambda: _owned(a) == {0, 1, 2, 3}, 90, "worker a to own every partition again")
        summary = replay.join()
        assert summary.sent == len(events)
        wait_until(lambda: group_caught_up(a.settings), 180, "every event processed and committed")

        params = a.settings.profile
        reference = build_profiles((parse_event(e, time.time()) for e in events), Catalog.from_records(catalog_records), params)
        assert_all_profiles_match(a, reference, params)
    finally:
        b.stop()
        a.stop()
