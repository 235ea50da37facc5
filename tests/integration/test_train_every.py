"""`strata train --every` keeps its schedule through a broker outage (docs/design.md §4, issue 3).

The trainer gets a broker of its own, so that stopping it disturbs no other test.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from strata.models.logs.loaders import open_log
from strata.streams import kafka_local
from strata.streams.config import Settings
from tests.integration.harness import broker_port_pair, isolated_env, publish, wait_until

pytestmark = pytest.mark.integration


def test_train_every_survives_a_broker_restart(tmp_path):
    port = broker_port_pair()
    broker_env = {"STRATA_KAFKA_DIR": str(tmp_path / "kafka")}
    env = isolated_env(f"127.0.0.1:{port}", "every", partitions=2)
    settings = Settings.from_env(env)
    out_path = tmp_path / "train.log"

    kafka_local.run("start", port=port, env=broker_env)
    trainer = None
    try:
        source = open_log("users=60,items=200,events=1500", "synthetic", seed=5)
        publish(settings, [], source.events())

        child_env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
        child_env.update(env, PYTHONUNBUFFERED="1")
        with open(out_path, "wb") as out:
            trainer = subprocess.Popen(
                [sys.executable, "-m", "strata.streams", "train", "--every", "1s", "--factors", "4", "--iterations", "2"],
                env=child_env, stdout=out, stderr=subprocess.STDOUT,
            )

        def output() -> str:
            assert trainer.poll() is None, f"the trainer exited with {trainer.returncode}:\n{out_path.read_text()}"
            return out_path.read_text()

        def published() -> int:
            return output().count("published item factors")

        wait_until(lambda: published() >= 1, 120, "a first training run")

        kafka_local.run("stop", port=port, env=broker_env)
        wait_until(lambda: "training failed, retrying at the next run" in output(), 180, "the trainer to notice the outage")
        before = published()

        kafka_local.run("start", port=port, env=broker_env)
        wait_until(lambda: published() > before, 180, "a training run after the broker came back")
        assert trainer.poll() is None
    finally:
        if trainer is not None and trainer.poll() is None:
            trainer.terminate()
            trainer.wait(30)
        kafka_local.run("stop", port=port, env=broker_env, check=False)
