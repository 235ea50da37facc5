"""/healthz answers 503 while a worker recovers its tables and 200 once it serves: a worker whose
data directory is gone rebuilds every profile from the changelog, and a probe (Kubernetes'
readiness, a load balancer) polling from the moment its port opens sees it "starting" until then,
first while it joins the group (no partitions yet), then while it recovers the partitions it was
given."""
from __future__ import annotations

import shutil

import pytest

from tests.integration.harness import Worker, all_profiles, isolated_env, publish, synthetic_log, wait_until

pytestmark = pytest.mark.integration

PARTITIONS = 4


def test_healthz_is_503_while_the_profiles_are_recovered_from_the_changelog(kafka, tmp_path):
    # Enough users that recovering their profiles outlasts many polls of the probe.
    catalog_records, events, users = synthetic_log("users=6000,items=3000,events=30000", seed=21)
    env = isolated_env(kafka, "recoveryhealth", partitions=PARTITIONS)
    data_dir = tmp_path / "data"

    worker = Worker(env, data_dir)
    worker.start()
    try:
        publish(worker.settings, catalog_records, [])
        summary = publish(worker.settings, [], events)
        wait_until(lambda: worker.metric("strata_events_processed_total") >= summary.sent, 120, "the replay processed")
        sample = users[::50]
        before = all_profiles(worker, sample)
    finally:
        worker.stop()

    shutil.rmtree(data_dir)
    worker = Worker(env, data_dir, port=worker.settings.web_port)
    answers: list[tuple[int, dict]] = []
    recovered_while_starting: list[float] = []  # changelog records recovered, at each 503 with partitions assigned

    def probe() -> bool:
        worker.check_running()
        status, body = worker.get("/healthz")
        if status:  # 0: the port is not open yet
            answers.append((status, body))
            if status == 503 and body.get("partitions") and body.get("reason", "").startswith("recovering"):
                recovered_while_starting.append(worker.metric("strata_changelog_records_recovered"))
        return status == 200

    try:
        worker.spawn()
        wait_until(probe, 60, "the worker to answer /healthz with 200", interval=0.02)
        *starting, (status, ready) = answers
        assert starting, "the first answer of the worker was already 200: no recovery was seen"
        for status_then, body in starting:
            assert (status_then, body["status"]) == (503, "starting") and body["reason"], body
        assert ready["status"] == "ok" and ready["partitions"] == list(range(PARTITIONS)), ready
        recovered = worker.metric("strata_changelog_records_recovered")
        assert recovered >= len(users)  # every profile came back from the changelog
        # Some 503s came with the partitions assigned and their changelog not all read yet.
        assert recovered_while_starting and min(recovered_while_starting) < recovered, (recovered_while_starting[:3], recovered)
        assert all_profiles(worker, sample) == before
    finally:
        worker.stop()
