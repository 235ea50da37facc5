"""Ingest over HTTP (issue 27): `POST /events` round-trips to a profile; bad input gets a 400 with
every reason, an oversized body a 413 and a missing token a 401; a batch answers per event, and
every event it answered 202 for is applied even when the worker is killed with -9 right after."""
from __future__ import annotations

import signal
import time

import orjson
import pytest

from tests.integration.harness import Worker, isolated_env, wait_until

pytestmark = pytest.mark.integration

TOKEN = "ingest-test-token-0123456789"


def _event(n: int, user: str = "web-user") -> dict:
    return {"event_id": f"http-{n}", "user_id": user, "item_id": f"i{n % 5}", "type": "view", "ts": time.time() - 60 + n * 0.01}


def _events(worker: Worker, user: str) -> int:
    status, body = worker.get(f"/users/{user}/profile")
    return body["events"] if status == 200 else 0


def test_events_posted_over_http(kafka, tmp_path):
    env = {**isolated_env(kafka, "ingest"), "STRATA_API_TOKEN": TOKEN}
    worker = Worker(env, tmp_path / "data")
    worker.start()
    try:
        status, body = worker.post("/events", orjson.dumps(_event(0)), headers={})
        assert status == 401 and "bearer token" in body["error"]

        status, body = worker.post("/events", orjson.dumps(_event(0)))
        assert status == 202 and body["event_id"] == "http-0" and body["offset"] >= 0, body
        wait_until(lambda: _events(worker, "web-user") == 1, 30, "the posted event in its profile")

        status, body = worker.post("/events", orjson.dumps({"user_id": "web-user", "type": "look", "ts": -1}))
        assert status == 400
        assert [r["reason"] for r in body["reasons"]] == ["missing_field", "missing_field", "unknown_type", "bad_ts"]
        assert worker.post("/events", b"{not json")[0] == 400
        big = worker.post("/events", b'{"pad": "' + b"x" * (1 << 20) + b'"}')
        assert big[0] == 413, big
        assert worker.post("/events:batch", orjson.dumps([_event(n) for n in range(1001)]))[0] == 413

        batch = [_event(n, f"batch-user-{n % 4}") for n in range(1, 49)] + [{"event_id": "bad"}, {**_event(99), "ts": "soon"}]
        status, body = worker.post("/events:batch", orjson.dumps({"events": batch}))
        assert status == 200 and body["accepted"] == 48 and body["rejected"] == 2, body
        assert [r["status"] for r in body["results"]] == [202] * 48 + [400, 400]
        assert body["results"][49]["reasons"] == [{"reason": "wrong_type", "detail": "'ts' must be a number, got str"}]
        worker.stop(signal.SIGKILL)  # right after the answer: what was acknowledged is on the topic

        worker = Worker(env, tmp_path / "data", port=worker.settings.web_port)
        worker.start(timeout=90)
        wait_until(lambda: sum(_events(worker, f"batch-user-{u}") for u in range(4)) == 48, 60, "every accepted event applied")
        assert worker.metric('strata_http_events_total{outcome="accepted"}') == 0  # counted by the worker that took them
    finally:
        worker.stop()
