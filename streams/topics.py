"""The topics Strata owns: one list, used by the Faust app and by the plain clients."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from strata.streams.config import Settings

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # a 1 MiB context must reach the dead-letter path, not bounce at the broker


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False

    retention_ms: int | None = None

    def config(self) -> dict[str, str]:
        cfg = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
        if self.compacted:
            cfg["cleanup.policy"] = "compact"
        if self.retention_ms is not None:
            cfg["retention.ms"] = str(self.retention_ms)
        return cfg


def topic_specs(settings: Settings) -> dict[str, TopicSpec]:
    """events: keyed by user, so a user's profile lives on one partition; catalog: compacted, one partition,
    read whole by every worker; deadletter: rejected events with their reasons; item-factors: versioned
    factor chunks, read whole by every worker (a week of versions kept); user-factors: batch user
    vectors keyed by user, co-partitioned with events; impressions: every served list, keyed by
    user, co-partitioned with events (a week kept); attributions: every event attributed to a
    served list, keyed by user (a week kept; `strata ab report` reads both)."""
    p = settings.partitions
    return {
        "events": TopicSpec(settings.topic("events"), p),
        "catalog": TopicSpec(settings.topic("catalog"), 1, compacted=True),
        "deadletter": TopicSpec(settings.topic("deadletter"), 1),
        "item-factors": TopicSpec(settings.topic("item-factors"), 1, retention_ms=7 * 86_400_000),
        "user-factors": TopicSpec(settings.topic("user-factors"), p, compacted=True),
        "activity": TopicSpec(settings.topic("activity"), 1, retention_ms=3 * 86_400_000),
        "impressions": TopicSpec(settings.topic("impressions"), p, retention_ms=7 * 86_400_000),
        "attributions": TopicSpec(settings.topic("attributions"), p, retention_ms=7 * 86_400_000),
    }


async def ensure_topics(settings: Settings) -> None:
    """Create the topics that do not exist yet (idempotent)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(**settings.aiokafka_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(s.name, s.partitions, 1, topic_configs=s.config())
            for s in topic_specs(settings).values()
            if s.name not in existing
        ]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def delete_app_topics(settings: Settings) -> list[str]:
    """Delete every topic of this app id and prefix: ours (`<prefix>events`, …) and Faust's
    (`<app id>-user_to_profile-changelog`, `<app id>-__assignor-__leader`, …).  For benchmarks,
    which make a throwaway app id per run; never called on a deployment's settings."""
    from aiokafka.admin import AIOKafkaAdminClient

    mine = tuple(p for p in (settings.topic_prefix, f"{settings.app_id}-") if p)
    admin = AIOKafkaAdminClient(**settings.aiokafka_kwargs())
    await admin.start()
    try:
        doomed = sorted(t for t in await admin.list_topics() if t.startswith(mine))
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()
    return doomed


async def topic_partitions(settings: Settings, names) -> dict[str, list[int]]:
    """The partition numbers of each named topic ([] for one that does not exist), with one admin
    client.  Only the topics that exist are described: a metadata request naming a missing topic
    makes a broker that creates topics on first use create it, with its default partition count."""
    from aiokafka.admin import AIOKafkaAdminClient

    names = list(names)
    admin = AIOKafkaAdminClient(**settings.aiokafka_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        described = await admin.describe_topics([n for n in names if n in existing]) if existing & set(names) else []
    finally:
        await admin.close()
    found = {name: [] for name in names}
    for entry in described:
        if entry.get("topic") in found and not entry.get("error_code"):
            found[entry["topic"]] = sorted(p["partition"] for p in entry.get("partitions", []))
    return found


async def partitions_of(settings: Settings, topic: str) -> list[int]:
    """The partition numbers of a topic ([] when it does not exist): `topic_partitions` of one."""
    return (await topic_partitions(settings, [topic]))[topic]


async def check_topics(settings: Settings, create: bool = True) -> list[str]:
    """Create missing topics (with `create`), then what is wrong: topics absent, or with another
    partition count than their spec (the events and user-factors topics must have STRATA_PARTITIONS,
    like the profile table's changelog, or users would be looked up on the wrong partition)."""
    if create:
        await ensure_topics(settings)
    specs = topic_specs(settings).values()
    found = await topic_partitions(settings, (spec.name for spec in specs))
    problems = []
    for spec in specs:
        if not found[spec.name]:
            problems.append(f"topic {spec.name} does not exist")
        elif len(found[spec.name]) != spec.partitions:
            problems.append(f"topic {spec.name} has {len(found[spec.name])} partitions, expected {spec.partitions}")
    return problems


def _miscounted(settings: Settings, found: dict[str, list[int]]) -> list[str]:
    """The keyed topics (events, user-factors) among `found` that exist with another partition count
    than STRATA_PARTITIONS."""
    specs = [topic_specs(settings)[key] for key in ("events", "user-factors")]
    return [f"topic {spec.name} has {len(found[spec.name])} partitions, STRATA_PARTITIONS says {spec.partitions}"
            for spec in specs if found[spec.name] and len(found[spec.name]) != spec.partitions]


async def keyed_topic_problems(settings: Settings) -> list[str]:
    """What is wrong with the topics keyed by user (events, user-factors): a partition count other
    than STRATA_PARTITIONS puts users on other partitions than their profiles (see docs/design.md,
    "Partitioning"), so a worker refuses to start on it."""
    specs = topic_specs(settings)
    return _miscounted(settings, await topic_partitions(settings, (specs["events"].name, specs["user-factors"].name)))


async def worker_topic_problems(settings: Settings) -> tuple[list[str], list[str]]:
    """Create the topics that are missing, then what keeps a worker from starting: a topic it
    reads that still does not exist (it follows every one from the start), and the keyed topics
    with another partition count (`keyed_topic_problems`).  A broker that refuses to create
    topics (no permission) leaves them to its operators (`strata topics`), and the check says
    which are missing."""
    from aiokafka.errors import KafkaError

    try:
        await ensure_topics(settings)
    except KafkaError as exc:
        log.warning("could not create missing topics (%s); checking what exists", exc)
    found = await topic_partitions(settings, (spec.name for spec in topic_specs(settings).values()))
    missing = [f"topic {name} does not exist (`strata topics` creates it)" for name, parts in found.items() if not parts]
    return missing, _miscounted(settings, found)
