"""Monitoring: after a replay of good and bad events, GET /metrics counts exactly what was applied (by
type) and rejected (by reason), the latency histogram saw every record (in seconds), profiles and
lag gauges are right; `strata kafka lag` (Kafka's own ConsumerGroupCommand from the fetched jars)
shows the worker group's per-partition lag, and the lag of events produced while it is down."""
from __future__ import annotations

import json
import re
import subprocess
import time
from collections import Counter

import pytest

from strata.models.logs.loaders import open_log
from strata.models.terms import TERMS
from tests.integration.harness import (
    Worker, group_caught_up, isolated_env, produce_raw, publish, read_topic, strata_cli, wait_until,
)

pytestmark = pytest.mark.integration

PARTITIONS = 3


def parse_metrics(text: str) -> dict[str, float]:
    """'name{labels}' → value, for every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def bad_messages(now: float) -> tuple[list[tuple[bytes | None, bytes]], Counter]:
    good = {"event_id": "x", "user_id": "bad-u", "item_id": "i1", "type": "view", "ts": now - 10}
    cases = [
        ("not_json", b"bad-u", b"{this is not json"),
        ("not_object", b"bad-u", b"[1, 2, 3]"),
        ("unknown_type", b"bad-u", json.dumps({**good, "event_id": "b1", "type": "teleport"}).encode()),
        ("missing_field", b"bad-u", json.dumps({k: v for k, v in good.items() if k != "item_id"} | {"event_id": "b2"}).encode()),
        ("future_ts", b"bad-u", json.dumps({**good, "event_id": "b3", "ts": now + 5 * 86_400}).encode()),
        ("wrong_key", b"someone-else", json.dumps({**good, "event_id": "b4"}).encode()),
        ("bad_id", b"x" * 200, json.dumps({**good, "event_id": "b5", "user_id": "x" * 200}).encode()),
        ("not_json", b"bad-u", b"\xff\xfe"),
    ]
    return [(key, value) for _, key, value in cases], Counter(reason for reason, _, _ in cases)


def strata(env: dict, *args: str) -> subprocess.CompletedProcess:
    return strata_cli(env, *args, timeout=180)


def lag_rows(output: str, topic: str) -> dict[int, tuple[int, int, int]]:
    """partition → (current offset, log-end offset, lag) of the events topic in ConsumerGroupCommand output."""
    rows = {}
    for line in output.splitlines():
        cols = line.split()
        if len(cols) >= 6 and cols[1] == topic and cols[2].isdigit():
            rows[int(cols[2])] = tuple(int(c) if re.fullmatch(r"-?\d+", c) else -1 for c in cols[3:6])
    return rows


def test_metrics_count_what_was_sent_and_rejected_and_kafka_lag_shows_the_group(kafka, tmp_path):
    source = open_log("users=300,items=800,events=6000", "synthetic", seed=8)
    catalog_records = list(source.catalog())
    events = list(source.events())
    env = isolated_env(kafka, "metrics", partitions=PARTITIONS)
    worker = Worker(env, tmp_path / "data")
    worker.start(timeout=60)
    settings = worker.settings
    try:
        publish(settings, catalog_records, [])
        wait_until(lambda: worker.get("/healthz")[1].get("catalog_entries", 0) >= len(catalog_records), 60, "catalog loaded")
        # Counted now (nothing stored), the profiles are from here on only added up by the writes.
        assert worker.metric("strata_profiles_stored") == 0
        summary = publish(settings, [], events)
        assert summary.sent == len(events) and summary.rejected == 0
        bad, rejected = bad_messages(time.time())
        produce_raw(settings, bad)
        wait_until(lambda: group_caught_up(settings), 180, "the worker group to commit every event")

        status, text = worker.get("/metrics")
        assert status == 200
        m = parse_metrics(str(text))
        by_type = Counter(e["type"] for e in events)
        for etype, n in by_type.items():
            assert m[f'strata_events_processed_total{{type="{etype}"}}'] == n, etype
        assert sum(v for k, v in m.items() if k.startswith("strata_events_processed_total{")) == len(events)
        for reason, n in rejected.items():
            assert m[f'strata_events_deadlettered_total{{reason="{reason}"}}'] == n, reason
        assert sum(v for k, v in m.items() if k.startswith("strata_events_deadlettered_total{")) == len(bad)
        dead = read_topic(settings, settings.topic("deadletter"), len(bad))
        assert Counter(json.loads(r.value)["reason"] for r in dead) == rejected

        # Every applied event observed once (the rejected records changed no profile), in seconds:
        # well under a minute each, buckets cumulative.
        assert m["strata_update_latency_seconds_count"] == len(events)
        assert 0 < m["strata_update_latency_seconds_sum"] / m["strata_update_latency_seconds_count"] < 60
        buckets = [(k, v) for k, v in m.items() if k.startswith("strata_update_latency_seconds_bucket")]
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)
        assert buckets[-1] == ('strata_update_latency_seconds_bucket{le="+Inf"}', len(events))
        # The event loop's lag is watched from the start, every 50 ms.
        assert m["strata_event_loop_lag_seconds_count"] > 0
        assert m['strata_event_loop_lag_seconds_bucket{le="+Inf"}'] == m["strata_event_loop_lag_seconds_count"]

        assert m["strata_profiles_stored"] == len({e["user_id"] for e in events})
        assert m["strata_model_version"] == 0  # nothing trained yet
        # no standby copies (STRATA_STANDBY_REPLICAS=0): the catalog is counted as what it is
        assert m["strata_standby_records_applied"] == 0 and m["strata_catalog_records_applied"] == len(catalog_records)

        # What the activity records say about the shop: co-visitation rows, and θ by term.
        wait_until(lambda: worker.metric("strata_covisit_items") > 0, 30, "co-visitation from the activity topic")
        m = parse_metrics(str(worker.get("/metrics")[1]))
        weights = {k for k in m if k.startswith("strata_ranker_weight{")}
        assert weights == {f'strata_ranker_weight{{term="{t}"}}' for t in TERMS}
        wait_until(lambda: parse_metrics(str(worker.get("/metrics")[1]))["strata_consumer_lag_total"] == 0, 30, "lag gauge 0")
        m = parse_metrics(str(worker.get("/metrics")[1]))
        assert {k for k in m if k.startswith("strata_consumer_lag{")} == {f'strata_consumer_lag{{partition="{p}"}}' for p in range(PARTITIONS)}

        # Ids and query parameters are checked where the request arrives: 400 with a JSON message.
        for path, fragment in [
            ("/users/u1/recommendations?k=abc", "k must"),
            ("/users/u1/recommendations?k=0", "k must"),
            ("/users/u1/recommendations?k=99999999999", "k must"),
            ("/users/u1/recommendations?k=10&bogus=1", "unknown query parameter"),
            ("/users/u1/recommendations?k=1&k=2", "more than once"),
            ("/users/u1/recommendations?explain=maybe", "explain must"),
            ("/users/u1/recommendations?category=" + "c" * 200, "category must"),
            ("/users/u1/recommendations?category=a%00b", "category must"),
            ("/users/u1/recommendations?category=" + "c" * 100 + "&k=1" + "0" * 1000, "longer than"),
            ("/users/" + "x" * 129 + "/profile", "user_id must"),
            ("/users/a%01b/profile", "user_id must"),
            ("/users/u1/profile?debug=1", "unknown query parameter"),
        ]:
            status, body = worker.get(path)
            assert status == 400 and isinstance(body, dict) and fragment in body["error"], (path, status, body)
        assert worker.get("/users/u1/recommendations?k=3&explain=true&exclude_purchased=0")[0] == 200
        # the list served goes onto the events topic too (a Served record, for attribution)
        wait_until(lambda: worker.metric("strata_ab_impressions_total") == 1, 30, "the served list applied")
        wait_until(lambda: group_caught_up(settings), 60, "the served list committed")
        served = 1

        # Kafka's own tool: every events partition of the group, committed at the end, lag 0.
        kafka_env = {**env, "STRATA_KAFKA_BOOTSTRAP": settings.kafka_bootstrap}
        result = strata(kafka_env, "kafka", "lag")
        assert result.returncode == 0, result.stderr
        rows = lag_rows(result.stdout, settings.topic("events"))
        assert sorted(rows) == list(range(PARTITIONS)), result.stdout
        assert sum(end for _, end, _ in rows.values()) == len(events) + len(bad) + served
        assert all(lag == 0 and cur == end for cur, end, lag in rows.values()), result.stdout
        unknown = strata(kafka_env, "kafka", "lag", "no-such-group")
        assert unknown.returncode == 1 and "no consumer group 'no-such-group'" in unknown.stderr, unknown
        assert "Exception" not in unknown.stderr + unknown.stdout
    finally:
        worker.stop()

    # With the worker stopped, new events are lag: the tool shows exactly how many, per partition.
    more = list(open_log("users=50,items=800,events=500", "synthetic", seed=9).events())
    publish(settings, [], more)
    result = strata(kafka_env, "kafka", "lag", settings.app_id)
    assert result.returncode == 0, result.stderr
    rows = lag_rows(result.stdout, settings.topic("events"))
    assert sum(lag for _, _, lag in rows.values()) == len(more), result.stdout
    assert sum(end for _, end, _ in rows.values()) == len(events) + len(bad) + served + len(more)
