"""Table access for the hot path: one RocksDB write batch and one run of changelog sends
per partition per micro-batch, instead of a store write and a changelog message per event.

Faust's `Table.__setitem__` attributes a write to the partition of the *current*
event; inside a `take_events` batch that is the last event taken, which may
belong to another partition.  `PartitionBatch` names its partition explicitly,
writes the store and the changelog for exactly that partition, and keeps the
store's key index in step so that reads outside a stream (HTTP views) find the
key at once.  It relies on the RocksDB store of faust-streaming 0.15
(`_db_for_partition`, `_key_index`), pinned in pyproject.toml.
"""
from __future__ import annotations

import asyncio
from typing import Collection, Iterable, Iterator, Mapping

import orjson
from aiokafka.partitioner import murmur2
from faust.types import TP
from rocksdict import WriteBatch

from strata.models.catalog import InvalidCatalogRecord, parse_record
from strata.models.factors import parse_user_vector
from strata.models.profile import Profile
from strata.streams.batching import key_index as key_index_of
from strata.streams.batching import aiokafka_producer, local_dbs, lookup, partition_db, producer_client


class KeyCounts:
    """How many keys a table holds in each local partition: one scan, then kept by the writer.

    A scan holds the event loop for every key (seconds at a million profiles), too much for
    every /metrics scrape.  `PartitionBatch.flush` reports each write's change (keys created
    minus keys deleted, from what the writer read before writing) in the same synchronous step
    as the RocksDB write, so no reader sees one without the other.  Whatever else writes an
    active partition's store — changelog recovery after an assignment — or moves partitions
    clears the counts (`clear`, wired in streams.app), and the next read scans again.  Standby
    partitions, which Faust keeps applying from their changelogs, are never counted: a standby
    turns active only through a rebalance, which clears.
    """

    def __init__(self, table) -> None:
        self.table = table
        self._counts: dict[int, int] = {}

    def count(self, partitions: Iterable[int]) -> int:
        total = 0
        for partition in partitions:
            n = self._counts.get(partition)
            if n is None:
                n = self._counts[partition] = count_keys(self.table, (partition,))
            total += n
        return total

    def changed(self, partition: int, delta: int | None) -> None:
        """`delta` keys more in `partition` (None: unknown, count again when asked)."""
        if delta is None:
            self._counts.pop(partition, None)
        elif partition in self._counts:
            self._counts[partition] += delta

    def clear(self, *_: object) -> None:
        self._counts.clear()


class PartitionBatch:
    """Reads through pending writes; `await flush()` commits them to RocksDB and sends the changelog.

    The changelog records go straight to the producer (one `send` per key, no Faust
    FutureMessage/buffer round per record); `confirm()`, after the producer is flushed,
    records the partition's last changelog offset as the store's persisted offset once
    (Faust would write it to RocksDB once per record), so a restart with this data
    directory replays only the changelog written after it.
    """

    def __init__(self, table, partition: int, counts: KeyCounts | None = None) -> None:
        self.table = table
        self.partition = partition
        self.store = table.data
        self.db = partition_db(table, partition)
        self.pending: dict[bytes, bytes | None] = {}
        self.counts = counts
        self._existed: dict[bytes, bool | None] = {}  # whether each staged key was in the store before
        self._last_send = None

    def get(self, key: bytes) -> bytes | None:
        if key in self.pending:
            return self.pending[key]
        return self.db.get(key)

    def put(self, key: bytes, value: bytes | None, existed: bool | None = None) -> None:
        """Stage a write; `None` deletes the key (a tombstone in the changelog).  `existed`: whether
        the store held the key before this batch (for `counts`; None when the caller did not look)."""
        if key not in self._existed:
            self._existed[key] = existed
        self.pending[key] = value

    async def flush(self) -> int:
        if not self.pending:
            return 0
        batch = WriteBatch(raw_mode=True)
        key_index = key_index_of(self.table)
        for key, value in self.pending.items():
            if value is None:
                batch.delete(key)
                key_index.pop(key, None)
            else:
                batch.put(key, value)
                key_index[key] = self.partition
        # Store first, then the changelog: after a crash in between, the local store is ahead of
        # the changelog; the agent re-sends every redelivered user's profile (see streams.agents).
        self.db.write(batch)
        if self.counts is not None:
            existed = self._existed
            delta: int | None = 0
            for key, value in self.pending.items():
                before = existed[key]
                if before is None:
                    delta = None
                    break
                delta += (value is not None) - before
            self.counts.changed(self.partition, delta)
        self._existed = {}
        self._last_send = await self._send_changelog()
        n = len(self.pending)
        self.pending = {}
        return n

    async def _send_changelog(self) -> tuple[asyncio.Future, int]:
        """The pending records as whole record batches (aiokafka's `create_batch`/`send_batch`):
        appending to a batch costs a fraction of `send()`'s per-record future, partitioner and
        checks, which were a fifth of the hot path.  Returns the last batch's future and its
        record count (a batch's offsets are consecutive from the one its future gives)."""
        producer = aiokafka_producer(self.table.app)
        topic = self.table.changelog_topic.get_topic_name()
        partition = self.partition
        batch, n = producer.create_batch(), 0
        for key, value in self.pending.items():
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start the next
                await producer.send_batch(batch, topic, partition=partition)
                batch, n = producer.create_batch(), 0
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a {len(value or b'')}-byte record does not fit a producer batch")
            n += 1
        return await producer.send_batch(batch, topic, partition=partition), n

    async def confirm(self) -> None:
        """After `producer.flush()`: remember how far this partition's changelog is written."""
        if self._last_send is not None:
            future, n = self._last_send
            metadata = await future
            self.store.set_persisted_offset(metadata.topic_partition, metadata.offset + n - 1)
            self._last_send = None


def read_value(table, key: bytes) -> bytes | None:
    """A user's value in a table keyed like the events (profiles, long-term vectors), or None.

    A value lives in its events' partition.  That is first looked for where Kafka's default
    partitioner (murmur2, as aiokafka's and the Java client's) puts the key, which is also where
    `table_route` sends the request: one RocksDB read.  A key stored on another local partition is
    still found, in a look through every local partition (Faust's own search, up to one
    existence check per partition: most of a read's cost when it is not the first)."""
    db = local_dbs(table).get(partition_of(table, key))
    raw = db.get(key) if db is not None else None
    return lookup(table, key) if raw is None else raw


def partition_of(table, key: bytes) -> int:
    """The partition a key of a table keyed like the events lives in (Kafka's default partitioner)."""
    return home_partition(key, table.partitions)


def home_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2: the Java client's, aiokafka's, and
    confluent-kafka's `murmur2_random`) puts `key` in, of `partitions`: where a user's events belong."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


async def track_changelogs(app, tables) -> None:
    """Keep the tables' changelog topics in the producer's metadata.  `table_route` finds a key's
    partition through the producer's metadata (Faust's `key_partition`), and aiokafka's producer
    keeps metadata of every topic only until it has sent to one: after that, of the topics it
    has sent to.  A worker whose first send goes to another topic (a dead letter, read again
    from a feed at start-up) would otherwise answer every routed request with an error until
    it next writes the changelog."""
    client = producer_client(app)
    await asyncio.gather(*(client.add_topic(table.changelog_topic.get_topic_name()) for table in tables))


STANDBY_MAX_FETCH_AGE_S = 10.0  # a fetch loop this long without a fetch has stalled


def standby_lag(app, table, partition: int) -> int | None:
    """Changelog records this worker's standby copy of `table`'s `partition` trails the partition's
    end by, as of the last fetch; None when it keeps no standby of it, has not fetched it since
    the last rebalance (a standby is paused until the worker's own partitions are recovered), or
    its fetches stalled: the end it knows is then as old as its last fetch, and a standby that
    stopped following would count itself caught up (`BatchingConsumer.fetch_age`).

    The standby is applied from the same fetches as the events (streams.batching), so a caught-up
    standby is as fresh as the owner's changelog: one micro-batch and one fetch behind its store."""
    recovery = app.tables.recovery
    if app.rebalancing or not recovery.completed.is_set():
        return None
    tp = TP(table.changelog_topic.get_topic_name(), partition)
    if tp not in recovery.standby_tps or app.consumer.fetch_age() > STANDBY_MAX_FETCH_AGE_S:
        return None
    try:
        end = app.consumer.highwater(tp)
    except Exception:  # noqa: BLE001 - not assigned or not fetched yet
        return None
    if end is None:
        return None
    applied = recovery.standby_offsets.get(tp)
    return max(0, end - (applied + 1 if applied is not None else 0))


def read_profile(table, user_id: str) -> Profile | None:
    """A user's stored profile (None if absent); see `read_value`."""
    raw = read_value(table, user_id.encode())
    return None if raw is None else Profile.from_bytes(raw)


def read_user_vector(table, user_id: str, model) -> "np.ndarray | None":
    """The batch job's vector x_u of a user (streams.trainer), when it fits the item factors served."""
    raw = read_value(table, user_id.encode())
    if raw is None or model is None:
        return None
    try:
        _, vector = parse_user_vector(raw)
    except ValueError:  # stored before user vectors were checked (streams.agents): none
        return None
    return vector if vector.shape[0] == model.dims else None


def iter_profiles(table) -> Iterator[tuple[str, Profile]]:
    for partition, db in list(local_dbs(table).items()):
        for key, value in db.items():
            yield key.decode(), Profile.from_bytes(value)


def count_keys(table, partitions: Collection[int] | None = None) -> int:
    """Entries held locally by a table, over all its partitions or the given ones (a RocksDB scan:
    for health checks and metrics, not hot paths).  Faust's per-partition offset key is not an entry."""
    store = table.data
    offset_key = getattr(store, "offset_key", None)
    return sum(
        1
        for partition, db in list(local_dbs(table).items())
        if partitions is None or partition in partitions
        for key in db.keys()
        if key != offset_key
    )


def catalog_key(record: Mapping) -> tuple[bytes, bytes]:
    """Key and value of a catalog record on the catalog topic (kind-prefixed: item and category ids may collide)."""
    kind, key, _ = parse_record(record)
    return f"{kind}:{key}".encode(), orjson.dumps(record)


MAX_CATALOG_KEY_BYTES = 1024


def catalog_problem(key: bytes | None, value: bytes | None) -> tuple[str, str] | None:
    """Why a catalog-topic record cannot be applied — (reason, detail) — or None.  A record is
    applied only when its value is a catalog record (models.catalog) and its key is the one
    `catalog_key` gives it; a tombstone (no value) deletes its key."""
    if not key or len(key) > MAX_CATALOG_KEY_BYTES:
        return "bad_key", f"a catalog key must be 1-{MAX_CATALOG_KEY_BYTES} bytes, got {len(key or b'')}"
    if value is None:
        return None
    try:
        expected, _ = catalog_key(orjson.loads(value))
    except orjson.JSONDecodeError as exc:
        return "not_json", f"not valid JSON ({exc})"
    except InvalidCatalogRecord as exc:
        return "bad_catalog_record", str(exc)
    except Exception as exc:  # noqa: BLE001 - whatever else the content provokes
        return "undecodable", f"{type(exc).__name__}: {str(exc)[:200]}"
    if expected != key:
        return "wrong_key", f"the key must be {expected[:200]!r}"
    return None


class CatalogTableView(Mapping):
    """One side of the catalog (items → category, or categories → parent) over the global catalog table."""

    CACHE_LIMIT = 500_000

    def __init__(self, table, kind: str) -> None:
        self.table = table
        self.prefix = f"{kind}:"
        # Every event looks up its item's category and the category's root: a RocksDB read,
        # a JSON decode and a validation each time, unless cached.  The catalog table calls
        # `invalidate()` whenever it applies changelog records (app.py), so the cache never
        # serves a stale answer.
        self._cache: dict[str, object] = {}
        self.changes = 0  # how often the table changed under this view (for what else caches it)

    def invalidate(self) -> None:
        self._cache = {}
        self.changes += 1

    def _lookup(self, key: str):
        cache = self._cache
        value = cache.get(key, _UNCACHED)
        if value is _UNCACHED:
            value = self._read(key)
            if len(cache) >= self.CACHE_LIMIT:
                cache.clear()
            cache[key] = value
        return value

    def _read(self, key: str):
        raw = lookup(self.table, f"{self.prefix}{key}".encode())
        if raw is None:
            return _MISSING
        try:
            return parse_record(orjson.loads(raw))[2]
        except Exception:  # noqa: BLE001 - a record stored before it was checked (streams.app) is no record
            return _MISSING

    def get(self, key, default=None):
        value = self._cache.get(key, _UNCACHED)  # `_lookup`, inlined: the hot path asks per event
        if value is _UNCACHED:
            value = self._lookup(key)
        return default if value is _MISSING else value

    def __getitem__(self, key):
        value = self._lookup(key)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key) -> bool:
        return self._lookup(key) is not _MISSING

    def __iter__(self):
        for key in self.table.keys():
            text = key.decode() if isinstance(key, bytes) else key
            if text.startswith(self.prefix):
                yield text[len(self.prefix):]

    def __len__(self) -> int:
        return sum(1 for _ in self)


_MISSING = object()
_UNCACHED = object()
