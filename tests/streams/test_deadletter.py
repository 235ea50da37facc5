"""Dead letters are bounded whatever the rejected record carries, and say where the original is."""
from __future__ import annotations

import json
from types import SimpleNamespace

from strata.streams.deadletter import DETAIL_LIMIT, KEY_LIMIT, VALUE_LIMIT, deadletter_record


def record(key, value):
    return SimpleNamespace(topic="t.events", partition=3, offset=41, key=key, value=value)


def test_a_1_mib_key_of_control_bytes_makes_a_small_dead_letter():
    dead = deadletter_record(record(b"\x01" * (1 << 20), b"{}"), "missing_field", "x" * 10_000)
    encoded = json.dumps(dead).encode()
    assert len(encoded) < 6 * (KEY_LIMIT + VALUE_LIMIT) + DETAIL_LIMIT + 1000
    assert dead["key_size"] == 1 << 20 and dead["key_truncated"] and len(dead["key"]) == KEY_LIMIT
    assert dead["raw"] == "{}" and dead["raw_size"] == 2 and not dead["raw_truncated"]
    assert len(dead["detail"]) == DETAIL_LIMIT
    assert (dead["topic"], dead["partition"], dead["offset"], dead["reason"]) == ("t.events", 3, 41, "missing_field")


def test_a_4_mib_value_is_cut_and_its_size_kept():
    dead = deadletter_record(record(b"u1", b"\xff" * (4 << 20)), "not_json", "bad", expected_partition=2)
    assert dead["raw_size"] == 4 << 20 and dead["raw_truncated"]
    assert len(json.dumps(dead)) < 8 * VALUE_LIMIT
    assert dead["expected_partition"] == 2


def test_no_key_and_no_value():
    dead = deadletter_record(record(None, None), "no_value", "tombstone")
    assert dead["key"] is None and dead["key_size"] is None and dead["raw"] is None and dead["raw_size"] == 0


async def test_the_queue_sends_in_order_and_retries_a_failed_send():
    import asyncio

    from strata.streams.deadletter import DeadLetterQueue
    from strata.streams.metrics import metrics

    sent: list[int] = []
    failures = [RuntimeError("broker away")]

    async def send(value: dict) -> None:
        if failures:
            raise failures.pop()
        sent.append(value["offset"])

    queue = DeadLetterQueue(send)
    queue.sleep = lambda seconds: asyncio.sleep(0)  # retry at once in the test
    before = metrics.rejected[("catalog", "not_json")]
    queue.submit(SimpleNamespace(topic="t", partition=0, offset=1, key=b"k", value=b"v"), "not_json", "x", source="catalog")
    await queue.start()
    try:
        for offset in (2, 3):
            queue.submit(SimpleNamespace(topic="t", partition=0, offset=offset, key=b"k", value=b"v"), "not_json", "x", source="catalog")
        for _ in range(100):
            if len(sent) == 3:
                break
            await asyncio.sleep(0.01)
    finally:
        await queue.stop()
    assert sent == [1, 2, 3]
    assert metrics.rejected[("catalog", "not_json")] == before + 3
