"""Co-visitation: items that shoppers touch close together, kept by the stream (docs/design.md §3).

Each event on item j pairs j with the shopper's last `window` distinct items
(a revisit pairs too: coming back to j next to i is evidence as well).  Every
worker applies every pair of the whole shop, so the window is short (`PAIRED`):
what two dict updates a pair, for every event of the shop, on every worker,
allows.  A pair adds 2^((t − t₀)/H) to both C(i, j) and C(j, i), with t the
event time and t₀ a reference time, so that every weight decays with half-life
H without being touched: comparing or summing weights compares them as of any
common time.
n_i sums item i's pair weights.  The similarity is cosine-normalised,

    sim(i, j) = C(i, j) / √(n_i · n_j),

and a shopper's co-visitation score of a candidate j is Σ_i a_i · sim(i, j)
over their recent items i, with a_i a weight by recency.

Each row keeps at most `neighbours` items (the heaviest; pruned to that size
when it reaches twice it), so memory is bounded by items × neighbours: about
5 KB an item at the defaults (rows of 50-100 entries, 74 on average, in dicts),
i.e. about 5 GB for 1M items with full rows.

>>> cv = CoVisits(window=20, neighbours=10)
>>> cv.learn("b", ["a"], 0.0)
>>> cv.learn("c", ["b", "a"], 0.0)
>>> sorted(cv.row("a"))
['b', 'c']
>>> round(cv.similarity("a", "b"), 3)  # C(a,b) = 1, n_a = 2, n_b = 2
0.5
>>> [(j, round(s, 3)) for j, s in cv.similar("c", 5)]  # n_c = 2
[('a', 0.5), ('b', 0.5)]
"""
from __future__ import annotations

import heapq
import math
from operator import itemgetter
from typing import Mapping, Sequence

DAY = 86_400.0
#: the recent distinct items an event pairs with (each pair: two dict updates on every worker)
PAIRED = 8
_weight = itemgetter(1)
#: exponents of the decay units above this are folded back into the reference time
_REBASE_AT = 512.0


class CoVisits:
    """Bounded, decayed, cosine-normalised item-to-item co-visitation counts."""

    def __init__(self, window: int = PAIRED, neighbours: int = 50, half_life_s: float = 14 * DAY) -> None:
        if window < 1 or neighbours < 1:
            raise ValueError(f"window and neighbours must be ≥ 1, got {window}, {neighbours}")
        if not (math.isfinite(half_life_s) and half_life_s > 0):
            raise ValueError(f"half_life_s must be a positive number of seconds, got {half_life_s!r}")
        self.window = int(window)
        self.neighbours = int(neighbours)
        self.half_life_s = float(half_life_s)
        self._rows: dict[str, dict[str, float]] = {}
        self._n: dict[str, float] = {}
        self._ids: dict[str, str] = {}
        self._t0: float | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def _unit(self, ts: float) -> float:
        """2^((ts − t₀)/H), rebasing t₀ (and every stored weight) when the exponent grows large."""
        if self._t0 is None:
            self._t0 = ts
        x = (ts - self._t0) / self.half_life_s
        if x > _REBASE_AT:
            shift = math.floor(x)
            scale = 2.0 ** -shift
            for row in self._rows.values():
                for j in row:
                    row[j] *= scale
            for i in self._n:
                self._n[i] *= scale
            self._t0 += shift * self.half_life_s
            x -= shift
        return 2.0 ** max(x, -1000.0)

    def partners(self, item: str, recent: Sequence[str]) -> list[str]:
        """The items an event on `item` pairs with: the shopper's last `window` distinct items
        (`recent`, most recent first) other than `item`."""
        return [i for i in recent[: self.window + 1] if i != item][: self.window]

    def learn(self, item: str, recent: Sequence[str], ts: float) -> None:
        """Pair `item` with the shopper's recent distinct items (most recent first)."""
        self.learn_pairs(item, self.partners(item, recent), ts)

    def learn_pairs(self, item: str, others: Sequence[str], ts: float, weight: float = 1.0) -> None:
        """Add `weight` pairs (in decay units as of `ts`) to C(item, i) and C(i, item) for each i of `others`."""
        u = self._unit(ts) * weight
        rows, n, cap = self._rows, self._n, 2 * self.neighbours
        intern = self._ids.setdefault  # one string per id, however many rows hold it
        item = intern(item, item)
        others = [intern(i, i) for i in others]
        row_j = rows.get(item)
        if row_j is None:
            row_j = rows[item] = {}
        for i in others:
            row_j[i] = row_j.get(i, 0.0) + u
            row_i = rows.get(i)
            if row_i is None:
                row_i = rows[i] = {}
            row_i[item] = row_i.get(item, 0.0) + u
            n[i] = n.get(i, 0.0) + u
            if len(row_i) >= cap:
                rows[i] = dict(sorted(row_i.items(), key=_weight, reverse=True)[: self.neighbours])
        if others:
            n[item] = n.get(item, 0.0) + u * len(others)
            if len(row_j) >= cap:
                rows[item] = dict(sorted(row_j.items(), key=_weight, reverse=True)[: self.neighbours])

    def row(self, item: str) -> Mapping[str, float]:
        """The kept neighbours of `item` and their raw weights (empty for an unknown item)."""
        return self._rows.get(item, {})

    def similar(self, item: str, k: int) -> list[tuple[str, float]]:
        """The k items most similar to `item` by sim(item, j), best first (ties by id)."""
        n = self._n
        row = self._rows.get(item)
        if not row:
            return []
        inv = 1.0 / math.sqrt(n[item])
        scored = ((j, c * inv / math.sqrt(n[j])) for j, c in row.items())
        return heapq.nsmallest(k, scored, key=lambda js: (-js[1], js[0]))

    def similarity(self, i: str, j: str) -> float:
        c = self._rows.get(i, {}).get(j, 0.0)
        return c / math.sqrt(self._n[i]) / math.sqrt(self._n[j]) if c > 0 else 0.0

    def scores(self, recent: Sequence[str], weights: Sequence[Sequence[float]]) -> list[dict[str, float]]:
        """For each weighting a of `weights` (a[pos] for recent[pos], most recent first), the
        scores Σ_i a_i · sim(i, j) of every neighbour j of the recent items — one pass over the rows."""
        outs: list[dict[str, float]] = [{} for _ in weights]
        n = self._n
        for pos, i in enumerate(recent):
            row = self._rows.get(i)
            if not row:
                continue
            base = {j: c / math.sqrt(n[j]) for j, c in row.items()}
            inv_i = 1.0 / math.sqrt(n[i])
            for out, a in zip(outs, weights):
                w = a[pos] * inv_i if pos < len(a) else 0.0
                if w == 0.0:
                    continue
                get = out.get
                for j, v in base.items():
                    out[j] = get(j, 0.0) + w * v
        return outs


__all__ = ["CoVisits"]
