"""A request for a user whose owner hangs — it accepts connections and answers nothing (stopped,
swapping, its event loop stuck) — is answered by the worker it reached with a JSON 503 and
Retry-After once the forward's time is up (`streams.app.forwarding_client`,
`streams.views.owner_route`), not held for minutes; once the owner runs again, it answers."""
from __future__ import annotations

import signal
import time

import pytest

from strata.streams.app import FORWARD_TIMEOUT_S
from strata.streams.state import home_partition
from tests.integration.harness import (
    Worker,
    group_caught_up,
    isolated_env,
    owned,
    publish,
    start_split,
    synthetic_log,
    wait_until,
)

pytestmark = pytest.mark.integration

PARTITIONS = 4


def test_a_hanging_owner_costs_the_client_a_503_after_the_forward_timeout(kafka, tmp_path):
    catalog_records, events, users = synthetic_log("users=100,items=500,events=2000", seed=29)
    env = isolated_env(kafka, "hanging", partitions=PARTITIONS)
    a, b = Worker(env, tmp_path / "data-a"), Worker(env, tmp_path / "data-b")
    try:
        start_split(a, b, catalog_records)
        publish(a.settings, [], events)
        wait_until(lambda: group_caught_up(a.settings), 120, "the group to commit every event")
        user = next(u for u in users if home_partition(u.encode(), PARTITIONS) in owned(a))
        assert b.get(f"/users/{user}/profile")[0] == 200  # forwarded to a, which answers

        a.proc.send_signal(signal.SIGSTOP)
        try:
            started = time.monotonic()
            status, body = b.get(f"/users/{user}/profile", timeout=FORWARD_TIMEOUT_S + 20)
            took = time.monotonic() - started
        finally:
            a.proc.send_signal(signal.SIGCONT)
        assert status == 503 and "did not answer" in body["error"], (status, body)
        assert FORWARD_TIMEOUT_S - 0.5 <= took <= FORWARD_TIMEOUT_S + 5, took
        assert b.metric("strata_owner_unreachable_total") == 1
        wait_until(lambda: b.get(f"/users/{user}/profile")[0] == 200, 90, "the user's profile answered again")
    finally:
        a.stop()
        b.stop()
