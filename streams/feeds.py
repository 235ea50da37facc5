"""Feeds: topics every worker reads whole, outside the consumer group, into derived local state.

Two things every worker needs in full, whatever partitions it owns: the item
factors (a model version is only usable complete) and recent item popularity
(cold start and the overall layer need the whole shop). Both are rebuilt
from their topic after a restart, so nothing is lost on rebalance; `TopicFeed`
is the one mechanism, and each feed says what a record does.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Mapping

import mode
import msgpack

from models.factors import CorruptFactors, FactorAssembler, FactorModel
from models.popularity import Popularity
from models.ranking import ShopRates
from streams.config import Settings
from streams.metrics import metrics
from streams.topics import partitions_of, topic_specs

log = logging.getLogger(__name__)


class EndOffsets(mode.Service):
    """The broker's end offsets of any partitions, asked on the worker's event loop by a consumer
    that fetches nothing, so that no long-polling fetch holds the connection.  (Faust's consumer
    answers the same through its own thread's method queue, which an idle worker serves only every
    second or so: ≈ 1.5 s here; a feed's consumer answers behind its pending fetch: ≈ 0.5 s.)"""

    def __init__(self, settings: Settings, **kwargs) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self._consumer = None

    async def on_start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(**self.settings.aiokafka_kwargs(), group_id=None, enable_auto_commit=False)
        await consumer.start()
        self._consumer = consumer

    async def on_stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def __call__(self, tps) -> dict:
        if self._consumer is None:
            raise RuntimeError("the end-offsets client is not running")
        return await self._consumer.end_offsets(list(tps))


class EventLoopWatch(mode.Service):
    """How late the event loop wakes a 50 ms sleep, into `strata_event_loop_lag_seconds`: how long
    an HTTP request or a timer waited behind whatever held the loop (a micro-batch of the stream,
    a ranking, a garbage collection).  Twenty wake-ups a second."""

    interval = 0.05

    @mode.Service.task
    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.should_stop:
            start = loop.time()
            await asyncio.sleep(self.interval)
            metrics.loop_lag.observe(max(0.0, loop.time() - start - self.interval))


class TopicFeed(mode.Service):
    """Follows one topic from its beginning with a group-less consumer; `on_record` applies each record."""

    topic_key: str = ""

    def __init__(self, settings: Settings, **kwargs) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.topic = topic_specs(settings)[self.topic_key].name
        self.caught_up = False

    def on_record(self, record) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def after_records(self) -> None:
        """Called after each fetched batch (e.g. to persist)."""

    @mode.Service.task
    async def _follow(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.errors import KafkaError

        consumer = AIOKafkaConsumer(
            **self.settings.aiokafka_kwargs(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        await consumer.start()
        try:
            tps = [TopicPartition(self.topic, p) for p in await partitions_of(self.settings, self.topic)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            end = await consumer.end_offsets(tps)
            while not self.should_stop:
                try:
                    batches = await consumer.getmany(timeout_ms=200)
                except KafkaError as exc:  # the broker went away for a while: keep serving, try again
                    log.warning("%s feed: %s", self.topic, exc)
                    await self.sleep(1.0)
                    continue
                for records in batches.values():
                    for record in records:
                        self.on_record(record)
                if batches:
                    await self.after_records()
                if not self.caught_up and all([await consumer.position(tp) >= end[tp] for tp in tps]):
                    self.caught_up = True
        finally:
            await consumer.stop()


class FactorFeed(TopicFeed):
    """The current item-factor model: swapped in one assignment when a version is complete and
    its checksum holds; the last complete version is kept on disk and served at once on restart."""

    topic_key = "item-factors"

    def __init__(self, settings: Settings, **kwargs) -> None:
        super().__init__(settings, **kwargs)
        self.path = Path(settings.data_dir) / "item-factors.npz"
        self.current: FactorModel | None = None
        self.assembler = FactorAssembler()
        self.rejected: list[str] = []
        self._unsaved: FactorModel | None = None

    def install(self, model: FactorModel, source: str) -> None:
        if self.current is not None and model.version <= self.current.version:
            return
        self.current = model  # the swap: one reference assignment
        self.assembler.last_version = model.version
        metrics.gauges["model_version"] = model.version
        log.info("item factors version %s from %s: %d items × %d", model.version, source, len(model), model.dims)

    async def on_start(self) -> None:
        if self.path.exists():
            try:
                self.install(FactorModel.load(self.path), str(self.path))
            except (OSError, ValueError) as exc:
                log.warning("ignoring the saved factors %s: %s", self.path, exc)

    def on_record(self, record) -> None:
        try:
            model = self.assembler.add(record.key or b"", record.value or b"")
        except CorruptFactors as exc:
            reason = f"offset {record.offset}: {exc}"
            self.rejected = (self.rejected + [reason])[-20:]
            metrics.factors_refused += 1
            log.warning("refused item factors (%s); version %s keeps serving", reason, self.current.version if self.current else None)
            return
        if model is not None:
            self.install(model, f"{self.topic}@{record.offset}")
            self._unsaved = model

    async def after_records(self) -> None:
        model, self._unsaved = self._unsaved, None
        if model is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            await self.loop.run_in_executor(None, model.save, self.path)


def activity_message(entries, shop: ShopRates | None = None) -> bytes:
    """One micro-batch's activity: item weights [(item, category, weight, ts)], pre-aggregated per
    item, and the batch's counts behind the shop's rates (models.ranking.ShopRates)."""
    counts = shop.to_dict() if shop is not None else {}
    return msgpack.packb({"items": entries, **counts}, use_bin_type=True)  # tuples pack as arrays


class ActivitySums:
    """A micro-batch's applied (event, category) pairs summed per (item, category) at the latest
    time, by the decay identity, so that `Popularity.learn(item, category, w, t)` on the sums
    equals learning every event.  Pairs are added a partition at a time (`add`), in any order
    and in any split: the sums do not depend on either."""

    def __init__(self, beta: Mapping[str, float], half_life_s: float) -> None:
        self.beta = beta
        self.half_life_s = half_life_s
        self._acc: dict[tuple, list[float]] = {}

    def add(self, applied) -> None:
        acc, beta, half_life_s = self._acc, self.beta, self.half_life_s
        for e, category in applied:
            key = (e.item_id, category)
            b, ts = beta[e.type], e.ts
            entry = acc.get(key)
            if entry is None:
                acc[key] = [b, ts]
            elif ts >= entry[1]:
                entry[0] = entry[0] * 2.0 ** (-(ts - entry[1]) / half_life_s) + b
                entry[1] = ts
            else:
                entry[0] += b * 2.0 ** (-(entry[1] - ts) / half_life_s)

    def __bool__(self) -> bool:
        return bool(self._acc)

    def entries(self) -> list[tuple]:
        """(item, category, weight, time) per item and category."""
        return [(item, category, w, t) for (item, category), (w, t) in self._acc.items()]


class PopularityFeed(TopicFeed):
    """Recent item popularity over the whole shop, global and per category."""

    topic_key = "activity"

    def __init__(self, settings: Settings, half_life_s: float, **kwargs) -> None:
        super().__init__(settings, **kwargs)
        self.popularity = Popularity(half_life_s=half_life_s)
        self.shop = ShopRates()  # the shop's revisit rate and domain share, from every worker's counts

    def on_record(self, record) -> None:
        try:
            message = msgpack.unpackb(record.value, raw=False)
            if isinstance(message, list):  # written before the shop's counts were added
                message = {"items": message}
            counts = ShopRates.from_dict(message)  # checked before anything is applied
            for item, category, weight, ts in message["items"]:
                self.popularity.learn(item, category, float(weight), float(ts))
            self.shop.merge(counts)
        except (KeyError, ValueError, TypeError, AttributeError, msgpack.UnpackException) as exc:
            log.warning("skipping a malformed activity record at offset %s: %s", record.offset, exc)
