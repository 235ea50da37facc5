"""The harness itself: a worker that dies is reported at once, with its log, not as a timeout."""
from __future__ import annotations

import time

import pytest

from tests.integration.harness import Worker, WorkerDied, isolated_env, wait_until


def test_a_worker_that_exits_fails_the_wait_at_once(tmp_path):
    worker = Worker(isolated_env("127.0.0.1:1", "harness"), tmp_path / "data",
                    command=("-c", "import sys; print('boom: no broker here'); sys.exit(3)"))
    started = time.monotonic()
    with pytest.raises(WorkerDied) as info:
        worker.start(timeout=60)
    assert time.monotonic() - started < 30 and "exited with 3" in str(info.value) and "boom" in str(info.value)
    with pytest.raises(WorkerDied):
        wait_until(lambda: worker.metric("strata_events_processed_total") > 0, 60, "events")
    assert time.monotonic() - started < 30
