"""Agents: thin loops that decode, validate, and hand the maths to `models/`."""
from __future__ import annotations

import logging
import random
import time
from collections import OrderedDict
from typing import Callable

import numpy as np
import orjson

from strata.models.attribution import Attribution, attribute, passed_over, remember
from strata.models.events import MAX_ID_LEN, Forget, InvalidEvent, Served, parse_keyed_message
from strata.models.factors import parse_user_vector
from strata.models.learned import feedback, list_feedback
from strata.models.profile import Profile, TooLate, encode_profiles
from strata.streams.app import (
    activity_topic,
    app,
    attributions_topic,
    catalog,
    deadletter_topic,
    events_route,
    shop_feed,
    profile_counts,
    served_ranker,
    settings,
    user_factors_topic,
    user_to_profile,
    user_to_vector,
)
from strata.streams.batching import LoopTurn
from strata.streams.deadletter import deadletter_record
from strata.streams.feeds import ActivitySums, ThetaSteps, activity_message
from strata.streams.metrics import metrics
from strata.streams.state import PartitionBatch, partition_of, read_user_vector

log = logging.getLogger(__name__)
# A fetched batch can hold tens of thousands of events (STRATA_BATCH_SIZE: the bigger the batch,
# the more of each user's events share one profile write, and the fewer the per-batch costs),
# and the same event loop answers HTTP.  Once the handler has held the loop this long, it lets
# other tasks run at the next check (every CHECK_EVERY records, and around each partition's
# encoding and flush), so that a worker catching up on a backlog still serves.  Reads see the
# store, which only changes when a partition's batch is written whole.
TURN_S = 0.025
CHECK_EVERY = 128
LEARN_PER_S = 10.0  # θ learns from at most ten events a second per worker …
LIST_LEARN_PER_S = 50.0  # … and from at most fifty acts on served lists (explicit feedback)
PAIRED_PER_S = 2_000.0  # the shop's events paired for co-visitation a second, at most (`Pairing`)
THETA_SNAPSHOT_S = 300.0


async def deadletter(record, reason: str, detail: str, **extra) -> None:
    """Put a rejected events-topic record on the dead-letter topic (bounded: streams.deadletter)."""
    metrics.deadlettered[reason] += 1
    await deadletter_topic.send(value=deadletter_record(record, reason, detail, **extra))


class WrongPartition(InvalidEvent):
    """A valid record on another partition than its user's (`expected_partition`)."""

    def __init__(self, user_id: str, home: int) -> None:
        super().__init__("wrong_partition", f"key {user_id[:40]!r} belongs to partition {home} (Kafka's default murmur2 partitioner)")
        self.extra = {"expected_partition": home}


def _parse(record, partition: int, now: float, homes: dict[bytes, int]):
    """The record's event or control record; InvalidEvent when it breaks a rule or lies on another
    partition than its user's.  Applied there, the user's state would split over two partitions,
    and the profile's de-duplication would compare offsets of different partitions.  `homes`
    remembers each user key's partition (murmur2 once per user and batch, not per event)."""
    parsed = parse_keyed_message(record.key, record.value, now)
    home = homes.get(record.key)
    if home is None:
        home = homes[record.key] = partition_of(user_to_profile, record.key)
    if home != partition:
        raise WrongPartition(parsed.user_id, home)
    return parsed


_MISSING = object()
PROFILE_CACHE_SIZE = 50_000


class ProfileCache:
    """Decoded profiles of recently active users, exactly as last written to the store, keyed by
    (partition, user key): an entry is the profile of that partition's store, never another's.

    Decoding a profile (msgpack → dicts) was the largest single cost of the hot path in
    py-spy; a user is usually active again within a few batches.  Entries are only ever the
    object whose bytes were just written by this worker, so the cache never disagrees with
    the store — except across a rebalance (the store may be recovered from the changelog,
    partitions move), where `streams.batching` clears it, and after a failed batch, where
    `apply_events` clears it.  LRU-bounded.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[int, bytes], Profile] = OrderedDict()

    def get(self, key: tuple[int, bytes]):
        profile = self.entries.get(key)
        if profile is not None:
            self.entries.move_to_end(key)
        return profile

    def put(self, key: tuple[int, bytes], profile: Profile | None) -> None:
        if profile is None:
            self.entries.pop(key, None)
            return
        if self.entries.get(key) is profile:
            return  # the cached object itself, changed in place and already moved up by `get`
        self.entries[key] = profile
        self.entries.move_to_end(key)
        if len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def clear(self) -> None:
        self.entries.clear()


profile_cache = ProfileCache(PROFILE_CACHE_SIZE)
events_route.on_rebalance.append(profile_cache.clear)


@events_route
async def apply_events(batch) -> None:
    try:
        await _apply_events(batch)
    except BaseException:
        profile_cache.clear()  # some cached profiles may hold changes that never reached the store
        raise


async def _apply_events(batch) -> None:
    """One fetched batch of the events topic ({partition: [records in offset order]}) → profiles.

    Called by streams.batching, which commits these offsets only after this returns, i.e. after
    one RocksDB WriteBatch and one run of changelog sends per partition, flushed to the broker.
    At-least-once delivery + per-user de-duplication make it exact: `Profile.seq` (the last
    applied offset, stored in the profile itself, so in the same write as the state it
    describes) drops redelivery after a crash; the recent event-id window drops producer
    duplicates.  A redelivered user's profile is written again even when nothing in it
    changes: after a crash between the store write and the changelog send the local store
    is ahead of the changelog, and re-sending makes the changelog exact again before the
    offsets can be committed.
    """
    tally = BatchTally(sum(len(records) for records in batch.values()))
    for tp, records in batch.items():
        await _apply_partition(tp.partition, records, tally)
    events_route.records_read()  # the next fetch may go: it overlaps the flush below
    if tally.activity or tally.steps.steps:
        await activity_topic.send(value=activity_message(tally.activity.entries(), tally.visits, tally.steps, 1.0 / tally.chance))
    for outcome, event in tally.attributed:
        if type(outcome) is Attribution:
            await attributions_topic.send(key=event.user_id.encode(), value=attribution_record(outcome, event))
    # The changelog must be durable before streams.batching lets these offsets be committed.
    await app.producer.flush()
    for writes in tally.flushed:
        await writes.confirm()
    # The applied events are counted together with their latencies, once durable, with no await
    # in between: a scrape sees both or neither, so whoever reads the latencies of the events
    # counted after some point (`strata bench stream`) gets those and no others.  Only what
    # changed a profile: a redelivered batch (duplicates) or a rejected record would count its
    # age, not an update's latency.
    for type_, n in tally.applied_types.items():
        metrics.events[type_] += n
    tally.count_feedback()
    if tally.stamps:
        done = time.time()
        metrics.update_latency.observe_many(np.maximum(done - np.array(tally.stamps, dtype=np.float64) / 1000.0, 0.0))
    metrics.batches += 1


def attribution_record(outcome: Attribution, event) -> bytes:
    """An attributed event on the attributions topic: which list, where in it, how long after it was
    served.  At least once (a batch redone after a crash sends it again): readers de-duplicate by
    `event_id`."""
    price = _price(event)
    return orjson.dumps({
        "event_id": event.event_id, "user_id": event.user_id, "item_id": event.item_id, "type": event.type,
        "ts": event.ts, "rec_id": outcome.rec_id, "variant": outcome.variant, "position": outcome.position,
        "delay_s": outcome.delay_s, "view_through": outcome.view_through,
        **({"price": price} if price is not None else {}),
    })


def _price(event) -> float | None:
    """The event's `context.price`, when it is a sane number."""
    price = (event.context or {}).get("price")
    return price if type(price) in (int, float) and 0 <= price < 1e12 else None


class BatchTally:
    """What one micro-batch gathers across its partitions, to send and count once it is durable."""

    def __init__(self, events: int) -> None:
        params = settings.profile
        self.now = time.time()
        self.activity = ActivitySums(params.beta, shop_feed.popularity.half_life_s)  # what the batch adds to popularity
        self.applied_types: dict[str, int] = {}  # counted in `metrics` with the latencies, once flushed
        self.stamps: list = []  # the applied records' Kafka timestamps (ms)
        self.visits: list = []  # co-visitation pairs: (item, ts, partners) of the applied events paired
        self.chance = pairing.chance(events)  # of pairing each event
        self.steps = ThetaSteps()  # what this batch's feedback teaches θ (a few events a second: `learner`)
        self.flushed: list[PartitionBatch] = []
        self.turn = LoopTurn(TURN_S)
        self.homes: dict[bytes, int] = {}  # user key → the partition its events belong to
        self.served: list[str] = []  # the variant of each served list applied
        self.attributed: list = []  # (Attribution or the reason it is not, event) of each applied event with one

    def count_feedback(self) -> None:
        """The served lists and attributed events of the batch into the metrics (once durable)."""
        for variant in self.served:
            metrics.ab_impressions[variant] += 1
        for outcome, event in self.attributed:
            if type(outcome) is str:
                metrics.attribution_unmatched[outcome] += 1
                continue
            metrics.ab_actions[(outcome.variant, event.type, "view_through" if outcome.view_through else "rec_id")] += 1
            price = _price(event) if event.type == "purchase" else None
            if price is not None:
                metrics.ab_revenue[outcome.variant] += price


async def _apply_partition(partition: int, records: list, tally: BatchTally) -> None:
    """One partition's records of a micro-batch → its users' profiles, written (`_write_profiles`)."""
    params, now, turn, homes, window = settings.profile, tally.now, tally.turn, tally.homes, settings.attribution_window_s
    covisits, chance, draw, steps = shop_feed.covisits, tally.chance, pairing.draw, tally.steps
    applied_types, stamps, visits = tally.applied_types, tally.stamps, tally.visits
    writes = PartitionBatch(user_to_profile, partition, profile_counts)
    vectors: PartitionBatch | None = None  # the user vectors' table, once someone is forgotten
    profiles: dict[str, Profile | None] = {}  # None: forgotten in this batch
    existed: dict[str, bool] = {}  # whether the store held the user's profile before this batch
    applied: list = []  # (event, category) of each applied event
    for i, record in enumerate(records):
        if not i % CHECK_EVERY and turn.over():
            await turn.pass_on()
        try:
            parsed = _parse(record, partition, now, homes)
        except InvalidEvent as exc:
            await deadletter(record, exc.reason, exc.detail, **getattr(exc, "extra", {}))
            continue
        user_id = parsed.user_id
        if isinstance(parsed, Forget):
            vectors = _forget(parsed, record, writes, vectors, profiles, existed)
            continue
        profile = profiles.get(user_id, _MISSING)
        if profile is _MISSING or profile is None:
            profile = profiles[user_id] = _load(record.key, user_id, writes, existed, forgotten=profile is None)
        if record.offset <= profile.seq:  # redelivered after a restart: already applied
            metrics.duplicates += 1
            continue
        if type(parsed) is Served:
            profile.served = remember(profile.served, parsed, window)
            tally.served.append(parsed.variant)
            profile.seq = record.offset
            continue
        domain, overall = catalog.layers_for(parsed.item_id, parsed.category_id)
        # before the profile learns the event
        paired = chance >= 1.0 or draw() < chance
        learning = learner.due()
        if paired or learning:
            recent = profile.recent_items(covisits.window + 1)
            if learning:
                steps.add(learner.feedback(profile, parsed, recent))
        outcome = step = None
        if profile.served or parsed.rec_id:
            outcome = attribute(profile.served, parsed, window)
            if profile.served and list_learner.due():
                step = list_learner.from_list(profile, parsed, outcome, window)
        try:
            learned = profile.learn(parsed, domain, overall, params)
        except TooLate as exc:
            profile.seq = record.offset
            await deadletter(record, exc.reason, exc.detail)
            continue
        if learned:
            if paired:
                others = covisits.partners(parsed.item_id, recent)
                if others:
                    visits.append((parsed.item_id, parsed.ts, others))
            applied_types[parsed.type] = applied_types.get(parsed.type, 0) + 1
            applied.append((parsed, domain))
            if record.timestamp:
                stamps.append(record.timestamp)
            if outcome is not None:
                tally.attributed.append((outcome, parsed))
            steps.add(step)
        else:
            metrics.duplicates += 1
        profile.seq = record.offset
    if turn.over():
        await turn.pass_on()
    tally.activity.add(applied)
    await _write_profiles(writes, profiles, existed, turn)
    tally.flushed.append(writes)
    if vectors is not None:
        await vectors.flush()
        tally.flushed.append(vectors)
    if turn.over():  # a flush sends without waiting for the broker: it never yields
        await turn.pass_on()


def _load(key: bytes, user_id: str, writes: PartitionBatch, existed: dict, forgotten: bool) -> Profile:
    """The user's profile as stored (cached, else read), or a new one; `existed` learns which."""
    if forgotten:  # earlier in this batch: starts afresh
        return Profile()
    profile = profile_cache.get((writes.partition, key))  # cached profiles are in the store
    if profile is not None:
        existed[user_id] = True
        return profile
    raw = writes.get(key)
    existed[user_id] = raw is not None
    return Profile() if raw is None else Profile.from_bytes(raw)


def _forget(control: Forget, record, writes: PartitionBatch, vectors: PartitionBatch | None, profiles: dict,
            existed: dict) -> PartitionBatch:
    """A forget control record, ordered with the user's events in this partition: what came before
    is gone, what comes after starts afresh.  Tombstones go through both changelogs (the user
    vectors' batch is returned, made at the first forget)."""
    user_id = control.user_id
    if user_id not in existed:
        existed[user_id] = profile_cache.get((writes.partition, record.key)) is not None or writes.get(record.key) is not None
    profiles[user_id] = None
    if vectors is None:
        vectors = PartitionBatch(user_to_vector, writes.partition)
    vectors.put(record.key, None)
    log.info("forgot user %r (control record at %s:%s)", user_id, writes.partition, record.offset)
    return vectors


ENCODE_CHUNK = 1_000  # profiles encoded between two looks at the loop's turn


async def _write_profiles(writes: PartitionBatch, profiles: dict, existed: dict, turn: LoopTurn) -> None:
    """A partition's changed profiles (None: forgotten) into its store and changelog: encoded
    `ENCODE_CHUNK` at a time, with a look at the loop's turn between chunks (a batch of a large
    population touches thousands of users a partition, and encoding them at once held the loop
    for a hundred milliseconds and more), then one RocksDB write batch and one run of changelog
    sends.  One, not one a chunk: aiokafka sends a partition's record batches one after the
    other, each waiting for the one before, so every further run of sends waits a round trip."""
    partition = writes.partition
    users = list(profiles.items())
    for start in range(0, len(users), ENCODE_CHUNK):
        chunk = users[start:start + ENCODE_CHUNK]
        encoded = iter(encode_profiles([p for _, p in chunk if p is not None]))
        for user_id, profile in chunk:
            key = user_id.encode()
            writes.put(key, None if profile is None else next(encoded), existed[user_id])
            profile_cache.put((partition, key), profile)
        if turn.over():
            await turn.pass_on()
    await writes.flush()


class TokenBucket:
    """Tokens earned at a rate a second, at most a second's worth held: how much optional work
    (learning steps, co-visitation pairs) a worker may do without falling behind its stream."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.tokens = rate
        self._at = clock()

    def refill(self, rate: float) -> float:
        """The tokens held now, earned at `rate` a second since the last refill."""
        now = self.clock()
        self.tokens = min(rate, self.tokens + rate * (now - self._at))
        self._at = now
        return self.tokens


class Learner:
    """Feedback for θ from the stream: on average at most `per_s` steps a second, in bursts of at
    most a second's worth (a token bucket: a micro-batch holds many events of a fraction of a
    second).  A step ranks its user's candidates: a step for every event would cost more than the
    profile updates."""

    def __init__(self, per_s: float, name: str) -> None:
        self.per_s = per_s
        self.name = name  # its label in `strata_learning_steps_total{source}`
        self.bucket = TokenBucket(per_s)

    def due(self) -> bool:
        """Whether a step may be taken now (the slot is used by taking one, not by asking)."""
        return self.bucket.refill(self.per_s) >= 1.0

    def feedback(self, profile: Profile, event, recent: list[str]) -> "np.ndarray | None":
        """θ's step from `event` as the item the user went to next, before `profile` learns it
        (`recent`: its user's last items).  An event that cannot teach — its user's first, or on
        the item in view — takes no step and leaves the slot to the next."""
        if not recent or recent[0] == event.item_id:
            return None
        return self._take(event, lambda ranker, long_term: feedback(ranker, profile, event.item_id, event.ts, long_term))

    def from_list(self, profile: Profile, event, outcome, window: float) -> "np.ndarray | None":
        """θ's step from a served list (`models.learned.list_feedback`): `event` acted on an item of
        it (`outcome` its Attribution), or went to another item after it (the latest list within
        `window`); none when the list's variant does not learn."""
        shown = outcome if type(outcome) is Attribution else passed_over(profile.served, event, window)
        if shown is None or not _LEARNS.get(shown.variant, True) or profile.recent_items(1) == [event.item_id]:
            return None  # (an event on the item in view teaches nothing: no slot spent on it)
        served_at = event.ts - shown.delay_s if type(shown) is Attribution else shown.ts
        return self._take(event, lambda ranker, long_term: list_feedback(
            ranker, profile, shown.items, served_at, event.item_id, event.type, event.ts, long_term))

    def _take(self, event, step) -> "np.ndarray | None":
        """`step(ranker, the user's batch vector)`, using a slot; a failure costs the step, never the batch."""
        self.bucket.tokens -= 1.0
        try:
            ranker = served_ranker()
            delta = step(ranker, read_user_vector(user_to_vector, event.user_id, ranker.model))
            metrics.learning_steps[(self.name, "taken" if delta is not None else "none")] += 1
            return delta
        except Exception:  # noqa: BLE001 - learning is optional; applying the event is not
            metrics.learning_failures += 1
            log.exception("no feedback step for an event of user %r", event.user_id[:40])
            return None


_LEARNS = {v.name: v.learning for v in settings.variants}  # whether feedback on a variant's lists teaches θ
learner = Learner(LEARN_PER_S, "next_event")
list_learner = Learner(LIST_LEARN_PER_S, "served_list")


class Pairing:
    """Which events' co-visitation pairs this worker publishes.  Every worker applies every pair
    of the shop, sent and applied: affordable for a few thousand events a second, not at a
    worker's full rate.  So a worker pairs every event while the shop's events stay
    under `per_s` a second (its share of them: the share of the events partitions it owns), and a
    uniform sample of them above it, each pair then weighing 1 / (the share sampled)."""

    def __init__(self, per_s: float) -> None:
        self.per_s = per_s
        self.draw = random.Random().random
        self.bucket = TokenBucket(per_s)
        self._share = (1.0, 0.0)  # (share of the events partitions, when read)

    def chance(self, events: int) -> float:
        """The probability of pairing each of a batch's `events` (1: every one)."""
        tokens = self.bucket.refill(self.per_s * self._owned(time.monotonic()))
        if events <= tokens or events == 0:
            self.bucket.tokens -= events
            return 1.0
        self.bucket.tokens = 0.0
        return max(tokens, 1.0) / events

    def _owned(self, now: float) -> float:
        share, at = self._share
        if now - at > 1.0:
            topic = settings.topic("events")
            owned = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic}
            share = max(len(owned), 1) / settings.partitions
            self._share = (share, now)
        return share


pairing = Pairing(PAIRED_PER_S)


async def send_theta_snapshots() -> None:
    """θ as this worker holds it, on the activity topic every `THETA_SNAPSHOT_S`: a worker that
    starts after retention deleted older steps begins from it (streams.feeds.ShopFeed)."""
    message = shop_feed.snapshot_message()
    if message is not None:
        await activity_topic.send(value=message)


app.timer(interval=THETA_SNAPSHOT_S)(send_theta_snapshots)


@app.agent(user_factors_topic, name="store_user_vectors")
async def store_user_vectors(stream):
    """Batch user vectors from `strata train` → the user_to_vector table (same partitions as events).
    A message that is not a user vector, or not in its user's partition, is dead-lettered."""
    async for batch in stream.take_events(settings.batch_size, within=settings.batch_window_s):
        writes: dict[int, PartitionBatch] = {}
        for event in batch:
            message = event.message
            problem = user_vector_problem(message)
            if problem is not None:
                metrics.rejected[("user-factors", problem[0])] += 1
                await deadletter_topic.send(value=deadletter_record(message, *problem))
                continue
            pb = writes.get(message.partition)
            if pb is None:
                pb = writes[message.partition] = PartitionBatch(user_to_vector, message.partition)
            pb.put(message.key, message.value)
        for pb in writes.values():
            await pb.flush()
        await app.producer.flush()
        for pb in writes.values():
            await pb.confirm()


def user_vector_problem(message) -> tuple[str, str] | None:
    """Why a user-factors message cannot be stored — (reason, detail) — or None."""
    key = message.key
    if not key or len(key) > 4 * MAX_ID_LEN:
        return "bad_key", "the key must be the user id"
    try:
        parse_user_vector(message.value)
    except Exception as exc:  # noqa: BLE001 - whatever the content provokes
        return "bad_user_vector", str(exc)[:200]
    home = partition_of(user_to_vector, key)
    if home != message.partition:
        return "wrong_partition", f"the key belongs to partition {home} (Kafka's default murmur2 partitioner)"
    return None
