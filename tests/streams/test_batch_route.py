"""The batched route's rule for keeping each partition applied as a prefix (streams/batching.py).

The race it guards against needs a real broker to happen (tests/integration/test_rebalance.py);
the rule itself — which fetched records may be applied — is plain bookkeeping, checked here."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

from hypothesis import given, strategies as st
from faust.types import TP

from strata.streams.batching import BatchRoute, LoopTurn, let_others_run

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
    from strata.streams.batching import known_offsets

    a, b, c = TP("t", 0), TP("t", 1), TP("t", 2)
    assert known_offsets({a: 0, b: None, c: 17}) == {a: 0, c: 17}  # offset 0 is a real offset
    assert known_offsets({b: None}) == {}


def test_the_next_fetch_waits_until_the_handler_has_read_its_batch():
    async def scenario():
        route = BatchRoute("events")
        route.records_read()  # before any batch: nothing to complete, no error
        read = route.reading()
        assert not read.done()
        route.records_read()
        assert read.done()
        route.records_read()  # once more (the batch's end): still done, no error
        again = route.reading()
        assert again is not read and not again.done()

    asyncio.run(scenario())


def test_letting_others_run_lets_in_what_fell_due_while_the_handler_worked():
    """A timer that falls due (as an HTTP request's socket becomes readable) while the handler works
    runs before the handler's next stretch of work, not after it."""
    async def scenario(yield_once: bool) -> list[str]:
        order: list[str] = []
        loop = asyncio.get_running_loop()

        async def handler():
            loop.call_later(0, order.append, "due meanwhile")
            if yield_once:
                await asyncio.sleep(0)
            else:
                await let_others_run()
            order.append("next stretch")

        await handler()
        await asyncio.sleep(0)
        return order

    assert asyncio.run(scenario(yield_once=False)) == ["due meanwhile", "next stretch"]
    assert asyncio.run(scenario(yield_once=True)) == ["next stretch", "due meanwhile"]  # why one is not enough


def test_a_turn_on_the_loop_is_over_after_its_length_and_begins_again_when_passed_on():
    async def scenario():
        turn = LoopTurn(3600.0)
        assert not turn.over()  # a short batch never passes on
        turn.length = 0.0
        assert turn.over()
        began = turn.began
        await turn.pass_on()
        assert turn.began > began

    asyncio.run(scenario())

