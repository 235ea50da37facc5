"""Stop the worker and start it again, with its RocksDB directory kept and deleted:
profiles are the same afterwards (local state, then changelog recovery), and it answers within 30 s."""
from __future__ import annotations

import shutil

import pytest

from models.loaders import open_log
from tests.integration.harness import READY_TIMEOUT_S, Worker, all_profiles, isolated_env, publish, wait_until

pytestmark = pytest.mark.integration


def test_profiles_survive_restart_with_and_without_local_state(kafka, tmp_path):
    source = open_log("users=500,items=2000,events=15000", "synthetic", seed=3)
    events = list(source.events())
    users = sorted({e["user_id"] for e in events})
    env = isolated_env(kafka, "restart")
    data_dir = tmp_path / "data"

    worker = Worker(env, data_dir)
    worker.start()
    try:
        publish(worker.settings, source.catalog(), [])
        wait_until(lambda: worker.get("/healthz")[1].get("catalog_entries", 0) > 0, 30, "catalog loaded")
        summary = publish(worker.settings, [], events)
        wait_until(lambda: worker.metric("strata_events_processed_total") >= summary.sent, 120, "replay processed")
        before = all_profiles(worker, users)
    finally:
        worker.stop()

    # 1. Same data directory: the local RocksDB state is reused.
    worker = Worker(env, data_dir, port=worker.settings.web_port)
    try:
        took = worker.start(timeout=READY_TIMEOUT_S)
        assert all_profiles(worker, users) == before
        assert worker.metric("strata_events_processed_total") == 0  # nothing was re-applied
    finally:
        worker.stop()
    print(f"restart with local state: ready in {took:.1f}s")

    # 2. Data directory deleted: everything comes back from the changelog topic.
    shutil.rmtree(data_dir)
    worker = Worker(env, data_dir, port=worker.settings.web_port)
    try:
        took = worker.start(timeout=READY_TIMEOUT_S)
        assert all_profiles(worker, users) == before
        # restored by the batched recovery route, at least one changelog record per user
        assert worker.metric("strata_changelog_records_recovered") >= len(users)
    finally:
        worker.stop()
    print(f"restart from the changelog: ready in {took:.1f}s")
