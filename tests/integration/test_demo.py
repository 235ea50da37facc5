"""`strata demo` twice in a row on the same broker and data directory shows the same profiles both
times: the second replay's events are the first's, dropped as already applied."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.integration.harness import free_port, isolated_env

pytestmark = pytest.mark.integration

EVENTS = 1_500


def _demo(env: dict[str, str]) -> str:
    child = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")} | env
    done = subprocess.run([sys.executable, "-m", "strata.streams", "demo", "--users", "40", "--events", str(EVENTS), "--rate", "50000"],
                          env=child, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _final_profiles(out: str) -> str:
    block = out.split("── final profiles", 1)[1]
    return block.split("\n\n", 1)[0]


def test_a_second_demo_shows_the_same_profiles(kafka, kafka_dir, tmp_path):
    env = {**isolated_env(kafka, "demo"), "STRATA_KAFKA_DIR": str(kafka_dir), "STRATA_DATA_DIR": str(tmp_path / "data"),
           "STRATA_WEB_PORT": str(free_port())}
    first, second = _demo(env), _demo(env)
    assert f"applied {EVENTS:,}, dropped as already applied 0" in first
    assert f"applied 0, dropped as already applied {EVENTS:,}" in second
    assert "events, as of" in _final_profiles(first)
    assert _final_profiles(second) == _final_profiles(first)
