"""`KeyCounts`: profiles per local partition for /metrics, scanned once and then kept by the
writer's reported changes (a real RocksDB store; the store object around it is a stand-in for
the few attributes of Faust's store that the count reads)."""
from __future__ import annotations

from types import SimpleNamespace

from rocksdict import Rdict

from strata.streams.state import KeyCounts

OFFSET_KEY = b"__faust\x00offset__"


def _table(tmp_path, partitions=(0, 1)):
    dbs = {p: Rdict(str(tmp_path / f"p{p}")) for p in partitions}
    return SimpleNamespace(data=SimpleNamespace(_dbs=dbs, offset_key=OFFSET_KEY)), dbs


def test_counts_are_scanned_once_then_kept_by_the_writer(tmp_path):
    table, dbs = _table(tmp_path)
    for n in range(5):
        dbs[0][f"u{n}".encode()] = b"x"
    dbs[1][b"v"] = b"x"
    dbs[1][OFFSET_KEY] = b"42"  # Faust's persisted offset is not a profile
    counts = KeyCounts(table)
    assert counts.count([0, 1]) == 6
    assert counts.count([1]) == 1

    # Written behind the count's back: not seen (no scan per read) ...
    dbs[0][b"u9"] = b"x"
    assert counts.count([0]) == 5
    # ... the writer reports what it did instead: two created, one deleted.
    counts.changed(0, +1)
    assert counts.count([0, 1]) == 7 == sum(1 for k in dbs[0].keys()) + 1

    # An unknown change, a rebalance or a recovery: counted again on the next read.
    del dbs[1][b"v"]
    counts.changed(1, None)
    assert counts.count([1]) == 0
    dbs[0][b"u10"] = b"x"
    counts.clear()
    assert counts.count([0, 1]) == 7
    # A partition never counted ignores reported changes until its first scan.
    table2, dbs2 = _table(tmp_path / "b", partitions=(3,))
    other = KeyCounts(table2)
    other.changed(3, +10)
    assert other.count([3]) == 0
    for db in list(dbs.values()) + list(dbs2.values()):
        db.close()
