"""Feeds: topics every worker reads whole, outside the consumer group, into derived local state.

Two things every worker needs in full, whatever partitions it owns: the item
factors (a model version is only usable complete) and what the activity topic
says about the whole shop (recent item popularity, co-visitation of items, the
ranker's learned weights θ). Both are rebuilt
from their topic after a restart, so nothing is lost on rebalance; `TopicFeed`
is the one mechanism, and each feed says what a record does.
"""
from __future__ import annotations

import asyncio
import bisect
import logging
import time
from pathlib import Path
from typing import Mapping

import mode
import msgpack
import numpy as np

from strata.models.events import MAX_FUTURE_S, MAX_ID_LEN
from strata.models.factors import PIN_KEY, FactorAssembler, FactorLimits, FactorModel, parse_pin
from strata.models.clock import ShopClock
from strata.models.covisit import CoVisits
from strata.models.popularity import Popularity
from strata.models.terms import TERMS, TERMS_ID, TermWeights
from strata.streams.config import Settings
from strata.streams.deadletter import DeadLetterQueue, RejectedRecord, reason_of
from strata.streams.metrics import metrics
from strata.streams.topics import partitions_of, topic_specs

log = logging.getLogger(__name__)


class EndOffsets(mode.Service):
    """The broker's end offsets of any partitions, asked on the worker's event loop by a consumer
    that fetches nothing, so that no long-polling fetch holds the connection.  (Faust's consumer
    answers the same through its own thread's method queue, which an idle worker serves only every
    second or so; a feed's consumer answers behind its pending long-poll fetch.)"""

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
    """Follows one topic from its beginning with a group-less consumer; `on_record` applies each record.

    Whatever `on_record` raises for a record refuses that record alone (`refuse`: logged,
    counted, dead-lettered with its reason and offset) and the feed goes on with the next: a
    record's content never stops the feed, nor the worker.  Every worker reads these topics
    whole and from the beginning, so each worker dead-letters a refused record, again after
    each restart; (topic, partition, offset) identifies the copies."""

    topic_key: str = ""

    def __init__(self, settings: Settings, deadletters: DeadLetterQueue | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.topic = topic_specs(settings)[self.topic_key].name
        self.caught_up = False
        self.deadletters = deadletters
        self.rewind = False  # set by `on_record`: read the topic again from its beginning
        self.position: int | None = None  # the offset after the last record taken

    def on_record(self, record) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _apply(self, batches) -> None:
        for records in batches.values():
            for record in records:
                self.take(record)
                if self.rewind:
                    return

    def take(self, record) -> None:
        """`on_record`, with any failure refusing the record."""
        try:
            self.on_record(record)
        except Exception as exc:  # noqa: BLE001 - one record's content, whatever it is, is that record's problem
            self.refuse(record, *reason_of(exc))
        self.position = record.offset + 1

    def refuse(self, record, reason: str, detail: str) -> None:
        log.warning("%s feed: refused the record at offset %s (%s: %s)", self.topic, record.offset, reason, detail[:200])
        if self.deadletters is not None:
            self.deadletters.submit(record, reason, detail, source=self.topic_key)
        else:
            metrics.rejected[(self.topic_key, reason)] += 1

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
                self._apply(batches)
                if self.rewind:
                    self.rewind = False
                    await consumer.seek_to_beginning(*tps)
                    continue
                if batches:
                    try:
                        await self.after_records()
                    except Exception as exc:  # noqa: BLE001 - e.g. a full disk: serve on, persist next time
                        log.warning("%s feed: %r after a batch", self.topic, exc)
                if not self.caught_up and all([await consumer.position(tp) >= end[tp] for tp in tps]):
                    self.caught_up = True
        finally:
            await consumer.stop()


class FactorFeed(TopicFeed):
    """The current item-factor model: swapped in one assignment when a version is complete and
    its checksum holds; the last complete version is kept on disk and served at once on restart.

    Every message is checked against `FactorLimits` (STRATA_MAX_MODEL_ITEMS, _FACTORS, and a
    version no further ahead of the clock than a day) before anything is allocated for it."""

    topic_key = "item-factors"

    def __init__(self, settings: Settings, deadletters: DeadLetterQueue | None = None, **kwargs) -> None:
        super().__init__(settings, deadletters, **kwargs)
        self.path = Path(settings.data_dir) / "item-factors.npz"
        self.current: FactorModel | None = None
        self.limits = FactorLimits(max_items=settings.max_model_items, max_dims=settings.max_model_factors,
                                   signing_key=settings.signing_key)
        self.assembler = FactorAssembler(limits=self.limits)
        self.rejected: list[str] = []
        self._unsaved: FactorModel | None = None
        self.pinned: int | None = None  # the version an operator chose (`strata model pin`), else the newest
        self.pin_offset = -1  # offset of the pin record in force: it and those before it are done

    def install(self, model: FactorModel, source: str) -> None:
        if self.pinned is not None:
            if model.version != self.pinned or (self.current is not None and self.current.version == model.version):
                return
        elif self.current is not None and model.version <= self.current.version:
            return
        self.current = model  # the swap: one reference assignment
        self.assembler.last_version = model.version
        metrics.gauges["model_version"] = model.version
        log.info("item factors version %s from %s: %d items × %d", model.version, source, len(model), model.dims)

    async def on_start(self) -> None:
        if self.path.exists():
            try:
                model = FactorModel.load(self.path)
                self.limits.check_version(model.version, str(self.path))
                self.limits.check_totals(len(model), model.dims, 1, str(self.path))
            except (OSError, ValueError) as exc:
                log.warning("ignoring the saved factors %s: %s", self.path, exc)
            else:
                self.install(model, str(self.path))

    def on_record(self, record) -> None:
        if record.key == PIN_KEY:
            self._pin(record)
            return
        model = self.assembler.add(record.key or b"", record.value or b"")
        if model is not None:
            self.install(model, f"{self.topic}@{record.offset}")
            self._unsaved = model

    def _pin(self, record) -> None:
        """An operator's pin record: serve its version alone (None: the newest again).  The version
        may lie anywhere on the topic, so the topic is read again from its beginning, assembling
        that version only (or, unpinned, the newest); what serves meanwhile keeps serving."""
        if record.offset <= self.pin_offset:
            return  # read again after a rewind: in force already, or superseded by a later one
        version = parse_pin(record.value)
        self.pin_offset = record.offset
        if version == self.pinned:
            return
        self.pinned = version
        log.warning("item factors %s by the pin record at offset %s; reading %s again",
                    f"pinned to version {version}" if version is not None else "unpinned", record.offset, self.topic)
        self.assembler = FactorAssembler(limits=self.limits, only=version)
        self.rewind = True

    def refuse(self, record, reason: str, detail: str) -> None:
        self.rejected = (self.rejected + [f"offset {record.offset}: {reason}: {detail[:200]}"])[-20:]
        metrics.factors_refused += 1
        super().refuse(record, reason, detail)
        log.warning("item factors refused; version %s keeps serving", self.current.version if self.current else None)

    async def after_records(self) -> None:
        model, self._unsaved = self._unsaved, None
        if model is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            await self.loop.run_in_executor(None, model.save, self.path)


def activity_message(entries, visits=(), theta: ThetaSteps | None = None, visit_weight: float = 1.0) -> bytes:
    """One micro-batch's activity: item weights [(item, category, weight, ts)], pre-aggregated per
    item; its co-visitation
    pairs [(item, ts, [partners])] (models.covisit.CoVisits.partners) and the weight of each (1 /
    the share of the batch's events paired: streams.agents.Pairing); and the sum of its
    learning steps of θ (models.terms.TermWeights.step)."""
    message = {"items": entries}
    if visits:
        message["visits"] = visits
        if visit_weight != 1.0:
            message["visit_weight"] = visit_weight
    if theta is not None and theta.steps:
        message["theta"] = {"terms": TERMS_ID, "delta": theta.delta.tolist(), "steps": theta.steps}
    return msgpack.packb(message, use_bin_type=True)  # tuples pack as arrays


def theta_snapshot_message(theta: np.ndarray, offset: int) -> bytes:
    """θ as a worker holds it after reading the activity topic up to `offset` (exclusive): lets a
    worker that starts after retention deleted older steps begin from every step ever taken."""
    return msgpack.packb({"items": [], "theta_at": {"terms": TERMS_ID, "theta": theta.tolist(), "offset": offset}},
                         use_bin_type=True)


class ThetaSteps:
    """The sum of a micro-batch's learning steps of θ."""

    def __init__(self) -> None:
        self.delta = np.zeros(len(TERMS))
        self.steps = 0

    def add(self, delta: np.ndarray | None) -> None:
        if delta is not None:
            self.delta += delta
            self.steps += 1


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


class ShopFeed(TopicFeed):
    """What the activity topic says about the whole shop, from every worker's micro-batches:
    recent item popularity (global and per category), the co-visitation of
    items, and the ranker's learned weights θ (θ₀ plus every worker's steps, so that every
    worker holds the same θ)."""

    topic_key = "activity"

    def __init__(self, settings: Settings, half_life_s: float, **kwargs) -> None:
        super().__init__(settings, **kwargs)
        self.popularity = Popularity(half_life_s=half_life_s)
        self.clock = ShopClock()  # the shop's now: no single event's time moves it
        self.covisits = CoVisits()
        self.weights = TermWeights()
        self.steps = 0  # θ's learning steps read, every worker's
        self.pairs = 0  # co-visitation pairs read
        self._first: int | None = None  # the first offset read: older steps are gone
        self._sums: list[tuple[int, np.ndarray]] = []  # (offset, Σ steps read up to and with it)

    def on_record(self, record) -> None:
        message = msgpack.unpackb(record.value, raw=False)
        if isinstance(message, list):  # the first form: the items alone
            message = {"items": message}
        if not isinstance(message, dict):
            raise RejectedRecord("bad_activity", f"expected a map, got {type(message).__name__}")
        now = time.time()
        # everything is checked before anything is applied
        entries = activity_entries(message.get("items"), now)
        visits = visit_entries(message.get("visits", []), now, self.covisits)
        visit_weight = message.get("visit_weight", 1.0)
        if not (type(visit_weight) in (int, float) and 1.0 <= visit_weight <= MAX_VISIT_WEIGHT):
            raise RejectedRecord("bad_activity", f"visit weight {visit_weight!r:.40} out of range")
        delta, steps = theta_delta(message.get("theta"))
        snapshot = theta_snapshot(message.get("theta_at"))
        if self._first is None:
            self._first = record.offset
        clock = self.clock
        bound = clock.bound  # a far-ahead time is learned at most an hour past the shop's clock
        for item, category, weight, ts in entries:
            self.popularity.learn(item, category, weight, bound(ts))
        for _, _, _, ts in entries:
            clock.observe(ts)
        learn_pairs = self.covisits.learn_pairs
        for item, ts, others in visits:
            learn_pairs(item, others, bound(ts), visit_weight)
            self.pairs += len(others)
        if delta is not None:
            self.weights.theta += delta
            self.steps += steps
            self._sums.append((record.offset, self._sum() + delta))
            del self._sums[: -MAX_STEP_SUMS]
        if snapshot is not None:
            self._adopt(*snapshot)

    def _sum(self, before: int | None = None) -> np.ndarray:
        """Σ of the steps read at offsets below `before` (all of them: None)."""
        sums = self._sums
        if before is not None:
            sums = sums[: bisect.bisect_left(sums, before, key=lambda entry: entry[0])]
        return sums[-1][1].copy() if sums else np.zeros(len(TERMS))

    def _adopt(self, theta: np.ndarray, offset: int) -> None:
        """θ = a snapshot of θ as of `offset` plus the steps read from there on.  A worker that read
        the same steps holds that θ already; one that started after retention deleted some gains
        them.  A snapshot from before the oldest step sum kept is ignored."""
        if offset <= self._first:
            since = self._sum()
        elif len(self._sums) >= MAX_STEP_SUMS and offset <= self._sums[0][0]:
            return
        else:
            since = self._sum() - self._sum(offset)
        self.weights.theta = theta + since

    def snapshot_message(self) -> bytes | None:
        """θ as of the feed's position, for the topic (None before the feed has caught up)."""
        if not self.caught_up or self.position is None:
            return None
        return theta_snapshot_message(self.weights.theta, self.position)


MAX_VISIT_WEIGHT = 1e6  # 1 / the share of a batch's events paired: one in a million at least
MAX_STEP_SUMS = 10_000  # step sums kept for adopting snapshots (a worker sends a few a second at most)
MAX_THETA = 1e3  # |θ_t| and |Δθ_t|: far beyond any weight a step of rate 0.05 reaches


def visit_entries(visits, now: float, covisits: CoVisits) -> list:
    """The co-visitation pairs of an activity record, every one checked: [item, ts, [partners]]
    with ids of 1-128 characters, at most `covisits.window` partners and a finite time from 0 to
    a day after `now`.  RejectedRecord otherwise."""
    if not isinstance(visits, list):
        raise RejectedRecord("bad_activity", f"'visits' must be a list, got {type(visits).__name__}")
    window = covisits.window
    for entry in visits:
        if not isinstance(entry, list) or len(entry) != 3:
            raise RejectedRecord("bad_activity", "a visit must be [item, time, partners]")
        item, ts, others = entry
        if not (isinstance(item, str) and 0 < len(item) <= MAX_ID_LEN):
            raise RejectedRecord("bad_activity", "an item id must be a string of 1-128 characters")
        if not (type(ts) in (int, float) and 0 <= ts <= now + MAX_FUTURE_S):
            raise RejectedRecord("bad_activity", f"visit time {ts!r:.40} out of range")
        if not (isinstance(others, list) and len(others) <= window
                and all(isinstance(i, str) and 0 < len(i) <= MAX_ID_LEN for i in others)):
            raise RejectedRecord("bad_activity", f"partners must be a list of at most {window} item ids")
    return visits


def _theta_vector(values, what: str) -> np.ndarray:
    if not (isinstance(values, list) and len(values) == len(TERMS) and all(type(v) in (int, float) for v in values)):
        raise RejectedRecord("bad_activity", f"{what} must be a list of {len(TERMS)} numbers")
    vector = np.array(values, np.float64)
    if not (np.all(np.isfinite(vector)) and np.all(np.abs(vector) <= MAX_THETA)):
        raise RejectedRecord("bad_activity", f"{what} out of range")
    return vector


def theta_delta(theta) -> tuple[np.ndarray | None, int]:
    """The checked (Δθ, steps) of an activity record; (None, 0) when it has none."""
    if theta is None:
        return None, 0
    if not isinstance(theta, dict) or theta.get("terms") != TERMS_ID:
        raise RejectedRecord("bad_activity", "'theta' must be a map of Δθ for these terms")
    steps = theta.get("steps")
    if not (type(steps) is int and 0 < steps <= 1_000_000):
        raise RejectedRecord("bad_activity", f"'steps' {steps!r:.40} out of range")
    return _theta_vector(theta.get("delta"), "Δθ"), steps


def theta_snapshot(snapshot) -> tuple[np.ndarray, int] | None:
    if snapshot is None:
        return None
    if not isinstance(snapshot, dict) or snapshot.get("terms") != TERMS_ID:
        raise RejectedRecord("bad_activity", "'theta_at' must be a map of θ for these terms")
    offset = snapshot.get("offset")
    if not (type(offset) is int and offset >= 0):
        raise RejectedRecord("bad_activity", f"snapshot offset {offset!r:.40} out of range")
    return _theta_vector(snapshot.get("theta"), "θ"), offset


MAX_ACTIVITY_WEIGHT = 1e15  # a batch's decayed sum of β per item: far below, for any real shop


def activity_entries(items, now: float) -> list[tuple[str, str | None, float, float]]:
    """The (item, category, weight, time) entries of an activity record, every one checked:
    ids of 1-128 characters, a finite weight ≥ 0 and a finite time from 0 to a day after `now`
    (one time of +inf would make every popularity score 0).  RejectedRecord otherwise."""
    if not isinstance(items, list):
        raise RejectedRecord("bad_activity", f"'items' must be a list, got {type(items).__name__}")
    out = []
    for entry in items:
        if not isinstance(entry, (list, tuple)) or len(entry) != 4:
            raise RejectedRecord("bad_activity", "an entry must be [item, category, weight, time]")
        item, category, weight, ts = entry
        if not (isinstance(item, str) and 0 < len(item) <= MAX_ID_LEN):
            raise RejectedRecord("bad_activity", "an item id must be a string of 1-128 characters")
        if category is not None and not (isinstance(category, str) and 0 < len(category) <= MAX_ID_LEN):
            raise RejectedRecord("bad_activity", "a category id must be a string of 1-128 characters or null")
        if not (type(weight) in (int, float) and type(ts) in (int, float)):
            raise RejectedRecord("bad_activity", "weights and times must be numbers")
        if not (0 <= weight <= MAX_ACTIVITY_WEIGHT and 0 <= ts <= now + MAX_FUTURE_S):  # NaN fails too
            raise RejectedRecord("bad_activity", f"weight {weight!r:.40} or time {ts!r:.40} out of range")
        out.append((item, category, float(weight), float(ts)))
    return out
