"""Stop the worker and start it again, with its RocksDB directory kept and deleted:
profiles are the same afterwards (local state, then changelog recovery), and so are the
ranker's θ and co-visitation (re-read from the activity topic), and it answers within 30 s."""
from __future__ import annotations

import shutil

import pytest

from strata.models.logs.loaders import open_log
from tests.integration.harness import READY_TIMEOUT_S, Worker, all_profiles, isolated_env, publish, wait_until

pytestmark = pytest.mark.integration


def ranker_state(worker: Worker, items: list[str]) -> tuple:
    """θ, the number of co-visitation rows and a few items' similar items, as the worker serves them."""
    ranker = worker.get("/healthz")[1].get("ranker", {})
    similar = tuple(tuple(i["item_id"] for i in worker.get(f"/items/{item}/similar?k=5")[1]["items"]) for item in items)
    return ranker.get("theta"), ranker.get("steps"), ranker.get("covisit_items"), similar


def settled_ranker_state(worker: Worker, items: list[str]) -> tuple:
    """The ranker state once the worker has applied every activity record (two reads in a row agree)."""
    last: list = [None]

    def same_twice() -> bool:
        state = ranker_state(worker, items)
        same, last[0] = state == last[0], state
        return same

    wait_until(same_twice, 30, "the activity topic applied")
    return last[0]


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
        items = sorted({e["item_id"] for e in events})[:5]
        shop_before = settled_ranker_state(worker, items)
        assert shop_before[2] > 0 and shop_before[3][0], shop_before  # co-visitation rows, similar items
    finally:
        worker.stop()

    # 1. Same data directory: the local RocksDB state is reused.
    worker = Worker(env, data_dir, port=worker.settings.web_port)
    try:
        took = worker.start(timeout=READY_TIMEOUT_S)
        assert all_profiles(worker, users) == before
        assert worker.metric("strata_events_processed_total") == 0  # nothing was re-applied
        # θ and co-visitation come back from the activity topic, the same as before
        wait_until(lambda: ranker_state(worker, items) == shop_before, 60, "the shop's ranker state recovered")
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
        wait_until(lambda: ranker_state(worker, items) == shop_before, 60, "the shop's ranker state recovered")
    finally:
        worker.stop()
    print(f"restart from the changelog: ready in {took:.1f}s")
