"""Shared fixtures: the real local Kafka broker (started once per test session) and the data directory."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
TEST_KAFKA_PORT = int(os.environ.get("STRATA_TEST_KAFKA_PORT", "29092"))


def data_file(*parts: str) -> Path:
    """A file of ../shared/data, or a skip that says why it is missing."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the licensed logs live in ../shared/data beside the checkout, not in the repository")
    return path


@pytest.fixture(scope="session")
def kafka_dir(tmp_path_factory) -> Path:
    """The directory of the session's broker (`STRATA_KAFKA_DIR`: a command that starts the broker,
    such as `strata demo`, finds it running there)."""
    return tmp_path_factory.mktemp("kafka")


@pytest.fixture(scope="session")
def kafka(kafka_dir) -> str:
    """Bootstrap address of a real single-node Kafka, started for this session and stopped after it."""
    from strata.streams import kafka_local

    env = {"STRATA_KAFKA_DIR": str(kafka_dir)}
    kafka_local.run("start", port=TEST_KAFKA_PORT, env=env)
    try:
        yield f"127.0.0.1:{TEST_KAFKA_PORT}"
    finally:
        kafka_local.run("stop", port=TEST_KAFKA_PORT, env=env, check=False)
