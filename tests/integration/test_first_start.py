"""A worker started on a broker that has none of its topics creates them, each with its own
partition count, before it joins the group: a topic the broker created on first use would get the
broker's default count, and the feeds a worker follows from the start would find nothing to
follow."""
from __future__ import annotations

import asyncio

import pytest

from strata.streams.config import Settings
from strata.streams.topics import partitions_of, topic_specs, worker_topic_problems
from tests.integration.harness import Worker, isolated_env

pytestmark = pytest.mark.integration


def test_asking_for_missing_topics_creates_none_and_the_start_check_creates_each_with_its_count(kafka):
    """A metadata request naming a missing topic makes a broker that creates topics on first use
    (the local one does) create it with the broker's count: the check must not ask that way."""
    settings = Settings.from_env(isolated_env(kafka, "startcheck", partitions=3))
    specs = topic_specs(settings).values()
    assert all(asyncio.run(partitions_of(settings, spec.name)) == [] for spec in specs)
    assert asyncio.run(worker_topic_problems(settings)) == ([], [])
    for spec in specs:
        assert len(asyncio.run(partitions_of(settings, spec.name))) == spec.partitions, spec.name


def test_a_worker_on_a_bare_broker_creates_its_topics_with_their_partition_counts(kafka, tmp_path):
    env = isolated_env(kafka, "firststart", partitions=3)  # not the broker's default count
    worker = Worker(env, tmp_path / "data")
    specs = topic_specs(worker.settings)

    async def counts() -> dict[str, int]:
        return {spec.name: len(await partitions_of(worker.settings, spec.name)) for spec in specs.values()}

    assert set(asyncio.run(counts()).values()) == {0}  # nothing exists yet
    worker.start()
    try:
        assert worker.get("/healthz")[0] == 200
        assert asyncio.run(counts()) == {spec.name: spec.partitions for spec in specs.values()}
        assert specs["events"].partitions == 3
    finally:
        worker.stop()
