"""Agents: thin loops that decode, validate, and hand the maths to `models/`."""
from __future__ import annotations

import logging
import time
from collections import defaultdict

from models.events import InvalidEvent, parse_event
from models.profile import Profile
from streams.app import (
    activity_topic,
    app,
    catalog,
    deadletter_topic,
    events_topic,
    popularity_feed,
    settings,
    user_factors_topic,
    user_to_profile,
    user_to_vector,
)
from streams.feeds import activity_message, aggregate_activity
from streams.metrics import metrics
from streams.state import PartitionBatch

log = logging.getLogger(__name__)
DEADLETTER_RAW_LIMIT = 64 * 1024


def deadletter_record(message, reason: str, detail: str) -> dict:
    """What the dead-letter topic keeps of a rejected message: the reason, where the original
    is, and its bytes (cut at 64 KiB; the original stays on its topic at the given offset)."""
    raw: bytes = message.value if isinstance(message.value, bytes) else bytes(message.value or b"")
    record = {
        "reason": reason,
        "detail": detail,
        "topic": message.topic,
        "partition": message.partition,
        "offset": message.offset,
        "key": message.key.decode("utf-8", "replace") if message.key else None,
        "raw_size": len(raw),
        "raw": raw[:DEADLETTER_RAW_LIMIT].decode("utf-8", "replace"),
        "raw_truncated": len(raw) > DEADLETTER_RAW_LIMIT,
        "rejected_at": time.time(),
    }
    return record


@app.agent(events_topic, name="update_profiles")
async def update_profiles(stream):
    """Micro-batches of events → per-partition profile updates → one batched write per partition."""
    params = settings.profile
    async for batch in stream.take_events(settings.batch_size, within=settings.batch_window_s):
        now = time.time()
        by_partition: dict[int, list] = defaultdict(list)
        for event in batch:
            message = event.message
            try:
                parsed = parse_event(message.value, now)
                if message.key is None or message.key != parsed.user_id.encode():
                    raise InvalidEvent("wrong_key", "the message key must be the event's user_id")
            except InvalidEvent as exc:
                metrics.deadlettered[exc.reason] += 1
                await deadletter_topic.send(key=message.key, value=deadletter_record(message, exc.reason, exc.detail))
                continue
            by_partition[message.partition].append((message.offset, message.timestamp, parsed))

        applied = []
        for partition, items in by_partition.items():
            writes = PartitionBatch(user_to_profile, partition)
            profiles: dict[str, Profile] = {}
            for offset, _, parsed in items:
                profile = profiles.get(parsed.user_id)
                if profile is None:
                    raw = writes.get(parsed.user_id.encode())
                    profile = profiles[parsed.user_id] = Profile() if raw is None else Profile.from_bytes(raw)
                if offset <= profile.seq:  # redelivered after a restart: already applied
                    metrics.duplicates += 1
                    continue
                domain, overall = catalog.layers_for(parsed.item_id, parsed.category_id)
                if profile.learn(parsed, domain, overall, params):
                    metrics.events[parsed.type] += 1
                    applied.append((parsed, domain))
                else:
                    metrics.duplicates += 1
                profile.seq = offset
            for user_id, profile in profiles.items():
                writes.put(user_id.encode(), profile.to_bytes())
            writes.flush()
        if applied:
            activity = aggregate_activity(
                (e for e, _ in applied), params.beta, popularity_feed.popularity.half_life_s, _domain_of(applied)
            )
            await activity_topic.send(value=activity_message(activity))
        # The changelog must be durable before these offsets can be committed.
        await app.producer.flush()
        done = time.time()
        for items in by_partition.values():
            for _, produced_at, _ in items:
                if produced_at:
                    metrics.update_latency.observe(max(0.0, done - produced_at))
        metrics.batches += 1


def _domain_of(applied):
    domains = {id(e): d for e, d in applied}
    return lambda e: domains[id(e)]


@app.agent(user_factors_topic, name="store_user_vectors")
async def store_user_vectors(stream):
    """Batch user vectors from `strata train` → the user_to_vector table (same partitions as events)."""
    async for batch in stream.take_events(settings.batch_size, within=settings.batch_window_s):
        writes: dict[int, PartitionBatch] = {}
        for event in batch:
            message = event.message
            if not message.key:
                continue
            pb = writes.get(message.partition)
            if pb is None:
                pb = writes[message.partition] = PartitionBatch(user_to_vector, message.partition)
            pb.put(message.key, message.value)
        for pb in writes.values():
            pb.flush()
        await app.producer.flush()
