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

from typing import Iterator, Mapping

import orjson
from rocksdict import WriteBatch

from models.catalog import InvalidCatalogRecord, parse_record
from models.profile import Profile


class PartitionBatch:
    """Reads through pending writes; `flush()` commits them to RocksDB and the changelog."""

    def __init__(self, table, partition: int) -> None:
        self.table = table
        self.partition = partition
        self.store = table.data
        self.db = self.store._db_for_partition(partition)
        self.pending: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self.pending:
            return self.pending[key]
        return self.db.get(key)

    def put(self, key: bytes, value: bytes | None) -> None:
        self.pending[key] = value

    def flush(self) -> int:
        if not self.pending:
            return 0
        batch = WriteBatch(raw_mode=True)
        key_index = self.store._key_index
        for key, value in self.pending.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
            key_index[key] = self.partition
        self.db.write(batch)
        for key, value in self.pending.items():
            self.table.send_changelog(self.partition, key, value, key_serializer="raw", value_serializer="raw")
        n = len(self.pending)
        self.pending = {}
        return n


def read_profile(table, user_id: str) -> Profile | None:
    """A user's stored profile, from whichever local partition holds it (None if absent)."""
    raw = table.data._get(user_id.encode())
    return None if raw is None else Profile.from_bytes(raw)


def iter_profiles(table) -> Iterator[tuple[str, Profile]]:
    for partition, db in list(table.data._dbs.items()):
        for key, value in db.items():
            yield key.decode(), Profile.from_bytes(value)


def count_keys(table) -> int:
    """Keys held locally by a table, over all its partitions (a RocksDB scan: for health checks, not hot paths)."""
    return sum(sum(1 for _ in db.keys()) for db in list(table.data._dbs.values()))


def catalog_key(record: Mapping) -> tuple[bytes, bytes]:
    """Key and value of a catalog record on the catalog topic (kind-prefixed: item and category ids may collide)."""
    kind, key, _ = parse_record(record)
    return f"{kind}:{key}".encode(), orjson.dumps(record)


class CatalogTableView(Mapping):
    """One side of the catalog (items → category, or categories → parent) over the global catalog table."""

    def __init__(self, table, kind: str) -> None:
        self.table = table
        self.prefix = f"{kind}:"

    def _lookup(self, key: str):
        raw = self.table.data._get(f"{self.prefix}{key}".encode())
        if raw is None:
            return _MISSING
        try:
            return parse_record(orjson.loads(raw))[2]
        except (orjson.JSONDecodeError, InvalidCatalogRecord):
            return _MISSING

    def get(self, key, default=None):
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
