"""The dead-letter topic: what it keeps of a rejected record, and how records get there.

A dead letter is bounded whatever the rejected record carries: its key and value are cut to
`KEY_LIMIT` and `VALUE_LIMIT` bytes (their original sizes are recorded, and the original stays
on its topic at the recorded partition and offset), so that neither a 1 MiB key nor a 4 MiB
value makes a dead letter the broker refuses.  Escaping can grow a byte to six characters of
JSON (`\\u0001`), so a dead letter stays below ~40 KB.

The events agent awaits its dead letters (`send`); code that cannot await — a feed's
`on_record`, a changelog batch applied in place — queues them (`DeadLetterQueue.submit`), and
the queue's task sends them.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Awaitable, Callable

import mode

from strata.streams.metrics import metrics

log = logging.getLogger(__name__)

KEY_LIMIT = 1024
VALUE_LIMIT = 4096
DETAIL_LIMIT = 1024
QUEUE_LIMIT = 1000  # queued dead letters kept while the broker is away; beyond, the oldest are dropped (counted)


class RejectedRecord(ValueError):
    """A record that breaks the rules of its topic: `reason` is a short stable code (the dead
    letter's reason and a metrics label), `detail` says what exactly was wrong."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def reason_of(exc: BaseException) -> tuple[str, str]:
    """(reason, detail) of whatever a record's decoding raised: its own reason when it has one
    (InvalidEvent, CorruptFactors, RejectedRecord), else `undecodable` and the exception."""
    reason = getattr(exc, "reason", None)
    if isinstance(reason, str) and reason:
        return reason, str(getattr(exc, "detail", None) or exc)[:DETAIL_LIMIT]
    return "undecodable", f"{type(exc).__name__}: {str(exc)[:DETAIL_LIMIT]}"


def _cut(data, limit: int) -> tuple[str | None, int | None, bool]:
    """(text of the first `limit` bytes, original size, whether it was cut) of a key or value."""
    if data is None:
        return None, None, False
    if not isinstance(data, (bytes, bytearray)):
        data = str(data).encode("utf-8", "replace")
    return bytes(data[:limit]).decode("utf-8", "replace"), len(data), len(data) > limit


def deadletter_record(record, reason: str, detail: str, **extra) -> dict:
    """What the dead-letter topic keeps of a rejected record (anything with topic, partition,
    offset, key and value, e.g. an aiokafka ConsumerRecord): the reason and where the original
    is, its key and value cut to a few KiB, and their sizes."""
    key, key_size, key_truncated = _cut(record.key, KEY_LIMIT)
    raw, raw_size, raw_truncated = _cut(record.value, VALUE_LIMIT)
    return {
        "reason": str(reason)[:64],
        "detail": str(detail)[:DETAIL_LIMIT],
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "key": key,
        "key_size": key_size,
        "key_truncated": key_truncated,
        "raw": raw,
        "raw_size": raw_size or 0,
        "raw_truncated": raw_truncated,
        "rejected_at": time.time(),
        **extra,
    }


class DeadLetterQueue(mode.Service):
    """Dead letters from code that cannot await, sent in order by one task.  `send(value)` is the
    coroutine that puts one dead letter (a dict) on the topic."""

    def __init__(self, send: Callable[[dict], Awaitable], **kwargs) -> None:
        super().__init__(**kwargs)
        self._send = send
        self._queue: collections.deque[dict] = collections.deque()
        self._ready: asyncio.Event | None = None  # set while letters wait; made on the service's loop
        self.dropped = 0

    def submit(self, record, reason: str, detail: str, source: str, **extra) -> None:
        """Queue a dead letter for `record`, rejected for `reason`, and count it under `source`
        (the topic's role: catalog, item-factors, …)."""
        metrics.rejected[(source, reason)] += 1
        if len(self._queue) >= QUEUE_LIMIT:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(deadletter_record(record, reason, detail, **extra))
        if self._ready is not None:
            self._ready.set()

    async def on_start(self) -> None:
        self._ready = asyncio.Event()
        if self._queue:
            self._ready.set()

    @mode.Service.task
    async def _drain(self) -> None:
        while not self.should_stop:
            if not self._queue:
                self._ready.clear()
                await self.wait(self._ready.wait())
                continue
            value = self._queue[0]
            try:
                await self._send(value)
            except Exception as exc:  # noqa: BLE001 - the broker away: keep the letter, try again
                log.warning("sending a dead letter failed (%r); trying again", exc)
                await self.sleep(1.0)
                continue
            if self._queue and self._queue[0] is value:
                self._queue.popleft()
