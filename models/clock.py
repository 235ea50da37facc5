"""The shop's "now" in event time, which no single event can move (docs/design.md §3).

Ranking a user needs a time to decay their profile to: the shop's present, so that a user who
went quiet while the shop moved on counts as stale.  The latest event time seen would do, but
one event with a far-ahead timestamp (a client clock set wrong, a test record in a historical
replay) would then age every other user at once.  `ShopClock` answers the `depth`-th latest
time seen instead: `depth` bad timestamps are needed to move it, and on a live stream it trails
the latest event by the time the last `depth` events took to arrive (milliseconds).

>>> clock = ShopClock(depth=3)
>>> for ts in (100.0, 101.0, 102.0, 103.0):
...     clock.observe(ts)
>>> clock.now
101.0
>>> clock.observe(9e9)  # one event from far ahead
>>> clock.now
102.0
"""
from __future__ import annotations

import heapq

DEPTH = 64
AHEAD_S = 3600.0


class ShopClock:
    """The `depth`-th latest event time observed (the earliest seen, until `depth` were)."""

    def __init__(self, depth: int = DEPTH) -> None:
        if depth < 1:
            raise ValueError(f"depth must be ≥ 1, got {depth}")
        self.depth = depth
        self._latest: list[float] = []  # a min-heap of the `depth` latest times

    def observe(self, ts: float) -> None:
        latest = self._latest
        if len(latest) < self.depth:
            heapq.heappush(latest, ts)
        elif ts > latest[0]:
            heapq.heapreplace(latest, ts)

    @property
    def now(self) -> float | None:
        """None before any time was observed."""
        return self._latest[0] if self._latest else None

    def bound(self, ts: float, ahead_s: float = AHEAD_S) -> float:
        """`ts`, or at most `ahead_s` after the clock once `depth` times were observed: what a
        shop-wide state (popularity, co-visitation) should learn an event at, so that one
        far-ahead timestamp cannot make its item outweigh every other (their weights grow as
        2^(t/H) in t)."""
        latest = self._latest
        if len(latest) < self.depth:
            return ts
        return min(ts, latest[0] + ahead_s)


__all__ = ["AHEAD_S", "DEPTH", "ShopClock"]
