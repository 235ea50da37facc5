"""Replay real and synthetic logs through Kafka → worker → profile view; compare with `models/` in-process."""
from __future__ import annotations

import json
import time

import pytest

from strata.models.catalog import Catalog
from strata.models.events import parse_event
from strata.models.logs.loaders import open_log
from strata.models.profile import build_profiles
from tests.conftest import data_file
from tests.integration.harness import Worker, assert_profile_matches, isolated_env, produce_raw, publish, read_topic, wait_until

pytestmark = pytest.mark.integration

LOGS = {
    "taobao-head": lambda: open_log(data_file("taobao-userbehavior", "userbehavior_user_slice_head.csv.gz"), "taobao"),
    "rees46": lambda: open_log(data_file("rees46-multicategory-2019oct-head", "events_2019-10-01_head.csv.gz"), "rees46"),
    "synthetic": lambda: open_log("users=800,items=3000,events=20000", "synthetic", seed=11),
}


@pytest.mark.parametrize("log", list(LOGS))
def test_replayed_profiles_equal_the_in_process_model(log, kafka, tmp_path):
    source = LOGS[log]()
    catalog_records = list(source.catalog())
    events = list(source.events())
    worker = Worker(isolated_env(kafka, log), tmp_path / "data")
    worker.start()
    try:
        # The catalog comes first, as in production: wait until the worker holds all of it.
        publish(worker.settings, catalog_records, [])
        wait_until(lambda: worker.get("/healthz")[1].get("catalog_entries", 0) >= len(catalog_records), 30, "catalog loaded")

        summary = publish(worker.settings, [], events)
        assert summary.rejected == 0 and summary.sent == len(events)
        wait_until(lambda: worker.metric("strata_events_processed_total") >= summary.sent, 120, f"{summary.sent} events processed")

        params = worker.settings.profile
        now = time.time()
        reference = build_profiles((parse_event(e, now) for e in events), Catalog.from_records(catalog_records), params)
        for user_id, profile in reference.items():
            status, body = worker.get(f"/users/{user_id}/profile")
            assert status == 200, (user_id, body)
            assert body["user_id"] == user_id and body["events"] == profile.count
            assert body["params"]["half_life_s"] == dict(params.half_life_s)
            assert_profile_matches(body, profile, params)
        assert worker.metric("strata_events_processed_total") == summary.sent
    finally:
        worker.stop()


def test_an_event_on_another_partition_than_its_users_is_dead_lettered(kafka, tmp_path):
    """A user's profile lives on the partition Kafka's default partitioner (murmur2) gives the
    user; an event a producer with another partitioner (librdkafka's crc32, an explicit partition)
    put elsewhere is dead-lettered as wrong_partition, with the partition it belongs to, and
    changes no profile (docs/design.md, "Partitioning")."""
    from aiokafka.partitioner import murmur2
    import orjson

    env = isolated_env(kafka, "other-partitioner", partitions=4)
    worker = Worker(env, tmp_path / "data")
    worker.start()
    try:
        users = [f"p-{n}" for n in range(8)]
        home = {u: (murmur2(u.encode()) & 0x7FFFFFFF) % 4 for u in users}
        messages = []
        for n, user in enumerate(users):
            partition = home[user] if n % 2 == 0 else (home[user] + 1 + n % 3) % 4
            event = {"event_id": f"e-{n}", "user_id": user, "item_id": f"i-{n}", "type": "cart", "ts": 1_700_000_000 + n}
            messages.append((user.encode(), orjson.dumps(event), partition))
        produce_raw(worker.settings, messages)
        wait_until(lambda: worker.metric("strata_events_processed_total") + worker.metric("strata_events_deadlettered_total")
                   >= len(users), 60, "events handled")
        assert worker.metric("strata_events_processed_total") == 4
        for n, user in enumerate(users):
            status, body = worker.get(f"/users/{user}/profile")
            if n % 2 == 0:
                assert status == 200, (user, body)
                assert body["events"] == 1 and list(body["layers"]["item"]) == [f"i-{n}"]
            else:
                assert status == 404, (user, body)
        dead = [json.loads(r.value) for r in read_topic(worker.settings, worker.settings.topic("deadletter"), expected=4)]
        assert sorted((d["key"], d["reason"], d["expected_partition"]) for d in dead) == sorted(
            (u, "wrong_partition", home[u]) for n, u in enumerate(users) if n % 2)
    finally:
        worker.stop()
