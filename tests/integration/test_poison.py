"""No message can crash a worker (issue 24): hostile records on every topic a worker or the
trainer reads, against the real broker.

One worker takes every hostile record at once, next to normal events; each test then checks
one row of the issue: the worker is alive and still applies normal events, the record is on
the dead-letter topic with its reason.  Then the worker restarts on the same topics and data
directory (where each of these records used to crash it again), `strata train` trains on them,
and an operator pins and unpins the served version.  The tests share the worker and run in
this order.
"""
from __future__ import annotations

import asyncio
import json
import math
import subprocess
import time

import msgpack
import numpy as np
import orjson
import pytest

from strata.models.factors import FactorModel, to_messages
from strata.streams.state import home_partition
from strata.streams.topics import topic_specs
from tests.integration.harness import Worker, isolated_env, read_topic, strata_cli, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 4
MAX_RANKING = 2
T0 = time.time() - 3600.0


def event(i: int, user: str, item: str | None = None) -> dict:
    return {"event_id": f"{user}-{i}", "user_id": user, "item_id": item or f"i{i % 7}", "type": "view", "ts": T0 + i}


def normal(user: str, first: int, n: int) -> list[tuple]:
    return [(user.encode(), orjson.dumps(event(i, user)), None) for i in range(first, first + n)]


async def _produce(settings, topic_key: str, messages) -> None:
    from strata.streams.replay import new_producer
    from strata.streams.topics import ensure_topics

    await ensure_topics(settings)
    producer = new_producer(settings)
    await producer.start()
    try:
        topic = topic_specs(settings)[topic_key].name
        futures = [await producer.send(topic, value, key=key, partition=partition) for key, value, partition in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def produce(settings, topic_key: str, messages) -> None:
    """(key, value, partition or None) messages onto one of our topics, exactly as given."""
    asyncio.run(_produce(settings, topic_key, messages))


def factor_manifest(version: int, items: int, dims: int, chunks: int) -> bytes:
    return json.dumps({"format": 1, "version": version, "items": items, "dims": dims, "chunks": chunks,
                       "dtype": "float32-le", "params": {}, "sha256": "0" * 64}).encode()


def factor_chunk(version: int, items: int, dims: int, chunks: int) -> bytes:
    import struct

    header = msgpack.packb([1, version, 0, 0, 1, items, dims, chunks, ["i0"]])
    return struct.pack("<4sI", b"SFC1", len(header)) + header + b"\0" * (4 * dims)


def hostile_messages() -> dict[str, list[tuple]]:
    """Per topic, the issue's hostile records (key, value, partition)."""
    u3 = b"u3"
    stray = (home_partition(u3, PARTITIONS) + 1) % PARTITIONS
    huge_ts = b'{"event_id":"e-huge","user_id":"u1","item_id":"i1","type":"view","ts":' + b"9" * 310 + b"}"
    now_ms = int(time.time() * 1000)
    bomb, far = now_ms - 1000, 9_999_999_999_999_999_999
    ahead = FactorModel(2**62, ("a", "b"), np.ones((2, 4), dtype=np.float32), {"als": {"alpha": 1.0, "regularization": 0.1}})
    return {
        "events": [
            (b"u1", huge_ts, None),
            (b"\x01" * (1 << 20), b"{}", None),
            (u3, orjson.dumps(event(999, "u3")), stray),
            (b"u5\n", orjson.dumps(event(1, "u5\n")), None),
        ],
        "item-factors": [
            (f"v{bomb}/chunk/0".encode(), factor_chunk(bomb, 10**12, 1000, 1), None),
            (f"v{bomb}/manifest".encode(), factor_manifest(bomb, 10**12, 1000, 1), None),
            (f"v{far}/manifest".encode(), factor_manifest(far, 2, 4, 1), None),
            *((key, value, None) for key, value in to_messages(ahead)),
        ],
        "activity": [(None, msgpack.packb({"items": [["i1", None, 1.0, math.inf]]}), None)],
        "catalog": [(b"item:i1", b"{not json", None)],
        "user-factors": [(b"u1", b"\xc1 not a vector", None)],
    }


EXPECTED_REASONS = {
    "events": ["future_ts", "missing_field", "wrong_partition", "bad_id"],
    "item-factors": ["too_large", "too_large", "version_ahead", "version_ahead", "version_ahead"],
    "activity": ["bad_activity"],
    "catalog": ["not_json"],
    "user-factors": ["bad_user_vector"],
}
DEAD = sum(len(v) for v in EXPECTED_REASONS.values())


@pytest.fixture(scope="module")
def poisoned(kafka, tmp_path_factory):
    """A worker that took every hostile record, and normal events before and after them."""
    env = {**isolated_env(kafka, "poison", partitions=PARTITIONS), "STRATA_MAX_RANKING": str(MAX_RANKING)}
    worker = Worker(env, tmp_path_factory.mktemp("poison") / "data")
    worker.start()
    try:
        produce(worker.settings, "events", normal("u3", 0, 10))
        for topic_key, messages in hostile_messages().items():
            produce(worker.settings, topic_key, messages)
        produce(worker.settings, "events", normal("u3", 10, 20) + normal("u1", 0, 5))
        wait_until(lambda: worker.metric("strata_events_processed_total") >= 35, 60, "the normal events applied")
        yield worker
    finally:
        worker.stop()


def strata(worker, *args: str) -> subprocess.CompletedProcess:
    return strata_cli(worker.env, *args, timeout=120)


def dead_letters(worker, expected: int) -> list[dict]:
    return [json.loads(r.value) for r in read_topic(worker.settings, worker.settings.topic("deadletter"), expected, timeout=30)]


def test_the_worker_lives_and_applies_every_normal_event(poisoned):
    assert poisoned.alive(), poisoned.log_tail()
    assert poisoned.get("/healthz")[0] == 200
    status, body = poisoned.get("/users/u3/profile")
    assert status == 200 and body["events"] == 30, body  # the stray u3 event is not among them
    assert poisoned.metric("strata_events_processed_total") == 35
    assert poisoned.metric("strata_events_duplicate_total") == 0


def test_every_hostile_record_is_a_bounded_dead_letter_with_its_reason_and_source(poisoned):
    wait_until(lambda: len(dead_letters(poisoned, DEAD)) >= DEAD, 30, f"{DEAD} dead letters")
    records = dead_letters(poisoned, DEAD)
    topics = {key: spec.name for key, spec in topic_specs(poisoned.settings).items()}
    for topic_key, reasons in EXPECTED_REASONS.items():
        got = sorted(r["reason"] for r in records if r["topic"] == topics[topic_key])
        assert got == sorted(reasons), (topic_key, got)
    for record in records:
        assert record["detail"] and isinstance(record["offset"], int) and isinstance(record["partition"], int)
        assert len(json.dumps(record)) < 40_000
    big_key = next(r for r in records if r["key_size"] == 1 << 20)
    assert big_key["key_truncated"] and big_key["reason"] == "missing_field"
    stray = next(r for r in records if r["reason"] == "wrong_partition")
    assert stray["expected_partition"] == home_partition(b"u3", PARTITIONS) != stray["partition"]


def refused(worker, topic_key: str) -> float:
    """strata_records_deadlettered_total of one topic, over its reasons."""
    text = str(worker.get("/metrics")[1])
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("strata_records_deadlettered_total{") and f'topic="{topic_key}"' in line)


def test_the_model_topic_is_defended(poisoned):
    n = len(EXPECTED_REASONS["item-factors"])
    wait_until(lambda: refused(poisoned, "item-factors") == n, 30, f"{n} factor messages refused")
    assert poisoned.metric("strata_factor_messages_refused_total") == n
    assert poisoned.metric("strata_model_version") == 0  # nothing valid was published
    assert poisoned.get("/model")[1]["version"] is None


def test_an_infinite_activity_time_leaves_popularity_finite(poisoned):
    wait_until(lambda: refused(poisoned, "activity") == 1, 30, "the activity record refused")
    status, body = poisoned.get("/users/nobody/recommendations?k=5")
    assert status == 200, body
    scores = [item["score"] for item in body["items"]]
    assert scores and all(isinstance(s, float) and math.isfinite(s) and s > 0 for s in scores), body


def test_http_input_is_checked_strictly_and_never_echoed(poisoned):
    assert poisoned.get("/users/u1%0A/recommendations")[0] == 400
    assert poisoned.get("/users/u1/recommendations?k=1001")[0] == 400
    long_path = "/users/" + "x" * 9000 + "/profile"
    status, body = poisoned.get(long_path)
    assert status in (400, 414) and "x" * 200 not in str(body) and len(str(body)) < 1024


def test_a_flood_of_expensive_requests_is_answered_503_with_retry_after(poisoned):
    import urllib.error
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor

    def ask(i: int) -> tuple[int, str | None]:
        try:
            with urllib.request.urlopen(f"{poisoned.url}/users/u{i % 9}/recommendations?k=1000&explain=1", timeout=30) as r:
                return r.status, None
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Retry-After")

    refused_before = poisoned.metric("strata_recommendations_refused_total")
    answers: list[tuple[int, str | None]] = []
    with ThreadPoolExecutor(32) as pool:
        for _ in range(5):  # rounds of 64 concurrent requests, until one found the limit reached
            answers += pool.map(ask, range(64))
            if any(status == 503 for status, _ in answers):
                break
    assert {status for status, _ in answers} <= {200, 503}
    refused = [retry for status, retry in answers if status == 503]
    assert refused and all(retry == "1" for retry in refused)
    assert any(status == 200 for status, _ in answers)
    assert poisoned.metric("strata_recommendations_refused_total") - refused_before == len(refused)
    assert poisoned.alive()


def crc32_partition(key: bytes, partitions: int) -> int:
    """librdkafka's default partitioner (confluent-kafka's `consistent_random` for keyed records)."""
    import zlib

    return zlib.crc32(key) % partitions


def test_a_crc32_producer_loses_nothing_and_counts_nothing_twice(poisoned):
    user = next(f"c{i}" for i in range(100) if crc32_partition(f"c{i}".encode(), PARTITIONS) != home_partition(f"c{i}".encode(), PARTITIONS))
    key = user.encode()
    processed, strays = poisoned.metric("strata_events_processed_total"), poisoned.metric("strata_events_deadlettered_total")
    produce(poisoned.settings, "events", [(key, orjson.dumps(event(i, user)), crc32_partition(key, PARTITIONS)) for i in range(10)])
    produce(poisoned.settings, "events", normal(user, 10, 5))
    wait_until(lambda: poisoned.metric("strata_events_deadlettered_total") - strays == 10
               and poisoned.metric("strata_events_processed_total") - processed == 5, 30, "10 dead letters and 5 events")
    status, body = poisoned.get(f"/users/{user}/profile")
    assert status == 200 and body["events"] == 5
    assert poisoned.metric("strata_events_duplicate_total") == 0
    letters = [r for r in dead_letters(poisoned, DEAD + 10) if r["key"] == user]
    assert len(letters) == 10 and {r["reason"] for r in letters} == {"wrong_partition"}
    assert {r["expected_partition"] for r in letters} == {home_partition(key, PARTITIONS)}

    forgotten = strata(poisoned, "forget", user)
    assert forgotten.returncode == 0, forgotten.stderr
    wait_until(lambda: poisoned.get(f"/users/{user}/profile")[0] == 404, 30, "the forgotten profile gone")


def test_a_restart_on_the_same_topics_lives_and_applies_events(poisoned):
    poisoned.stop()
    poisoned.start()
    assert poisoned.alive()
    produce(poisoned.settings, "events", normal("u3", 30, 5))
    wait_until(lambda: (poisoned.get("/users/u3/profile")[1] or {}).get("events") == 35, 60, "u3's events after the restart")
    assert poisoned.alive(), poisoned.log_tail()
    assert poisoned.get("/healthz")[0] == 200


def test_strata_train_survives_the_hostile_events_and_its_version_is_served(poisoned):
    done = strata(poisoned, "train", "--factors", "4", "--iterations", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    import re

    skipped = re.search(r"\(([0-9,]+) invalid skipped\)", done.stdout)
    assert skipped and int(skipped.group(1).replace(",", "")) == len(EXPECTED_REASONS["events"]) + 10, done.stdout  # + the CRC32 ten
    wait_until(lambda: poisoned.metric("strata_model_version") > 0, 30, "the trained version served")
    assert poisoned.metric("strata_model_version") < 2**53


def test_a_worker_and_the_trainer_refuse_an_events_topic_with_another_partition_count(kafka, tmp_path):
    env = isolated_env(kafka, "repartitioned", partitions=PARTITIONS)
    raised = Worker({**env, "STRATA_PARTITIONS": str(PARTITIONS + 2)}, tmp_path / "unused").settings
    produce(raised, "events", [])  # creates the topics with 6 partitions, as if the count was raised
    child = {**env, "STRATA_DATA_DIR": str(tmp_path / "data")}
    done = strata_cli(child, "worker", timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "has 6 partitions, STRATA_PARTITIONS says 4" in done.stderr
    trained = strata_cli(child, "train", "--factors", "2", "--iterations", "1", timeout=60)
    assert trained.returncode == 2 and "has 6 partitions, STRATA_PARTITIONS says 4" in trained.stderr, trained.stderr
    checked = strata_cli(child, "topics", "--check", timeout=60)
    assert checked.returncode != 0 and "6 partitions" in checked.stderr and "Traceback" not in checked.stderr, checked.stderr


def serves(worker, version: int, pinned: int | None) -> bool:
    status, body = worker.get("/model")
    return status == 200 and body["version"] == version and body["pinned"] == pinned


def test_an_operator_pins_the_served_version_and_unpins_it(poisoned):
    trained = int(poisoned.metric("strata_model_version"))
    assert trained > 0  # from the training above
    newer = FactorModel(int(time.time() * 1000), ("i1", "i2"), np.ones((2, 4), dtype=np.float32), {})
    produce(poisoned.settings, "item-factors", [(key, value, None) for key, value in to_messages(newer)])
    wait_until(lambda: serves(poisoned, version=newer.version, pinned=None), 30, "the newer version served")

    pinned = strata(poisoned, "model", "pin", str(trained))
    assert pinned.returncode == 0, pinned.stderr
    wait_until(lambda: serves(poisoned, version=trained, pinned=trained), 30, "the pinned version served")
    status = strata(poisoned, "model", "status")
    assert status.returncode == 0 and f"serving version {trained}" in status.stdout and f"pinned to {trained}" in status.stdout

    unpinned = strata(poisoned, "model", "unpin")
    assert unpinned.returncode == 0, unpinned.stderr
    wait_until(lambda: serves(poisoned, version=newer.version, pinned=None), 30, "the newest version served again")
    assert poisoned.alive()


def test_with_a_signing_key_only_signed_versions_are_served(kafka, tmp_path_factory):
    """STRATA_MODEL_SIGNING_KEY: `strata train` signs its version and the worker serves it; a version
    produced onto the factor topic without the key is dead-lettered as bad_signature, never served."""
    key = "s" * 40
    env = {**isolated_env(kafka, "signed", partitions=PARTITIONS), "STRATA_MODEL_SIGNING_KEY": key}
    worker = Worker(env, tmp_path_factory.mktemp("signed") / "data")
    worker.start()
    try:
        produce(worker.settings, "events", normal("u1", 0, 20) + normal("u2", 0, 20))
        wait_until(lambda: worker.metric("strata_events_processed_total") >= 40, 60, "the events applied")
        trained = strata(worker, "train", "--factors", "2", "--iterations", "1")
        assert trained.returncode == 0, trained.stderr
        wait_until(lambda: worker.metric("strata_model_version") > 0, 30, "the signed version served")
        signed = int(worker.metric("strata_model_version"))
        forged = FactorModel(int(time.time() * 1000), ("i1", "i2"), np.ones((2, 4), dtype=np.float32), {})
        produce(worker.settings, "item-factors", [(k, v, None) for k, v in to_messages(forged)])
        wait_until(lambda: worker.metric('strata_records_deadlettered_total{reason="bad_signature",topic="item-factors"}') >= 1,
                   30, "the unsigned version refused")
        assert worker.metric("strata_model_version") == signed and worker.alive()
    finally:
        worker.stop()
