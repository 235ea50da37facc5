"""`strata train`: the batch job — snapshot the events topic, fit ALS, publish factors.

The snapshot is every event from the earliest offsets up to the end offsets
taken when the job starts, so a run is reproducible while the stream goes on.
Confidences use the profiles' own β and item half-life (`models.als`), as of
the snapshot's last event time.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from strata.models.als import ALSParams, EncodedEvents, EventColumns, confidence_matrix, fit, merge_encoded
from strata.models.events import Event, Forget, InvalidEvent, parse_keyed_message
from strata.models.factors import FactorModel, to_messages, user_vector_message
from strata.streams.config import ConfigError, Settings
from strata.streams.state import home_partition
from strata.streams.topics import ensure_topics, keyed_topic_problems, partitions_of, topic_specs

log = logging.getLogger(__name__)


class NothingToTrain(Exception):
    pass


@dataclass
class TrainReport:
    events: int = 0
    skipped: int = 0
    users: int = 0
    items: int = 0
    version: int = 0
    seconds: dict[str, float] = field(default_factory=dict)

    def lines(self) -> list[str]:
        stages = " · ".join(f"{k} {v:.1f}s" for k, v in self.seconds.items())
        return [
            f"read {self.events:,} events ({self.skipped:,} invalid skipped): {self.users:,} users × {self.items:,} items",
            f"published item factors version {self.version} and {self.users:,} user vectors",
            f"stages: {stages}",
        ]


async def read_snapshot(settings: Settings, processes: int | None = None) -> tuple[EncodedEvents, int]:
    """Valid events of the events topic, earliest offsets → end offsets at the start of the call,
    as training columns (`models.als.EncodedEvents`), and the number of invalid records skipped.

    A forget control record drops the user's events before it (all in the same partition, so
    read before it); the user's later events, if any, are kept.  Events are validated by the
    workers' own `parse_keyed_message`, so training sees exactly what the profiles saw.

    The partitions are shared out to `processes` reader processes (default: one per core, at
    most one per partition): decoding and validating is Python work that one core cannot do at
    the rate the broker serves.  The topic is keyed by user, so every reader encodes a disjoint
    set of users and the parts merge exactly (`models.als.merge_encoded`).
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topic = topic_specs(settings)["events"].name
    consumer = AIOKafkaConsumer(**settings.aiokafka_kwargs(), group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = sorted(await partitions_of(settings, topic))
        end = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions]) if partitions else {}
    finally:
        await consumer.stop()
    stops = {tp.partition: offset for tp, offset in end.items() if offset > 0}
    readers = max(1, min(processes or os.cpu_count() or 1, len(stops)))
    if readers == 1:
        parts = [await _read_partitions(settings, stops)]
    else:
        shares = [dict(list(stops.items())[k::readers]) for k in range(readers)]
        loop = asyncio.get_running_loop()
        # spawn, not fork: this process runs an event loop and aiokafka's threads
        with ProcessPoolExecutor(readers, mp_context=multiprocessing.get_context("spawn")) as pool:
            parts = await asyncio.gather(*(loop.run_in_executor(pool, _read_in_process, settings, share) for share in shares))
    return merge_encoded([encoded for encoded, _ in parts]), sum(skipped for _, skipped in parts)


def _read_in_process(settings: Settings, stops: dict[int, int]) -> tuple[EncodedEvents, int]:
    return asyncio.run(_read_partitions(settings, stops))


SNAPSHOT_STALL_S = 30.0  # a snapshot read that gets no record this long, with records left, has lost its broker


async def _read_partitions(settings: Settings, stops: dict[int, int]) -> tuple[EncodedEvents, int]:
    """Events of the given partitions of the events topic, from their earliest offsets up to
    `stops` (partition → end offset), as training columns; and the number skipped as invalid.
    KafkaTimeoutError when no record comes for `SNAPSHOT_STALL_S` (a consumer waits for a broker
    that went away forever; `strata train --every` then retries at its next run)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaTimeoutError

    topic = topic_specs(settings)["events"].name
    columns, skipped = EventColumns(), 0
    if not stops:
        return columns.encoded(), 0
    consumer = AIOKafkaConsumer(**settings.aiokafka_kwargs(), group_id=None, enable_auto_commit=False, max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024)
    await consumer.start()
    try:
        end = {TopicPartition(topic, p): offset for p, offset in stops.items()}
        consumer.assign(list(end))
        await consumer.seek_to_beginning(*end)
        remaining = {tp for tp in end if end[tp] > await consumer.position(tp)}
        now = time.time()
        add, forget = columns.add, columns.forget
        homes: dict[bytes, int] = {}  # user key → its partition (murmur2 once per user, not per event)
        progress_at = time.monotonic()
        with gc_paused():
            while remaining:
                batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=50_000)
                if batches:
                    progress_at = time.monotonic()
                elif time.monotonic() - progress_at > SNAPSHOT_STALL_S:
                    raise KafkaTimeoutError(f"the snapshot read got no record for {SNAPSHOT_STALL_S:.0f} s with "
                                            f"{len(remaining)} partition(s) unread: is the broker up?")
                for tp, records in batches.items():
                    stop = end[tp]
                    for record in records:
                        if record.offset >= stop:
                            break
                        try:
                            parsed = parse_keyed_message(record.key, record.value, now)
                        except InvalidEvent:
                            skipped += 1
                            continue
                        home = homes.get(record.key)
                        if home is None:
                            home = homes[record.key] = home_partition(record.key, settings.partitions)
                        if home != tp.partition:
                            skipped += 1  # a worker dead-letters it as wrong_partition: no profile has it
                            continue
                        if type(parsed) is Event:
                            add(parsed)
                        elif type(parsed) is Forget:
                            forget(parsed.user_id)  # a served list (`Served`) teaches ALS nothing
                    if await consumer.position(tp) >= stop:
                        remaining.discard(tp)
    finally:
        await consumer.stop()
    return columns.encoded(), skipped


@contextmanager
def gc_paused():
    """No garbage collection while millions of short-lived records pass through: each full
    collection would walk every object alive, and the read creates no garbage cycles worth
    collecting before it ends."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


async def train_once(settings: Settings, params: ALSParams, progress=print) -> TrainReport:
    from strata.streams.replay import new_producer

    report = TrainReport()
    await ensure_topics(settings)
    problems = await keyed_topic_problems(settings)
    if problems:  # users would be read from, and their vectors sent to, other partitions than their profiles'
        raise ConfigError("; ".join(problems))
    t0 = time.perf_counter()
    enc, report.skipped = await read_snapshot(settings)
    report.seconds["read"] = time.perf_counter() - t0
    if not len(enc.ts):
        raise NothingToTrain(f"no valid events on {settings.topic('events')}: replay some first (`strata replay …`)")

    t1 = time.perf_counter()
    as_of = float(enc.ts.max())
    Cui = confidence_matrix(enc.user_codes, enc.item_codes, enc.type_codes, enc.ts, params=settings.profile, as_of=as_of, alpha=params.alpha)
    report.seconds["matrix"] = time.perf_counter() - t1
    report.events, report.users, report.items = len(enc.ts), len(enc.user_ids), len(enc.item_ids)
    progress(f"snapshot: {report.events:,} events, {report.users:,} users × {report.items:,} items; fitting {params.factors} factors …")

    t2 = time.perf_counter()
    X, Y = fit(Cui, params)
    report.seconds["fit"] = time.perf_counter() - t2

    version = int(time.time() * 1000)
    model = FactorModel(
        version,
        tuple(enc.item_ids),
        Y,
        {**params.as_dict(), "snapshot_as_of": as_of, "events": report.events, "trained_at": time.time()},
    )
    report.version = version
    t3 = time.perf_counter()
    specs = topic_specs(settings)
    producer = new_producer(settings)
    await producer.start()
    try:
        futures = [await producer.send(specs["item-factors"].name, value, key=key) for key, value in to_messages(model, signing_key=settings.signing_key)]
        for user_id, row in zip(enc.user_ids, X):
            futures.append(await producer.send(specs["user-factors"].name, user_vector_message(version, row), key=user_id.encode()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    report.seconds["publish"] = time.perf_counter() - t3
    return report
