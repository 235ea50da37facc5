"""`strata replay`: publish a log's catalog, then its events, onto the topics.

Each event is validated on the way (the same `parse_event` the worker uses):
good events go to the events topic keyed by user; bad ones go straight to the
dead-letter topic with their reason, so nothing read from the log is lost.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import orjson

from strata.models.events import InvalidEvent, parse_event
from strata.streams.config import Settings
from strata.streams.state import catalog_key
from strata.streams.topics import MAX_MESSAGE_BYTES, ensure_topics, topic_specs


@dataclass
class ReplaySummary:
    catalog: int = 0
    sent: int = 0
    rejected: int = 0
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return (self.sent + self.rejected) / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """One line; the catalog's part only when this run sent catalog records."""
        catalog = f"catalog {self.catalog:,} records · " if self.catalog else ""
        return (
            f"{catalog}sent {self.sent:,} events · rejected {self.rejected:,} "
            f"(dead-lettered) · {self.seconds:.1f} s · {self.events_per_s:,.0f} events/s"
        )


def new_producer(settings: Settings):
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(
        **settings.aiokafka_kwargs(),
        acks="all",
        linger_ms=10,
        max_batch_size=512 * 1024,
        max_request_size=MAX_MESSAGE_BYTES,
        enable_idempotence=True,
    )


async def publish(settings: Settings, catalog_records, events, *, rate: float | None = None, progress: bool = True, total: int | None = None) -> ReplaySummary:
    """Send catalog records then events; `events` yields dicts or raw strings (malformed lines)."""
    from tqdm import tqdm

    await ensure_topics(settings)
    specs = topic_specs(settings)
    summary = ReplaySummary()
    started = time.perf_counter()
    producer = new_producer(settings)
    await producer.start()
    try:
        for record in catalog_records:
            key, value = catalog_key(record)
            await producer.send(specs["catalog"].name, value, key=key)
            summary.catalog += 1
        await producer.flush()

        bar = tqdm(total=total, unit="ev", disable=not progress, desc="replay", smoothing=0.05)
        now = time.time()
        pending = []
        for n, raw in enumerate(events, 1):
            try:
                event = parse_event(raw if isinstance(raw, dict) else raw.encode(), now)
            except InvalidEvent as exc:
                summary.rejected += 1
                text = raw if isinstance(raw, str) else orjson.dumps(raw, default=str).decode()
                record = {"reason": exc.reason, "detail": exc.detail, "source": "replay", "raw": text[:65536]}
                pending.append(await producer.send(specs["deadletter"].name, orjson.dumps(record)))
            else:
                pending.append(await producer.send(specs["events"].name, event.to_json(), key=event.user_id.encode()))
                summary.sent += 1
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                bar.update(len(pending))
                pending = []
            if rate:
                ahead = n / rate - (time.perf_counter() - started)
                if ahead > 0:
                    await asyncio.gather(*pending)
                    bar.update(len(pending))
                    pending = []
                    await asyncio.sleep(ahead)
        await asyncio.gather(*pending)
        bar.update(len(pending))
        bar.close()
    finally:
        await producer.stop()
    summary.seconds = time.perf_counter() - started
    return summary


async def send_forget(settings: Settings, user_id: str) -> tuple[int, int]:
    """Put a forget control record for `user_id` on the events topic; returns (partition, offset).

    Keyed by the user, it lands in the user's partition behind every event of the user already
    sent, so the worker applies it in order (a table delete from outside would race with a
    batch in flight).  The raw events stay on the events topic until its retention runs out.
    """
    from strata.models.events import Forget, parse_message

    record = Forget(user_id, time.time())
    parse_message(record.to_json(), time.time())  # the worker's own check: a bad id fails here, not there
    await ensure_topics(settings)
    producer = new_producer(settings)
    await producer.start()
    try:
        metadata = await (await producer.send(topic_specs(settings)["events"].name, record.to_json(), key=user_id.encode()))
    finally:
        await producer.stop()
    return metadata.partition, metadata.offset


async def send_pin(settings: Settings, version: int | None) -> int:
    """Put a pin record (None: unpin) on the item-factor topic; returns its offset."""
    from strata.models.factors import pin_message

    key, value = pin_message(version)  # a bad version fails here, not in every worker
    await ensure_topics(settings)
    producer = new_producer(settings)
    await producer.start()
    try:
        metadata = await (await producer.send(topic_specs(settings)["item-factors"].name, value, key=key))
    finally:
        await producer.stop()
    return metadata.offset
