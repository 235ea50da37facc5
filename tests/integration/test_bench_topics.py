"""Benchmarks clean up after themselves: a run's topics go, nobody else's."""
from __future__ import annotations

import asyncio

import pytest

from strata.streams.config import Settings
from strata.streams.topics import delete_app_topics, ensure_topics
from tests.integration.harness import isolated_env, wait_until

pytestmark = pytest.mark.integration


async def _topics(settings: Settings) -> set[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**settings.aiokafka_kwargs())
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def test_a_runs_topics_are_deleted_and_no_others(kafka):
    run = Settings.from_env(isolated_env(kafka, "bench-run", partitions=2))
    # Another deployment whose app id starts like the run's: not a prefix of the run's topics.
    other = Settings.from_env({**isolated_env(kafka, "x", partitions=2), "STRATA_APP_ID": run.app_id + "x",
                               "STRATA_TOPIC_PREFIX": run.app_id + "x."})
    asyncio.run(ensure_topics(run))
    asyncio.run(ensure_topics(other))
    faust_internal = f"{run.app_id}-user_to_profile-changelog"
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def create_changelog():
        admin = AIOKafkaAdminClient(**run.aiokafka_kwargs())
        await admin.start()
        try:
            await admin.create_topics([NewTopic(faust_internal, 2, 1)])
        finally:
            await admin.close()

    asyncio.run(create_changelog())
    ours = wait_until(
        lambda: (found := {t for t in asyncio.run(_topics(run)) if t.startswith((run.topic_prefix, f"{run.app_id}-"))})
        >= {run.topic("events"), faust_internal} and found,
        30, "the run's topics to be listed",
    )

    deleted = asyncio.run(delete_app_topics(run))

    assert set(deleted) == ours
    left = wait_until(lambda: (now := asyncio.run(_topics(run))) and not now & ours and now, 30, "the run's topics to go")
    assert other.topic("events") in left  # same leading characters, another deployment
