"""A worker keeps the last item factors it assembled in its data directory (item-factors.npz) and
serves them at once after a restart.  A damaged file (a half-written copy, a flipped byte, not an
archive at all) does not stop the worker: it starts, logs why it ignores the file, serves the
factors from the item-factor topic, and writes a good file again."""
from __future__ import annotations

import pytest

from strata.models.factors import FactorModel
from tests.integration.harness import Worker, isolated_env, publish, strata_cli, synthetic_log, wait_until

pytestmark = pytest.mark.integration


def _truncated(raw: bytes) -> bytes:
    return raw[: len(raw) // 2]


def _flipped(raw: bytes) -> bytes:
    middle = len(raw) // 2
    return raw[:middle] + bytes([raw[middle] ^ 0xFF]) + raw[middle + 1:]


def _not_an_archive(raw: bytes) -> bytes:
    return b"\x00" * len(raw)


def model_version(worker: Worker):
    return worker.get("/model")[1].get("version")


@pytest.mark.parametrize("damage", [
    pytest.param(_truncated, id="truncated"),
    pytest.param(_flipped, id="flipped-byte"),
    pytest.param(_not_an_archive, id="not-an-archive"),
])
def test_a_damaged_factor_file_is_ignored_and_the_topic_serves(kafka, tmp_path, damage):
    catalog_records, events, _ = synthetic_log("users=200,items=500,events=4000", seed=17)
    env = isolated_env(kafka, "corruptfactors")
    data_dir = tmp_path / "data"
    saved = data_dir / "item-factors.npz"

    worker = Worker(env, data_dir)
    worker.start()
    try:
        summary = publish(worker.settings, catalog_records, events)
        wait_until(lambda: worker.metric("strata_events_processed_total") >= summary.sent, 60, "the replay processed")
        trained = strata_cli(worker.env, "train", "--factors", "4", "--iterations", "2")
        assert trained.returncode == 0, trained.stderr
        version = wait_until(lambda: model_version(worker), 60, "the worker to serve the trained factors")
        wait_until(lambda: saved.exists(), 30, f"{saved} written")
    finally:
        worker.stop()

    saved.write_bytes(damage(saved.read_bytes()))
    worker = Worker(env, data_dir, port=worker.settings.web_port)
    try:
        worker.start()
        wait_until(lambda: model_version(worker) == version, 60, "the factors served again, from the topic")
        assert "ignoring the saved factors" in worker.log_path.read_text(errors="replace"), worker.log_tail()
        # The file is good again: the version read from the topic, written over the damaged copy.
        wait_until(lambda: FactorModel.load(saved).version == version, 30, f"{saved} written again")
    finally:
        worker.stop()
