"""2,000 events, 10 % malformed in assorted ways: every bad one is dead-lettered with its reason,
every good one is applied, and the worker keeps running."""
from __future__ import annotations

import json
import random
import time

import orjson
import pytest

from strata.models.catalog import Catalog
from strata.models.events import parse_event
from strata.models.profile import build_profiles
from tests.integration.harness import Worker, assert_profile_matches, isolated_env, produce_raw, read_topic, wait_until

pytestmark = pytest.mark.integration

T0 = 1_700_000_000.0


def good_event(i: int, rng: random.Random) -> dict:
    return {
        "event_id": f"ok-{i}",
        "user_id": f"u{rng.randrange(60)}",
        "item_id": f"i{rng.randrange(300)}",
        "type": rng.choice(["view", "view", "click", "fav", "cart", "purchase"]),
        "ts": T0 + i * 7.0,
        "category_id": f"c{rng.randrange(12)}",
    }


# Each maker turns a good event into a bad message (key, value) and names the reason expected.
def _json(e: dict) -> bytes:
    return json.dumps(e).encode()  # stdlib: writes NaN / Infinity like many producers do


BAD_MAKERS = [
    ("not_json", lambda e: (e["user_id"].encode(), b'{"event_id": "x", "user_id": ')),
    ("not_object", lambda e: (e["user_id"].encode(), b'["an", "array"]')),
    ("missing_field", lambda e: (e["user_id"].encode(), _json({k: v for k, v in e.items() if k != "item_id"}))),
    ("missing_field", lambda e: (e["user_id"].encode(), _json({k: v for k, v in e.items() if k != "ts"}))),
    ("unknown_type", lambda e: (e["user_id"].encode(), _json({**e, "type": "teleport"}))),
    ("bad_ts", lambda e: (e["user_id"].encode(), _json({**e, "ts": float("nan")}))),
    ("bad_ts", lambda e: (e["user_id"].encode(), _json({**e, "ts": float("inf")}))),
    ("future_ts", lambda e: (e["user_id"].encode(), _json({**e, "ts": time.time() + 3 * 86_400}))),
    ("context_too_large", lambda e: (e["user_id"].encode(), _json({**e, "context": {"blob": "x" * (1024 * 1024)}}))),
    ("wrong_type", lambda e: (e["user_id"].encode(), _json({**e, "ts": "yesterday"}))),
    ("wrong_type", lambda e: (b"[1]", _json({**e, "user_id": [1]}))),
    ("bad_id", lambda e: (b"", _json({**e, "user_id": ""}))),
    ("bad_id", lambda e: (e["user_id"].encode(), _json({**e, "item_id": "i" * 200}))),
    ("wrong_key", lambda e: (b"someone-else", _json(e))),
]


def test_malformed_events_are_dead_lettered_and_good_ones_applied(kafka, tmp_path):
    rng = random.Random(5)
    messages, expected_bad, good = [], [], []
    for i in range(2000):
        event = good_event(i, rng)
        if i % 10 == 3:
            reason, make = BAD_MAKERS[(i // 10) % len(BAD_MAKERS)]
            messages.append(make(event))
            expected_bad.append((len(messages) - 1, reason))
        else:
            messages.append((event["user_id"].encode(), orjson.dumps(event)))
            good.append(event)
    assert len(expected_bad) == 200

    worker = Worker(isolated_env(kafka, "badinput", partitions=2), tmp_path / "data")
    worker.start()
    try:
        produce_raw(worker.settings, messages)
        wait_until(
            lambda: worker.metric("strata_events_processed_total") + worker.metric("strata_events_deadlettered_total") >= 2000,
            120,
            "all 2,000 messages handled",
        )
        assert worker.alive(), worker.log_tail()
        assert worker.get("/healthz")[0] == 200

        dead = read_topic(worker.settings, worker.settings.topic("deadletter"), expected=200)
        records = [json.loads(r.value) for r in dead]
        assert len(records) == 200
        by_reason: dict[str, int] = {}
        for record in records:
            assert record["reason"] and record["detail"], record
            assert record["topic"] == worker.settings.topic("events")
            by_reason[record["reason"]] = by_reason.get(record["reason"], 0) + 1
        expected_counts: dict[str, int] = {}
        for _, reason in expected_bad:
            expected_counts[reason] = expected_counts.get(reason, 0) + 1
        assert by_reason == expected_counts
        # The big one keeps its size and where the original lies.
        big = [r for r in records if r["reason"] == "context_too_large"]
        assert big and all(r["raw_size"] > 1024 * 1024 and r["raw_truncated"] for r in big)
        assert worker.metric("strata_events_deadlettered_total") == 200

        params = worker.settings.profile
        reference = build_profiles((parse_event(e, time.time()) for e in good), Catalog(), params)
        assert worker.metric("strata_events_processed_total") == len(good) == 1800
        for user_id, profile in reference.items():
            status, body = worker.get(f"/users/{user_id}/profile")
            assert status == 200
            assert_profile_matches(body, profile, params)
    finally:
        worker.stop()
