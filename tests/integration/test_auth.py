"""STRATA_API_TOKEN: with a token set, every view but /healthz and /metrics answers 401 (JSON) to a
request without it or with a wrong one — Faust's own pages too — and a request one worker forwards
to the owner of the user's partition carries it on.  (A bad token setting: tests/streams/test_security.py.) """
from __future__ import annotations

import pytest

from tests.integration.harness import Worker, group_caught_up, isolated_env, publish, wait_until

pytestmark = pytest.mark.integration

TOKEN = "0123456789abcdef-test-token"
USERS = [f"u{n}" for n in range(40)]


def _ready_and_split(a: Worker, b: Worker) -> bool:
    parts = [w.get("/healthz")[1].get("partitions") or [] for w in (a, b)]
    return all(parts) and sorted(parts[0] + parts[1]) == [0, 1, 2, 3]


def test_views_require_the_token_and_forwarding_carries_it(kafka, tmp_path):
    env = {**isolated_env(kafka, "auth"), "STRATA_API_TOKEN": TOKEN}
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a, b = Worker(env, tmp_path / "a" / "data"), Worker(env, tmp_path / "b" / "data")
    a.start()
    try:
        b.start()
        wait_until(lambda: _ready_and_split(a, b), 90, "the two workers to split the partitions")
        events = [{"event_id": f"e{n}", "user_id": USERS[n % len(USERS)], "item_id": f"i{n % 7}", "type": "view",
                   "ts": 1_700_000_000.0 + n} for n in range(400)]
        publish(a.settings, [], events)
        wait_until(lambda: group_caught_up(a.settings), 60, "the events applied")

        for user in USERS:  # half of them live on b: a forwards, with the caller's token
            assert a.get(f"/users/{user}/profile")[0] == 200
            assert a.get(f"/users/{user}/recommendations?k=3")[0] == 200
        for path in ("/users/u1/profile", "/users/u2/recommendations", "/items/i1/similar", "/model", "/router/", "/table/"):
            for headers in ({}, {"Authorization": "Bearer wrong-token-of-some-length"}, {"Authorization": TOKEN}):
                status, body = a.get(path, headers=headers)
                assert status == 401, (path, headers, status, body)
                assert "bearer token" in body["error"]
        for path in ("/healthz", "/metrics"):
            assert a.get(path, headers={})[0] == 200
    finally:
        b.stop()
        a.stop()
