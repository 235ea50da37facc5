"""A recommendation request for a user of another worker's partition is answered where it arrives,
from that worker's standby copy of the partition, while the copy is caught up
(`streams.views.answered_here`; further behind, or unknown during a rebalance, the request goes to
the owner through `table_route`).  The copy answers without the owner: killed -9, the owner stays
the owner until the group's session expires, and meanwhile the other worker answers its users'
recommendations from the standby, as before the kill, while their profiles (read-your-writes:
always the owner's) are answered 503 with Retry-After.  Once the group has rebalanced, the survivor owns every
partition and answers both."""
from __future__ import annotations

import signal

import pytest

from strata.streams.state import home_partition
from tests.integration.harness import (
    Worker,
    all_profiles,
    assert_same_recommendations,
    group_caught_up,
    isolated_env,
    owned,
    publish,
    recommendations,
    standbys_caught_up,
    start_split,
    synthetic_log,
    wait_until,
)

pytestmark = pytest.mark.integration

PARTITIONS = 4
ASKED = 20  # users of the killed worker asked for


def test_a_caught_up_standby_answers_recommendations_while_the_owner_is_down(kafka, tmp_path):
    catalog_records, events, users = synthetic_log("users=300,items=1000,events=6000", seed=13)
    env = {**isolated_env(kafka, "standby", partitions=PARTITIONS), "STRATA_STANDBY_REPLICAS": "1"}
    a = Worker(env, tmp_path / "data-a")
    b = Worker(env, tmp_path / "data-b")
    try:
        start_split(a, b, catalog_records)
        publish(a.settings, [], events)
        wait_until(lambda: group_caught_up(a.settings), 120, "the group to commit every event")
        wait_until(lambda: standbys_caught_up(a, b), 60, "each to keep the other's partitions as a caught-up standby")

        partitions_of_b = owned(b)
        of_a = [u for u in users if home_partition(u.encode(), PARTITIONS) in owned(a)][:ASKED]
        assert len(of_a) == ASKED
        before = recommendations(b, of_a)
        profiles = all_profiles(b, of_a)  # forwarded to a, their owner
        from_standby = b.metric("strata_recommendations_from_standby_total")

        a.stop(signal.SIGKILL)
        during = recommendations(b, of_a)
        profile_status, profile_body = b.get(f"/users/{of_a[0]}/profile")
        # Still in the session's grace: b had not noticed a was gone, a still owned its partitions.
        assert owned(b) == partitions_of_b, "the group rebalanced before the requests were answered"
        assert_same_recommendations(during, before)
        assert b.metric("strata_recommendations_from_standby_total") - from_standby == ASKED
        # The profile is read-your-writes, from the owner only: a good request, answered "try again".
        assert profile_status == 503 and "did not answer" in profile_body["error"], (profile_status, profile_body)
        assert b.metric("strata_owner_unreachable_total") >= 1

        wait_until(lambda: owned(b) == list(range(PARTITIONS)), 60, "b to own every partition")
        assert all_profiles(b, of_a) == profiles
    finally:
        b.stop()
        a.stop()
