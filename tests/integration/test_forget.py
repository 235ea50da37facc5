"""`strata forget USER`: a control record on the events topic, ordered with the user's events.

The worker deletes the profile and the user vector with tombstones through both changelogs (so a
recovery from the changelog does not bring them back), events after the forget start a new profile,
and the trainer's snapshot holds none of the user's events from before the forget.  (The raw events
stay on the events topic until its retention — documented, not hidden.)
"""
from __future__ import annotations

import asyncio
import shutil
import time

import numpy as np
import pytest

from strata.models.catalog import Catalog
from strata.models.events import parse_event
from strata.models.logs.loaders import open_log
from strata.models.profile import build_profiles
from strata.streams.topics import topic_specs
from strata.models.factors import user_vector_message
from strata.streams.trainer import read_snapshot
from tests.integration.harness import (
    Worker,
    assert_all_profiles_match,
    assert_profile_matches,
    group_caught_up,
    isolated_env,
    produce_raw,
    publish,
    strata_cli,
    wait_until,
)

pytestmark = pytest.mark.integration


async def _read_to_end(settings, topic: str) -> list:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from strata.streams.topics import partitions_of

    consumer = AIOKafkaConsumer(**settings.aiokafka_kwargs(), group_id=None, enable_auto_commit=False)
    await consumer.start()
    out = []
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if end[tp] > 0}
        while remaining:
            for tp, records in (await consumer.getmany(*remaining, timeout_ms=500)).items():
                out.extend(r for r in records if r.offset < end[tp])
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return out


def last_value(settings, topic: str, key: bytes):
    """The value of the last record with `key` on `topic` (None for a tombstone); KeyError if there is none."""
    values = [r.value for r in asyncio.run(_read_to_end(settings, topic)) if r.key == key]
    if not values:
        raise KeyError(key)
    return values[-1]


def test_forget_removes_the_user_everywhere(kafka, tmp_path):
    source = open_log("users=200,items=1000,events=6000", "synthetic", seed=4)
    catalog_records = list(source.catalog())
    events = list(source.events())
    env = isolated_env(kafka, "forget")
    data_dir = tmp_path / "data"
    worker = Worker(env, data_dir)
    settings = worker.settings
    params = settings.profile
    catalog = Catalog.from_records(catalog_records)
    counts: dict[str, int] = {}
    for e in events:
        counts[e["user_id"]] = counts.get(e["user_id"], 0) + 1
    user = max(counts, key=counts.get)  # the most active user: the most to forget
    key = user.encode()
    profile_changelog = f"{settings.app_id}-user_to_profile-changelog"
    vector_changelog = f"{settings.app_id}-user_to_vector-changelog"

    worker.start()
    try:
        publish(settings, catalog_records, [])
        wait_until(lambda: worker.get("/healthz")[1].get("catalog_entries", 0) >= len(catalog_records), 30, "catalog loaded")
        publish(settings, [], events)
        # A batch-job user vector for the user, stored by the worker.
        asyncio.run(_send(settings, topic_specs(settings)["user-factors"].name, key, user_vector_message(1, np.ones(4))))
        wait_until(lambda: group_caught_up(settings), 120, "events processed")
        wait_until(lambda: _has_key(settings, vector_changelog, key), 60, "the user vector stored")
        assert worker.get(f"/users/{user}/profile")[0] == 200
        assert worker.metric("strata_profiles_stored") == len(counts)

        done = strata_cli(worker.env, "forget", user, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "retention" in done.stdout  # says plainly that the raw events stay on the topic
        assert "no profile" not in done.stderr
        typo = strata_cli(worker.env, "forget", user + "-typo", timeout=60)
        assert typo.returncode == 0 and f"held no profile for '{user}-typo'" in typo.stderr, typo

        wait_until(lambda: worker.get(f"/users/{user}/profile")[0] == 404, 30, "the profile to be gone")
        # counted once before the forget, then kept by the writes: the tombstone takes one off
        assert worker.metric("strata_profiles_stored") == len(counts) - 1
        assert last_value(settings, profile_changelog, key) is None  # a tombstone, not just a local delete
        assert last_value(settings, vector_changelog, key) is None
        others = {u: p for u, p in build_profiles((parse_event(e, time.time()) for e in events), catalog, params).items() if u != user}
        assert_all_profiles_match(worker, others, params)

        # Events after the forget start a new profile from nothing.
        later = [
            {"event_id": f"after-forget-{i}", "user_id": user, "item_id": events[i]["item_id"], "type": "cart", "ts": 1_710_000_000.0 + i}
            for i in range(5)
        ]
        produce_raw(settings, [(key, parse_event(e, time.time()).to_json()) for e in later])
        wait_until(lambda: group_caught_up(settings), 60, "the later events processed")
        fresh = build_profiles((parse_event(e, time.time()) for e in later), catalog, params)[user]
        status, body = worker.get(f"/users/{user}/profile")
        assert status == 200 and body["events"] == 5
        assert worker.metric("strata_profiles_stored") == len(counts)
        assert_profile_matches(body, fresh, params)

        # The next training snapshot has only the user's events from after the forget.
        snapshot, _ = asyncio.run(read_snapshot(settings))
        rows = snapshot.user_codes == snapshot.user_ids.index(user)
        assert sorted(snapshot.ts[rows].tolist()) == sorted(e["ts"] for e in later)  # the later events' own times
        assert len(snapshot.ts) == len(events) - counts[user] + len(later)
    finally:
        worker.stop()

    # Recovery from the changelog alone does not bring the forgotten state back.
    shutil.rmtree(data_dir)
    worker = Worker(env, data_dir, port=worker.settings.web_port)
    try:
        worker.start(timeout=60)
        status, body = worker.get(f"/users/{user}/profile")
        assert status == 200 and body["events"] == 5
        assert worker.metric("strata_profiles_stored") == len(counts)
        assert_profile_matches(body, fresh, params)
        assert_all_profiles_match(worker, others, params)
    finally:
        worker.stop()


async def _send(settings, topic: str, key: bytes, value: bytes) -> None:
    from strata.streams.replay import new_producer

    producer = new_producer(settings)
    await producer.start()
    try:
        await (await producer.send(topic, value, key=key))
    finally:
        await producer.stop()


def _has_key(settings, topic: str, key: bytes) -> bool:
    try:
        return last_value(settings, topic, key) is not None
    except KeyError:
        return False


def test_a_forget_between_a_users_events_in_one_fetched_batch(kafka, tmp_path):
    """Events, a forget and more events of one user, produced at once to an idle worker, so that
    its next fetch takes them together: the profile holds the events after the forget and
    nothing before, and the other user is untouched."""
    from strata.models.events import Event, Forget

    env = isolated_env(kafka, "forgetbatch")
    worker = Worker(env, tmp_path / "data")
    settings = worker.settings
    before = [Event(f"b{i}", "u1", f"old{i}", "view", 1_710_000_000.0 + i) for i in range(20)]
    after = [Event(f"a{i}", "u1", f"new{i}", "cart", 1_710_000_100.0 + i) for i in range(3)]
    other = [Event(f"o{i}", "u2", f"old{i}", "view", 1_710_000_000.0 + i) for i in range(5)]
    worker.start()
    try:
        produce_raw(settings, [(e.user_id.encode(), e.to_json()) for e in before + other]
                    + [(b"u1", Forget("u1", time.time()).to_json())] + [(b"u1", e.to_json()) for e in after])
        wait_until(lambda: worker.metric("strata_events_processed_total") >= len(before) + len(after) + len(other), 120,
                   "every event applied")
        status, body = worker.get("/users/u1/profile")
        assert status == 200 and body["events"] == 3 and set(body["layers"]["item"]) == {"new0", "new1", "new2"}, body
        assert worker.get("/users/u2/profile")[1]["events"] == 5
    finally:
        worker.stop()
