"""The broker restarts mid-replay: the worker reconnects by itself and nothing is lost (or counted twice).

Uses a broker of its own (not the session broker other tests share), stopped and started again on
the same port and data directory while the worker is still consuming the first part of the log.
"""
from __future__ import annotations

import time

import pytest

from strata.models.catalog import Catalog
from strata.models.events import parse_event
from strata.models.logs.loaders import open_log
from strata.models.profile import build_profiles
from strata.streams import kafka_local
from tests.integration.harness import (
    BackgroundReplay,
    Worker,
    broker_port_pair,
    assert_all_profiles_match,
    group_caught_up,
    isolated_env,
    publish,
    wait_until,
)

pytestmark = pytest.mark.integration

RATE = 2_000.0  # events/s of the first part's replay: the worker applies them as they come


@pytest.fixture
def own_broker(tmp_path):
    port = broker_port_pair()
    env = {"STRATA_KAFKA_DIR": str(tmp_path / "kafka")}
    kafka_local.run("start", port=port, env=env)
    try:
        yield port, env
    finally:
        kafka_local.run("stop", port=port, env=env, check=False)


def test_worker_rides_out_a_broker_restart(own_broker, tmp_path):
    port, kafka_env = own_broker
    source = open_log("users=1000,items=4000,events=40000", "synthetic", seed=8)
    catalog_records = list(source.catalog())
    events = list(source.events())
    first, second = events[:30_000], events[30_000:]
    worker = Worker(isolated_env(f"127.0.0.1:{port}", "brokerrestart"), tmp_path / "data")
    worker.start()
    try:
        publish(worker.settings, catalog_records, [])
        wait_until(lambda: worker.get("/healthz")[1].get("catalog_entries", 0) >= len(catalog_records), 30, "catalog loaded")
        # The first half of the first part is replayed at a bounded rate, its second half held back
        # until the broker is up again: the broker stops while the worker is consuming the first
        # part, and before it can have applied all of it.
        replay = BackgroundReplay(worker.settings, first, RATE, parts=2).start()
        wait_until(lambda: worker.metric("strata_events_processed_total") > 0, 60, "the worker to apply events of the first part")
        processed_before, sending = worker.metric("strata_events_processed_total"), replay.sending()
        kafka_local.run("stop", port=port, env=kafka_env)
        kafka_local.run("start", port=port, env=kafka_env)
        print(f"broker restarted with the worker at {processed_before:.0f} of {len(first)} events "
              f"(the replay {'was' if sending else 'was not'} sending)")
        assert 0 < processed_before < len(first)
        assert worker.alive(), worker.log_tail()
        replay.release()
        assert replay.join().sent == len(first)

        publish(worker.settings, [], second)
        wait_until(lambda: group_caught_up(worker.settings), 240, "the worker to process and commit every event after the restart")
        assert worker.alive(), worker.log_tail()

        params = worker.settings.profile
        reference = build_profiles((parse_event(e, time.time()) for e in events), Catalog.from_records(catalog_records), params)
        assert_all_profiles_match(worker, reference, params)
    finally:
        worker.stop()
