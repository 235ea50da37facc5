"""A batched route through Faust for the events topic, and the one module that knows Faust's and
aiokafka's private names: the other modules reach a table's RocksDB stores and the producer's
client through the accessors at the end of this one (`partition_db`, `local_dbs`, …).

Faust delivers every consumed message to a stream as an Event, and its fetch
loop (`Consumer._drain_messages`) wraps each delivery in `wait_first`, i.e.
two asyncio tasks per message: measured, that caps a do-nothing agent near
4,000 events/s on our machines (SPEC §7), whatever the agent body does.

This module keeps Faust for everything it is good at — the app, topics,
consumer group, rebalancing, table recovery, table routing, web views — and
changes only what happens to records of *one* topic once fetched: instead of
becoming Faust Messages/Events one by one, each fetched batch is handed, as
plain aiokafka records grouped by partition, to one handler (the profile
update in `streams.agents`).  While a partition of the route's own tables
recovers, its changelog records are likewise written in one RocksDB batch per
fetch (`_recover_batch`).  Records of every other topic (the catalog, user
vectors, …) take Faust's own path unchanged.

Offsets: the handler returns only after its store batch is written and its
changelog sends are flushed (acknowledged by the broker); only then does the
route record "everything up to offset o of partition p is done", and Faust's
own commit machinery (periodic commit, commit on shutdown) commits exactly
that through `_new_offset`.  A crash anywhere before loses nothing: the
records are fetched again from the last commit and the handler's per-user
de-duplication (models/profile.py `seq`) skips what the store already holds.

Rebalance: a batch runs under `lock`; partition revocation takes the same lock,
so it waits for an in-flight batch to finish (store + changelog flushed) and a
batch never starts on a partition that is gone — records of partitions no longer
assigned, or fetched under an older group generation, are dropped and fetched
again from the committed offset by whichever worker owns them now.

Contiguity: a user's de-duplication (`Profile.seq`, the last applied offset) is exact only if
each partition is applied as a prefix — never offset o while an earlier, unapplied offset
waits to be fetched again, or the earlier one is later skipped as "already applied".  Records
come back from aiokafka's fetch on another thread, so a fetch issued before a seek (or a
rebalance) can return records from a position the seek undid, or records that moved the
position on after the seek.  Every seek and rebalance of the route's partitions starts a new
fetch `epoch`; the route knows where each partition's applied prefix ends (`next_offset`), and
a partition's records that would leave a hole after it — or that were fetched across a seek
while that end is unknown — are dropped and the partition is sought back to the end of the
prefix (or to its committed offset, which never passes an unapplied record).  A hole that is
still there after such a seek is a real gap in the log (transaction markers) and is taken.
`BatchRoute.holes` is the rule (tests/streams/test_batch_route.py).

Partitions with no committed offset yet start at the earliest offset: Faust
fetches source partitions while tables recover and drops what it fetched, and
"seek to committed" leaves such partitions where the fetcher stopped, i.e.
at the end — a worker started on a backlog (or restarted after a crash before
its first commit) would otherwise silently skip it.

Every private name, override and signature of faust, mode, aiokafka and rocksdict this module
relies on is listed, with why, in `RELIES_ON` at its end; tests/streams/test_faust_seam.py checks
the list against the installed packages without a broker and names what moved, and that the
installed versions are inside the ones pyproject.toml pins.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Mapping, NamedTuple, Optional, Sequence

import faust
from aiokafka.errors import IllegalStateError, KafkaError
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import Consumer as _AIOKafkaConsumer
from faust.types import TP
from rocksdict import WriteBatch

log = logging.getLogger(__name__)

BatchHandler = Callable[[Mapping[TP, Sequence]], Awaitable[None]]


async def let_others_run() -> None:
    """Let whatever became ready meanwhile run before this task goes on.

    One `sleep(0)` is not enough: the task is queued again at once, and the I/O and timers that
    fell due while it ran (an HTTP request, the loop-lag watch) are queued in the next loop
    iteration *behind* it, so they would wait for one more stretch of work.  The second
    `sleep(0)` puts the task behind them."""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


class LoopTurn:
    """A task's turn on the event loop: `over()` once it has held the loop for `length` seconds
    since its turn began, and `pass_on()` lets the others run and begins the next turn.

    Time, not a count of records, decides: a micro-batch of a few hundred events (a worker that
    keeps up) runs through in one turn, as fast as it can, while one of tens of thousands (a
    worker catching up) lets HTTP requests in every `length`.  Passing on is not free for the
    batch that does it: passing at fixed points (three a partition, whatever the batch) raised
    the median update latency at 2,000 events/s from 9-13 to 17-24 ms (`strata bench stream`)."""

    def __init__(self, length: float) -> None:
        self.length = length
        self.began = time.perf_counter()

    def over(self) -> bool:
        return time.perf_counter() - self.began >= self.length

    async def pass_on(self) -> None:
        await let_others_run()
        self.began = time.perf_counter()


class BatchRoute:
    """One topic whose fetched records go, a batch at a time, to `handler`."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.handler: Optional[BatchHandler] = None
        self.done: dict[TP, int] = {}  # tp → next offset to commit (all below are processed and flushed)
        # tp → the offset the applied prefix ends at: set by every seek and every processed batch
        self.next_offset: dict[TP, int] = {}
        self.refetched_from: dict[TP, int] = {}  # tp → the offset it was last sought back to
        # Bumped before and after every seek and rebalance: records fetched in an older epoch
        # may come from a position that no longer holds (see the module doc).
        self.epoch = 0
        self.stale_batches = 0
        self._lock: Optional[asyncio.Lock] = None
        self.batches = 0
        # Tables whose changelog records, while their partition actively recovers or is a
        # standby, are written in batches (see BatchingConsumer._recover_batch) instead of one by one.
        self.recovered_tables: set[str] = set()
        # table name → whether a changelog record of the table may be applied (False: it is not, and
        # the filter has dead-lettered it); records of a table without one are all applied
        self.filters: dict[str, Callable[[object], bool]] = {}
        self.recovered_records = 0
        self.standby_records = 0  # applied to standby partitions (see streams.views: served from there)
        self.global_records = 0  # applied to global tables (the catalog), which Faust keeps as standbys
        # Called with the table and whether the partition is a standby, after each batch applied.
        self.on_recovered: list[Callable[[object, bool], None]] = []
        # Called (under the lock) when partitions are revoked or assigned: derived local state
        # (e.g. decoded-profile caches) must not outlive the assignment it was built under.
        self.on_rebalance: list[Callable[[], None]] = []
        self._read: Optional[asyncio.Future] = None  # done once the batch in hand has been read

    def reading(self) -> asyncio.Future:
        """A fetch's records are in hand: a future that `records_read` completes."""
        self._read = asyncio.get_running_loop().create_future()
        return self._read

    def records_read(self) -> None:
        """The handler has read every record of the batch in hand (what is left is flushing), or
        the batch is over: the next fetch may be asked for."""
        if self._read is not None and not self._read.done():
            self._read.set_result(None)

    @property
    def lock(self) -> asyncio.Lock:
        if self._lock is None:  # created on the worker's loop, not at import
            self._lock = asyncio.Lock()
        return self._lock

    def holes(self, batch: Mapping[TP, Sequence], stale: bool) -> list[TP]:
        """Partitions whose records must be fetched again: they start after the applied prefix
        ends (`next_offset`), or were fetched across a seek and where that prefix ends is not known.

        A record batch fetched after a seek back to `next_offset` that still starts later is a real
        gap in the log (transaction markers, records deleted by retention) and is taken."""
        out = []
        for tp, recs in batch.items():
            expected = self.next_offset.get(tp)
            if expected is None:
                if stale:
                    out.append(tp)
            elif recs[0].offset > expected:
                if stale or self.refetched_from.get(tp) != expected:
                    self.refetched_from[tp] = expected
                    out.append(tp)
        return out

    def __call__(self, handler: BatchHandler) -> BatchHandler:
        """Decorator: `@route` registers the batch handler."""
        self.handler = handler
        return handler


class BatchingConsumer(_AIOKafkaConsumer):
    """Faust's aiokafka consumer with a batched route for `route.topic` (see the module doc)."""

    route: BatchRoute  # set by install()
    fetched_at = 0.0  # monotonic time the last fetch returned (`fetch_age`)

    # -- fetching ------------------------------------------------------------
    async def _drain_messages(self, fetcher) -> None:  # pragma: no cover - exercised by the integration tests
        route = self.route
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        # The next fetch is asked for while a batch is processed: records come from Faust's
        # consumer thread through its method queue (≈ 45 ms a round trip on a busy worker,
        # 14 % of the backlog's wall time when asked for only after a batch), and the hand-over
        # overlaps the batch's flush instead.  Not before the handler has read the batch's
        # records (`BatchRoute.records_read`): the handler lets HTTP requests in while it works,
        # and a fetch that ran then would take only what had arrived by then, so that a backlog
        # would go in smaller batches.  Its epoch is taken when it is asked for.
        prefetch: Optional[tuple[int, asyncio.Future]] = None
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                if prefetch is None:  # the epoch before the fetch: a seek during it makes its records suspect
                    prefetch = (route.epoch, asyncio.ensure_future(self.next_records(1.0)))
                epoch, fetch = prefetch
                prefetch = None
                try:
                    records, active = await fetch
                except KeyError as exc:
                    # Faust seeks from this thread while the fetch drains aiokafka's buffers in the
                    # consumer thread; a seek that drops a partition's buffer mid-drain raises here,
                    # after the drain took (and moved the positions past) records of other
                    # partitions that are now lost.  As in a rebalance: every partition back to its
                    # committed offset, and what was applied since is de-duplicated per user.
                    log.warning("a seek raced the fetch (%r); seeking to the committed offsets", exc)
                    await self._seek_to_committed()
                    continue
                if not (consumer_should_stop() or fetcher_should_stop() or self.should_stop):
                    read = route.reading()
                    prefetch = (route.epoch, asyncio.ensure_future(self._fetch_after(read)))
                try:
                    await self._drain_fetched(records, active, epoch)
                finally:
                    route.records_read()
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            if prefetch is not None:
                prefetch[1].cancel()

    async def _fetch_after(self, read: asyncio.Future):
        await read
        return await self.next_records(1.0)

    async def next_records(self, timeout: float):
        """One fetch: (records by partition, the active partitions), Faust's `_wait_next_records`."""
        fetched = await self._wait_next_records(timeout)
        self.fetched_at = time.monotonic()
        return fetched

    def fetch_age(self) -> float:
        """Seconds since a fetch last returned (inf before the first).  A fetch returns at least
        every `timeout`, records or not, so a large age is a fetch loop that stalled, and the
        partitions' high-water marks (`highwater`) are as old as it."""
        return time.monotonic() - self.fetched_at if self.fetched_at else float("inf")

    async def _drain_fetched(self, records, active, epoch: int) -> None:
        """One fetch's records: the route's as one batch, every other topic's as Faust would."""
        route = self.route
        callback = self.callback
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for
        commit_every = self._commit_every
        await self.sleep(0)
        if not records or self.should_stop:
            return
        if not self.flow_active:
            # As Faust's getmany: records fetched while the flow is stopped (rebalance)
            # are dropped and the partitions go back to their committed offsets.
            await self._seek_to_committed()
            return
        generation = self.app.consumer_generation_id
        ours: dict[TP, list] = {}
        others: list[tuple[TP, object]] = []
        for tp, recs in records.items():
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue
            if tp.topic == route.topic:
                ours[tp] = recs
            elif not (recs and self._recover_batch(tp, recs, generation)):
                others.extend((tp, r) for r in recs)
        if ours:
            await self._process_batch(ours, generation, epoch)
        # Everything else exactly as faust's _drain_messages does it, one message at a time,
        # committing after every `broker_commit_every` acknowledged messages as well as on Faust's
        # timer.  The route's batches take no part in that count: they are not acknowledged
        # message by message (`_n_acked`), and what a crash makes the route fetch again is
        # de-duplicated per user: for the route, the timer's commit bounds work repeated, never lost.
        for tp, record in others:
            if self.app.consumer_generation_id != generation or not self.flow_active:
                break
            message = self._to_message(tp, record)
            offset = message.offset
            r_offset = get_read_offset(tp)
            if r_offset is None or offset >= r_offset:
                gap = offset - (r_offset or 0)
                if gap > 1 and r_offset and acks_enabled_for(message.topic):
                    await self._add_gap(tp, r_offset + 1, offset)
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                await self.wait_first(callback(message), self.suspend_flow.wait())
                set_read_offset(tp, offset)

    async def _seek_to_committed(self) -> None:
        """Every assigned partition back to its committed offset (Faust's `perform_seek`).  A
        rebalance may take a partition away while the seek waits for the committed offsets; its
        new owner seeks it, so that is no reason to crash the worker."""
        try:
            await self.perform_seek()
        except KafkaError as exc:
            log.warning("seek to committed offsets failed (%r); the assignment seeks again", exc)

    async def _process_batch(self, batch: dict[TP, list], generation: int, epoch: int) -> None:
        route = self.route
        async with route.lock:
            if self.app.consumer_generation_id != generation or not self.flow_active:
                return  # a rebalance happened since the fetch: the new assignment re-fetches from the commits
            assigned = self.assignment()
            batch = {tp: recs for tp, recs in batch.items() if tp in assigned and recs}
            if not batch:
                return
            refetch = route.holes(batch, stale=route.epoch != epoch)
            if refetch:
                route.stale_batches += 1
                log.info("records of %s would leave a hole after the applied ones (fetched across a seek "
                         "or rebalance): fetching them again",
                         sorted(f"{tp.partition}@{batch[tp][0].offset}" for tp in refetch))
                for tp in refetch:
                    await self._reseek(tp)
                batch = {tp: recs for tp, recs in batch.items() if tp not in refetch}
                if not batch:
                    return
            await route.handler(batch)  # returns once the store batch and the changelog are flushed
            route.batches += 1
            monitor = self.app.monitor
            for tp, recs in batch.items():
                last = recs[-1].offset
                route.done[tp] = last + 1
                route.next_offset[tp] = last + 1
                self._read_offset[tp] = last
                self._acked[tp]  # noqa: B018 - touching the defaultdict lists tp among those with pending commits
                monitor.track_tp_end_offset(tp, self.highwater(tp))

    # -- recovery --------------------------------------------------------------
    def _recover_batch(self, tp: TP, records: list, generation: int) -> bool:
        """Apply a fetched run of a changelog partition of one of the route's tables, actively
        recovering or a standby, in one RocksDB write; False leaves the records to Faust's own path.

        Faust's recovery takes changelog records one message at a time through its stream
        machinery (≈ 4,000 records/s here), and a standby applies them in buffers of
        `standby_buffer_size`, so its store can trail the changelog by that many records.  This
        does what its `apply_changelog_batch` does — puts and deletes, then the persisted offset —
        and advances the recovery's offset for the partition, from which Faust decides that
        recovery is complete; a standby's store is as fresh as the last fetch.
        """
        recovery = self.app.tables.recovery
        if recovery.in_recovery and tp in recovery.active_tps:
            offsets = recovery.active_offsets
        elif tp in recovery.standby_tps:
            offsets = recovery.standby_offsets
        else:
            return False
        table = recovery.tp_to_table.get(tp)
        if table is None or table.name not in self.route.recovered_tables:
            return False
        if self.app.consumer_generation_id != generation or not self.flow_active:
            return True  # fetched under an old assignment: recovery restarts from the persisted offset
        seen = offsets.get(tp)
        batch = WriteBatch(raw_mode=True)
        last = None
        keep = self.route.filters.get(table.name)
        for record in records:
            if seen is not None and record.offset <= seen:
                continue
            last = record.offset
            if keep is not None and not keep(record):
                continue
            if record.value is None:
                batch.delete(record.key)
            else:
                batch.put(record.key, record.value)
        if last is None:
            return True
        store = table.data
        partition_db(table, tp.partition).write(batch)
        store.set_persisted_offset(tp, last)
        offsets[tp] = last
        self._read_offset[tp] = last
        standby = offsets is recovery.standby_offsets
        if isinstance(table, faust.GlobalTable):  # Faust keeps a global table as a standby of every partition
            self.route.global_records += len(records)
        elif standby:
            self.route.standby_records += len(records)
        else:
            self.route.recovered_records += len(records)
        for callback in self.route.on_recovered:
            callback(table, standby)
        return True

    # -- committing ----------------------------------------------------------
    def _new_offset(self, tp: TP) -> Optional[int]:
        if tp.topic != self.route.topic:
            return super()._new_offset(tp)
        done = self.route.done.get(tp)
        committed = self._committed_offset[tp]
        if done is not None and (committed is None or done > committed):
            return done
        return None

    # -- rebalancing ---------------------------------------------------------
    async def on_partitions_revoked(self, revoked) -> None:
        # Wait for the batch in flight (its store and changelog writes belong to
        # partitions that may now move), then forget what we did for them.
        route = self.route
        async with route.lock:
            route.epoch += 1
            for tp in revoked:
                route.done.pop(tp, None)
                route.next_offset.pop(tp, None)
                route.refetched_from.pop(tp, None)
            for callback in route.on_rebalance:
                callback()
            try:
                await super().on_partitions_revoked(revoked)
            finally:
                route.epoch += 1

    async def on_partitions_assigned(self, assigned, generation_id: int = 0) -> None:
        route = self.route
        async with route.lock:
            route.epoch += 1
            for callback in route.on_rebalance:
                callback()
        try:
            await super().on_partitions_assigned(assigned, generation_id)
        finally:
            route.epoch += 1

    async def seek_to_committed(self) -> Mapping[TP, int]:
        route = self.route
        route.epoch += 1
        try:
            committed = await super().seek_to_committed()
            ours = [tp for tp in self.assignment() if tp.topic == route.topic]
            for tp in ours:
                if committed.get(tp):
                    route.next_offset[tp] = committed[tp]
            # auto_offset_reset=earliest, enforced: a source partition without a commit starts at
            # its beginning (aiokafka leaves a partition committed at 0 where it was, too).
            fresh = [tp for tp in self.assignment() if not self._is_changelog_tp(tp) and not committed.get(tp)]
            if fresh:
                earliest = await self.earliest_offsets(*fresh)
                for tp in fresh:
                    offset = earliest.get(tp)
                    if offset is not None:
                        try:
                            await self.seek(tp, offset)
                        except IllegalStateError:  # revoked meanwhile: its new owner seeks it
                            continue
                        if tp.topic == route.topic:
                            route.next_offset[tp] = offset
            return committed
        finally:
            route.epoch += 1

    async def seek_wait(self, partitions: Mapping[TP, Optional[int]]) -> None:
        """Faust's seek, without the partitions whose offset is not known (see `known_offsets`)."""
        known = known_offsets(partitions)
        if len(known) < len(partitions):
            log.info("not seeking %s: offsets reset by a rebalance; the recovery it restarts seeks them",
                     sorted(f"{tp.topic}:{tp.partition}" for tp in partitions if tp not in known))
        await super().seek_wait(known)

    async def _reseek(self, tp: TP) -> None:
        """Seek `tp` back to where its applied records end — or, not known (a seek to the
        committed offsets is under way), to its committed offset: never past a record not
        applied yet, whichever seek lands last."""
        route = self.route
        route.epoch += 1
        try:
            offset = route.next_offset.get(tp)
            if offset is None:
                thread = self._thread
                offset = await thread.call_thread(thread._ensure_consumer().committed, tp)
                if not offset:
                    offset = (await self.earliest_offsets(tp)).get(tp)
            if offset is not None and tp in self.assignment():
                await self.seek(tp, offset)
        except (IllegalStateError, KafkaError) as exc:  # revoked meanwhile: its new owner seeks it
            log.info("seeking %s back failed (%r); the next assignment seeks it", tp, exc)
        finally:
            route.epoch += 1


def known_offsets(partitions: Mapping[TP, Optional[int]]) -> dict[TP, int]:
    """The partitions of a seek whose offset is known.

    Faust's recovery builds its standby offsets, waits for the active partitions to recover,
    then seeks the standbys to them.  A rebalance in between refills the same mapping for the new
    assignment, a newly assigned standby's offset as None (`Recovery._add`), and aiokafka refuses
    to seek to None with an error that stops the worker (two workers with standbys starting
    together meet it: about one start in fifteen).  The rebalance restarts the recovery, which pauses the
    partition, builds its offset and seeks it; a standby read before that without a seek starts
    at the changelog's beginning (the consumer's `auto_offset_reset`), which is slower, not wrong."""
    return {tp: offset for tp, offset in partitions.items() if offset is not None}


def install(app, topic_name: str) -> BatchRoute:
    """Make `app`'s consumer route `topic_name` in batches; returns the route to register the handler on."""
    route = BatchRoute(topic_name)
    consumer_class = type("StrataConsumer", (BatchingConsumer,), {"route": route})
    app.transport.Consumer = consumer_class
    return route


# -- a table's local stores and the producer's client (faust-streaming 0.15's private names) ----
def partition_db(table, partition: int):
    """The RocksDB database of one partition of a table (opened when not yet)."""
    return table.data._db_for_partition(partition)


def local_dbs(table) -> dict:
    """partition → RocksDB database, for the partitions of a table open in this worker."""
    return table.data._dbs


def key_index(table) -> dict:
    """The store's key → partition index, kept in step with writes that bypass the store."""
    return table.data._key_index


def lookup(table, key: bytes):
    """A key's raw value in any local partition of a table (Faust's own search), or None."""
    return table.data._get(key)


def aiokafka_producer(app):
    """The aiokafka producer under Faust's (whole record batches: `streams.state.PartitionBatch`)."""
    return app.producer._ensure_producer()


def producer_client(app):
    """The aiokafka client under Faust's producer (its metadata: `streams.state.track_changelogs`)."""
    return aiokafka_producer(app).client


def started_consumer(app):
    """Faust's consumer once the worker has made it, else None (asking `app.consumer` would make one)."""
    return getattr(app, "_consumer", None)


def committed_offset(consumer, tp) -> int | None:
    """The offset Faust's consumer last committed for `tp` (None before its first commit)."""
    return consumer._committed_offset.get(tp)


class ExternalChangelogGlobalTable(faust.GlobalTable):
    """A GlobalTable whose changelog is a topic named by us.  faust-streaming 0.15's assignor asks
    `_changelog_topic_name()`, which ignores a given `changelog_topic`; answer with its real name."""

    def _changelog_topic_name(self) -> str:
        return self.changelog_topic.get_topic_name()


# -- what this module relies on --------------------------------------------------------------
class Reliance(NamedTuple):
    """A name of faust, mode, aiokafka or rocksdict this module uses beyond their documented API."""

    owner: str  # the module or class that holds it, dotted
    name: str
    # A callable's parameters as `inspect.signature` shows them without annotations, or None for
    # an attribute (of the class, or one its methods set on `self`).
    signature: Optional[str]
    why: str
    # For a method or attribute we override or swap: a Faust class whose source uses the name, so
    # that ours still runs (an override nobody calls any more fails silently).
    used_by: str = ""


_CONSUMER = "faust.transport.drivers.aiokafka.Consumer"  # the class BatchingConsumer extends
_THREAD = "faust.transport.drivers.aiokafka.AIOKafkaConsumerThread"
_STORE = "faust.stores.rocksdb.Store"
_RECOVERY = "faust.tables.recovery.Recovery"
_BASE = "faust.transport.consumer.Consumer"  # Faust's consumer, whose own methods call the overrides
_DELEGATE = "faust.transport.consumer.ThreadDelegateConsumer"  # hands the consumer thread's rebalance over
_FETCHER = "faust.transport.consumer.Fetcher"  # the service that runs the fetch loop

RELIES_ON: tuple[Reliance, ...] = (
    # Overridden or swapped: Faust calls these (`used_by`), and ours must take the same arguments.
    Reliance(_CONSUMER, "_drain_messages", "(self, fetcher)",
             "the fetch loop: the route's records go to its handler a batch at a time", _FETCHER),
    Reliance(_CONSUMER, "_new_offset", "(self, tp)", "the route commits BatchRoute.done, not acked messages", _BASE),
    Reliance(_CONSUMER, "on_partitions_revoked", "(self, revoked)", "waits for the batch in flight", _DELEGATE),
    Reliance(_CONSUMER, "on_partitions_assigned", "(self, assigned, generation_id=0)", "a new fetch epoch", _DELEGATE),
    Reliance(_CONSUMER, "seek_to_committed", "(self)",
             "notes where the route's applied prefix ends; a partition never committed starts at earliest", _BASE),
    Reliance(_CONSUMER, "seek_wait", "(self, partitions)", "leaves out offsets a rebalance reset to None", _RECOVERY),
    Reliance("faust.tables.globaltable.GlobalTable", "_changelog_topic_name", "(self)",
             "the assignor asks it and ignores a given changelog_topic (ExternalChangelogGlobalTable)",
             "faust.assignor.partition_assignor.PartitionAssignor"),
    Reliance("faust.transport.drivers.aiokafka.Transport", "Consumer", None,
             "install() swaps in BatchingConsumer: the class the transport makes its consumer from",
             "faust.transport.base.Transport"),
    # Called or read on the consumer by the fetch loop, the batches, recovery and commits.
    Reliance("mode.services.Service", "_stopped", None, "the consumer's and the fetcher's stop event"),
    Reliance(_CONSUMER, "_wait_next_records", "(self, timeout)",
             "one fetch as records by partition, without turning them into Messages"),
    Reliance(_CONSUMER, "_to_message", "(self, tp, record)", "other topics' records become Messages as in Faust"),
    Reliance(_CONSUMER, "_add_gap", "(self, tp, offset_from, offset_to)",
             "other topics' offset gaps, so that their commits pass them as in Faust"),
    Reliance(_CONSUMER, "_read_offset", None, "the last offset read per partition, which perform_seek resets"),
    Reliance(_CONSUMER, "_acked", None, "a route partition listed here is among those Faust's commit visits"),
    Reliance(_CONSUMER, "_committed_offset", None, "the last commit: _new_offset and committed_offset()"),
    Reliance(_CONSUMER, "_buffered_partitions", None, "partitions Faust still takes while their buffer is full"),
    Reliance(_CONSUMER, "_n_acked", None, "acknowledged messages since the last broker_commit_every commit"),
    Reliance(_CONSUMER, "_commit_every", None, "the app's broker_commit_every"),
    Reliance(_CONSUMER, "_is_changelog_tp", "(self, tp)", "changelog partitions are not sought to earliest"),
    Reliance(_CONSUMER, "_thread", None, "the consumer thread, asked for a partition's committed offset"),
    Reliance(_CONSUMER, "perform_seek", "(self)", "every partition back to its committed offset, as getmany does"),
    Reliance(_CONSUMER, "seek", "(self, partition, offset)", "a partition back to the end of the applied prefix"),
    Reliance(_CONSUMER, "earliest_offsets", "(self, *partitions)", "where a partition never committed starts"),
    Reliance(_CONSUMER, "highwater", "(self, tp)", "the end offset the monitor tracks after a batch"),
    Reliance(_CONSUMER, "commit", "(self, topics=None, start_new_transaction=True)", "the broker_commit_every commit"),
    Reliance(_CONSUMER, "wait_first", "(self, *coros, timeout=None)", "other topics' messages, as in Faust"),
    Reliance(_THREAD, "_ensure_consumer", "(self)", "the aiokafka consumer, for a partition's committed offset"),
    Reliance(_THREAD, "call_thread", "(self, fun, *args, **kwargs)", "runs that call on the consumer's thread"),
    Reliance("aiokafka.AIOKafkaConsumer", "committed", "(self, partition)", "a partition's committed offset"),
    Reliance("faust.app.base.App", "consumer_generation_id", None,
             "records fetched under an older generation are dropped"),
    Reliance("faust.sensors.monitor.Monitor", "track_tp_end_offset", "(self, tp, offset)", "as getmany does per fetch"),
    Reliance("faust.transport.conductor.Conductor", "acks_enabled_for", "(self, topic)", "as _drain_messages does"),
    # Batched recovery: the recovery's own bookkeeping, and the store write apply_changelog_batch does.
    Reliance("faust.tables.manager.TableManager", "recovery", None, "app.tables.recovery"),
    Reliance(_RECOVERY, "in_recovery", None, "whether active partitions are recovering"),
    Reliance(_RECOVERY, "active_tps", None, "changelog partitions actively recovering"),
    Reliance(_RECOVERY, "active_offsets", None, "how far each has recovered: Faust ends recovery from it"),
    Reliance(_RECOVERY, "standby_tps", None, "changelog partitions kept as standbys"),
    Reliance(_RECOVERY, "standby_offsets", None, "how far each standby has been applied"),
    Reliance(_RECOVERY, "tp_to_table", None, "the table a changelog partition belongs to"),
    Reliance(_STORE, "set_persisted_offset", "(self, tp, offset)", "the offset recovery restarts from"),
    Reliance("rocksdict", "WriteBatch", "(raw_mode=False)",
             "one write per fetched run, raw bytes as Faust's store keeps them"),
    Reliance("rocksdict.WriteBatch", "put", "(self, /, key, value, column_family=None)", "a changelog record's value"),
    Reliance("rocksdict.WriteBatch", "delete", "(self, /, key, column_family=None)", "a changelog tombstone"),
    Reliance("rocksdict.Rdict", "write", "(self, /, write_batch, write_opt=None)",
             "the batch into a partition's database"),
    # The accessors above, for the other modules.
    Reliance(_STORE, "_db_for_partition", "(self, partition)", "partition_db(): opens the database when not yet"),
    Reliance(_STORE, "_dbs", None, "local_dbs(): the partitions open in this worker"),
    Reliance(_STORE, "_key_index", None, "key_index(): kept in step with writes that bypass the store"),
    Reliance(_STORE, "_get", "(self, key)", "lookup(): Faust's own search of the local partitions"),
    Reliance("faust.transport.drivers.aiokafka.Producer", "_ensure_producer", "(self)",
             "aiokafka_producer(): whole record batches"),
    Reliance("aiokafka.AIOKafkaProducer", "client", None, "producer_client(): the cluster metadata"),
    Reliance("faust.app.base.App", "_consumer", None,
             "started_consumer(): read with getattr, so a rename would silently answer None"),
)
