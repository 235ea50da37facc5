"""Recent popularity: decayed, behaviour-weighted event counts in event time.

For item j in scope S (the whole catalogue, or one category):

    pop_S(j, T) = Σ over events e on j in S of  β(type_e) · 2^(−(T − ts_e) / H)

kept exactly like a profile layer (docs/design.md §3): one pair (w, t) per key, an
event at t′ ≥ t sets w ← w·2^(−(t′−t)/H) + β, t ← t′, an older one adds
β·2^(−(t−t′)/H).  The pair stands for the same function of T whatever the
arrival order, so popularity is a function of the *set* of events.

All items decay at the same rate, so their order never depends on T: it is the
order of the time-free rank

    rank(j) = log2(w_j) + t_j / H        (pop(j, T) = 2^(rank(j) − T/H))

An event only ever raises its own item's rank (β ≥ 0), and leaves every other
rank untouched.  That makes the head of each scope cheap to keep *exactly*: a
sorted pool of the `pool_size` best items per scope, updated in O(log M + M)
list work per event (a bisect and one list insert; no resort).  The full
sorted view of a scope (needed only for `top(k)` with k > pool_size) is
rebuilt lazily, when asked for after a change.

`pop(j, T) / pop(top item, T) = 2^(rank(j) − rank(top))` is the *normalised*
popularity the ranker uses: it too is independent of T.
"""
from __future__ import annotations

import itertools
import math
from bisect import bisect_left, insort
from operator import itemgetter
from typing import Iterable, Iterator, Mapping, Sequence

DAY = 86_400.0
DEFAULT_POOL = 1000

_GLOBAL = None  # the scope key of the whole catalogue
_key = itemgetter(1)  # of a (−rank, key) entry


def rank_of(w: float, t: float, half_life: float) -> float:
    """log2(w) + t/H: orders keys by decayed weight at any common time."""
    return (math.log2(w) if w > 0 else -math.inf) + t / half_life


class _Pool:
    """The exact top-`cap` keys of one scope, as a list sorted by (−rank, key)."""

    __slots__ = ("cap", "keys", "ranks")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.keys: list[tuple[float, str]] = []
        self.ranks: dict[str, float] = {}

    def raise_rank(self, key: str, new: float) -> None:
        """Key's rank went up (or stayed); every other rank is unchanged."""
        keys, ranks = self.keys, self.ranks
        old = ranks.get(key)
        entry = (-new, key)
        if old is not None:
            i = bisect_left(keys, (-old, key))
            j = bisect_left(keys, entry, 0, i)  # it can only move towards the front
            if j == i:
                keys[i] = entry
            else:
                del keys[i]
                keys.insert(j, entry)
            ranks[key] = new
        elif len(keys) < self.cap:
            insort(keys, entry)
            ranks[key] = new
        elif -new <= keys[-1][0] and entry < keys[-1]:
            _, dropped = keys.pop()
            del ranks[dropped]
            insort(keys, entry)
            ranks[key] = new

    def rebuild(self, ws: Mapping[str, float], ts: Mapping[str, float], half_life: float) -> None:
        ranked = sorted((-rank_of(w, ts[k], half_life), k) for k, w in ws.items())
        self.keys = ranked[: self.cap]
        self.ranks = {k: -r for r, k in self.keys}


class Popularity:
    """Decayed weighted counts, globally and per category, with exact top pools.

    `learn(item, category, beta, ts)` per event (β from `ProfileParams.beta`);
    `score(item, as_of)`, `top(k, as_of, category=None)` to read.  `rank`,
    `top_ranked` and `max_rank` are the clock-free forms the ranker uses.
    `to_dict`/`from_dict` give plain data; `merge` adds another instance's
    counts (e.g. from workers owning other partitions).
    """

    def __init__(self, half_life_s: float = DAY, pool_size: int = DEFAULT_POOL) -> None:
        if not (math.isfinite(half_life_s) and half_life_s > 0):
            raise ValueError(f"half_life_s must be a positive number of seconds, got {half_life_s!r}")
        if int(pool_size) < 1:
            raise ValueError(f"pool_size must be ≥ 1, got {pool_size!r}")
        self.half_life_s = float(half_life_s)
        self.pool_size = int(pool_size)
        # scope → item → weight as of _t[scope][item]; two dicts of floats rather than one of
        # (w, t) pairs, which the garbage collector would walk on every full collection
        # (see models.profile.Profile).
        self._w: dict[str | None, dict[str, float]] = {_GLOBAL: {}}
        self._t: dict[str | None, dict[str, float]] = {_GLOBAL: {}}
        self._pools: dict[str | None, _Pool] = {_GLOBAL: _Pool(self.pool_size)}
        self._sorted: dict[str | None, list[tuple[float, str]]] = {}  # lazily rebuilt full views
        self._rank: dict[str, float] = {}  # item → its global rank, read for every ranked candidate
        self.events = 0
        self.last_ts: float | None = None
        self.changes = 0  # bumped by every change: readers may cache what they derive from a state

    # -- learning ----------------------------------------------------------
    def learn(self, item_id: str, category_id: str | None, beta: float, ts: float) -> None:
        """Count one event of weight `beta` at event time `ts`."""
        if not (beta >= 0 and math.isfinite(beta)):
            raise ValueError(f"beta must be a finite number ≥ 0, got {beta!r}")
        self._add(_GLOBAL, item_id, beta, ts)
        if category_id is not None:
            self._add(category_id, item_id, beta, ts)
        self.events += 1
        self.changes += 1
        if self.last_ts is None or ts > self.last_ts:
            self.last_ts = ts

    def _add(self, scope_key: str | None, item_id: str, beta: float, ts: float) -> None:
        h = self.half_life_s
        ws = self._w.get(scope_key)
        if ws is None:
            ws = self._w[scope_key] = {}
            self._t[scope_key] = {}
            self._pools[scope_key] = _Pool(self.pool_size)
        times = self._t[scope_key]
        t = times.get(item_id)
        if t is None:
            w, t = beta, ts
        elif ts >= t:
            w, t = ws[item_id] * 2.0 ** (-(ts - t) / h) + beta, ts
        else:
            w = ws[item_id] + beta * 2.0 ** (-(t - ts) / h)
        ws[item_id] = w
        times[item_id] = t
        rank = (math.log2(w) if w > 0 else -math.inf) + t / h
        self._pools[scope_key].raise_rank(item_id, rank)
        if scope_key is _GLOBAL:
            self._rank[item_id] = rank
        if self._sorted:
            self._sorted.pop(scope_key, None)

    def merge(self, other: "Popularity") -> None:
        """Add `other`'s counts to this one (same half-life): the union of both event sets."""
        if other.half_life_s != self.half_life_s:
            raise ValueError("cannot merge popularity kept with different half-lives")
        h = self.half_life_s
        for scope_key, their_w in other._w.items():
            their_t = other._t[scope_key]
            ws = self._w.setdefault(scope_key, {})
            times = self._t.setdefault(scope_key, {})
            for key, w2 in their_w.items():
                t2 = their_t[key]
                t = times.get(key)
                if t is None:
                    ws[key], times[key] = w2, t2
                elif t2 >= t:
                    ws[key], times[key] = ws[key] * 2.0 ** (-(t2 - t) / h) + w2, t2
                else:
                    ws[key] += w2 * 2.0 ** (-(t - t2) / h)
        self.events += other.events
        if other.last_ts is not None and (self.last_ts is None or other.last_ts > self.last_ts):
            self.last_ts = other.last_ts
        self._rebuild()

    def _rebuild(self) -> None:
        self.changes += 1
        self._pools = {}
        for scope_key, ws in self._w.items():
            pool = self._pools[scope_key] = _Pool(self.pool_size)
            pool.rebuild(ws, self._t[scope_key], self.half_life_s)
        ts, h = self._t[_GLOBAL], self.half_life_s
        self._rank = {k: rank_of(w, ts[k], h) for k, w in self._w[_GLOBAL].items()}
        self._sorted = {}

    # -- reading -----------------------------------------------------------
    def __len__(self) -> int:
        return len(self._w[_GLOBAL])

    def categories(self) -> list[str]:
        return [k for k in self._w if k is not _GLOBAL]  # type: ignore[misc]

    def score(self, item_id: str, as_of: float, category: str | None = None) -> float:
        """pop(item, as_of), globally or within `category`; 0 for an unseen item."""
        t = self._t.get(category, {}).get(item_id)
        if t is None:
            return 0.0
        return self._w[category][item_id] * 2.0 ** (-(as_of - t) / self.half_life_s)

    def rank(self, item_id: str, category: str | None = None) -> float:
        """The clock-free rank log2(w) + t/H (−inf for an unseen item)."""
        t = self._t.get(category, {}).get(item_id)
        if t is None:
            return -math.inf
        return rank_of(self._w[category][item_id], t, self.half_life_s)

    def ranks(self, items: Iterable[str]) -> list[float]:
        """Global ranks of many items at once (−inf for unseen ones)."""
        return list(map(self._rank.get, items, itertools.repeat(-math.inf)))

    def ranks_within(self, items: Sequence[str], categories: Sequence[str | None]) -> list[float]:
        """rank(j, c) of each item j within its category c, at once (−inf for an unseen item or no
        category): read from the category's pool, which holds the ranks of its head, else computed."""
        pools, out = self._pools, []
        for j, c in zip(items, categories):
            pool = pools.get(c) if c is not None else None
            r = pool.ranks.get(j) if pool is not None else None
            out.append(r if r is not None else self.rank(j, c) if pool is not None else -math.inf)
        return out

    def max_rank(self, category: str | None = None) -> float:
        """The rank of the most popular item of the scope (−inf when empty)."""
        pool = self._pools.get(category)
        return -pool.keys[0][0] if pool is not None and pool.keys else -math.inf

    def max_ranks(self, categories: Iterable[str | None]) -> list[float]:
        """`max_rank` of each of `categories` at once."""
        return [-pool.keys[0][0] if pool is not None and pool.keys else -math.inf for pool in map(self._pools.get, categories)]

    def top_ranked(self, n: int, category: str | None = None) -> tuple[list[str], list[float]]:
        """The n most popular items of a scope and their ranks, best first (ties: smaller id)."""
        keys = self._head(n, category)
        return [k for _, k in keys], [-r for r, _ in keys]

    def top_items(self, n: int, category: str | None = None) -> list[str]:
        """`top_ranked`'s items alone."""
        return list(map(_key, self._head(n, category)))

    def _head(self, n: int, category: str | None) -> list[tuple[float, str]]:
        """The first n (−rank, key) of a scope: from its pool, else from its full sorted view."""
        if n <= 0:
            return []
        if n <= self.pool_size:
            pool = self._pools.get(category)
            return pool.keys[:n] if pool is not None else []
        return self._full(category)[:n]

    def in_top(self, item_id: str, n: int, category: str | None = None) -> bool:
        """Whether `item_id` is among the n most popular items of a scope (O(1) for n ≤ pool_size)."""
        if n <= 0:
            return False
        if n > self.pool_size:
            return item_id in self.top_rank_map(n, category)
        pool = self._pools.get(category)
        rank = pool.ranks.get(item_id) if pool is not None else None
        if rank is None:
            return False
        keys = pool.keys
        return len(keys) <= n or (-rank, item_id) <= keys[n - 1]

    def top_rank_map(self, n: int, category: str | None = None) -> dict[str, float]:
        """`top_ranked` as one dict item → rank (best first; one pass over the pool)."""
        if n <= 0:
            return {}
        if n <= self.pool_size:
            pool = self._pools.get(category)
            return {k: -r for r, k in pool.keys[:n]} if pool is not None else {}
        return {k: -r for r, k in self._full(category)[:n]}

    def iter_ranked(self, category: str | None = None) -> Iterator[tuple[str, float]]:
        """Every item of a scope with its rank, best first (the pool, then the lazily sorted rest)."""
        pool = self._pools.get(category)
        if pool is None:
            return
        for r, k in pool.keys:
            yield k, -r
        if len(pool.keys) < len(self._w[category]):
            for r, k in self._full(category)[len(pool.keys):]:
                yield k, -r

    def top(self, k: int, as_of: float, category: str | None = None) -> list[tuple[str, float]]:
        """The k most popular items (globally or within `category`) with pop(item, as_of)."""
        items, ranks = self.top_ranked(k, category)
        shift = as_of / self.half_life_s
        return [(i, 2.0 ** (r - shift)) for i, r in zip(items, ranks)]

    def _full(self, category: str | None) -> list[tuple[float, str]]:
        view = self._sorted.get(category)
        if view is None:
            h = self.half_life_s
            ws, ts = self._w.get(category, {}), self._t.get(category, {})
            view = self._sorted[category] = sorted((-rank_of(w, ts[k], h), k) for k, w in ws.items())
        return view

    # -- persistence -------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain data (JSON/msgpack friendly); `from_dict(to_dict())` gives the same popularity."""
        return {
            "version": 1,
            "half_life_s": self.half_life_s,
            "pool_size": self.pool_size,
            "events": self.events,
            "last_ts": self.last_ts,
            "items": self._pairs(_GLOBAL),
            "categories": {c: self._pairs(c) for c in self._w if c is not _GLOBAL},
        }

    def _pairs(self, scope_key: str | None) -> dict[str, list[float]]:
        ts = self._t[scope_key]
        return {k: [w, ts[k]] for k, w in self._w[scope_key].items()}

    @classmethod
    def from_dict(cls, data: Mapping) -> "Popularity":
        if data.get("version", 1) != 1:
            raise ValueError(f"unknown popularity encoding version {data.get('version')}")
        pop = cls(data["half_life_s"], data.get("pool_size", DEFAULT_POOL))
        for c, pairs in [(_GLOBAL, data["items"]), *data.get("categories", {}).items()]:
            pop._w[c] = {k: float(w) for k, (w, _) in pairs.items()}
            pop._t[c] = {k: float(t) for k, (_, t) in pairs.items()}
        pop.events = int(data.get("events", 0))
        pop.last_ts = data.get("last_ts")
        pop._rebuild()
        return pop


def popular_items(
    events: Iterable,
    k: int,
    as_of: float,
    *,
    beta: Mapping[str, float],
    catalog=None,
    category: str | None = None,
    half_life_s: float = DAY,
) -> list[tuple[str, float]]:
    """The top-k recent popular items of a sequence of events (the popularity baseline).

    `events` are `models.events.Event`s; `beta` maps types to weights (e.g.
    `ProfileParams().beta`); `catalog` (a `Catalog`) fills missing categories.
    """
    pop = Popularity(half_life_s, pool_size=max(1, k))
    for e in events:
        cat = e.category_id
        if cat is None and catalog is not None:
            cat = catalog.category_of(e.item_id)
        pop.learn(e.item_id, cat, beta[e.type], e.ts)
    return pop.top(k, as_of, category)
