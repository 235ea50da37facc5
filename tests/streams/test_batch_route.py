"""The batched route's rule for keeping each partition applied as a prefix (streams/batching.py).

The race it guards against needs a real broker to happen (tests/integration/test_rebalance.py);
the rule itself — which fetched records may be applied — is plain bookkeeping, checked here."""
from __future__ import annotations

from types import SimpleNamespace

from hypothesis import given, strategies as st
from faust.types import TP

from streams.batching import BatchRoute

P0, P1 = TP("events", 0), TP("events", 1)


def _records(first: int, n: int = 3) -> list:
    return [SimpleNamespace(offset=o) for o in range(first, first + n)]


def test_records_that_continue_the_applied_prefix_are_taken_even_across_a_seek():
    route = BatchRoute("events")
    route.next_offset[P0] = 10
    assert route.holes({P0: _records(10)}, stale=False) == []
    assert route.holes({P0: _records(10)}, stale=True) == []
    assert route.holes({P0: _records(7)}, stale=True) == []  # redelivered: de-duplicated by the handler


def test_records_fetched_across_a_seek_with_no_known_prefix_are_fetched_again():
    route = BatchRoute("events")
    assert route.holes({P0: _records(1252)}, stale=True) == [P0]
    assert route.holes({P0: _records(1252)}, stale=False) == []  # no seek since the fetch: where the position was


def test_a_hole_is_fetched_again_once_then_taken_as_a_gap_in_the_log():
    route = BatchRoute("events")
    route.next_offset[P0] = 10
    assert route.holes({P0: _records(14)}, stale=False) == [P0]  # sought back to 10 ...
    assert route.holes({P0: _records(14)}, stale=False) == []  # ... and the log really resumes at 14
    route.next_offset[P0] = 20
    assert route.holes({P0: _records(25)}, stale=False) == [P0]  # a new hole: fetched again


def test_a_stale_hole_is_always_fetched_again():
    route = BatchRoute("events")
    route.next_offset[P0] = 10
    route.refetched_from[P0] = 10
    assert route.holes({P0: _records(14), P1: _records(0)}, stale=True) == [P0, P1]


@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=1, max_size=40))
def test_applying_only_what_the_rule_takes_never_leaves_a_hole(steps):
    """A partition of contiguous offsets; fetches start at arbitrary offsets (stale ones past
    where a seek put the position, fresh ones where the position is).  Whatever the rule takes,
    applied in order, is always a prefix of the partition."""
    route = BatchRoute("events")
    route.next_offset[P0] = 0
    applied: set[int] = set()
    for skip, stale in steps:
        first = route.next_offset[P0] + (skip if stale else 0)
        recs = _records(first)
        if route.holes({P0: recs}, stale):
            continue
        applied.update(r.offset for r in recs)
        route.next_offset[P0] = recs[-1].offset + 1
    assert applied == set(range(route.next_offset[P0]))


def test_a_seek_leaves_out_the_partitions_whose_offset_a_rebalance_reset():
    from streams.batching import known_offsets

    a, b, c = TP("t", 0), TP("t", 1), TP("t", 2)
    assert known_offsets({a: 0, b: None, c: 17}) == {a: 0, c: 17}  # offset 0 is a real offset
    assert known_offsets({b: None}) == {}
