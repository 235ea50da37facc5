"""A seeded synthetic behaviour log with a category tree, popularity skew and interest drift.

The world:

- `roots` root categories, each with `categories_per_root` leaf categories
  (ids ``r{r}`` and ``r{r}.c{j}``); items ``i{n}`` spread over the leaves
  (every leaf has at least one item).  Within a leaf, item popularity follows
  a Zipf law with exponent `popularity_skew` (random rank order); leaves
  themselves are Zipf-popular with `category_skew`.
- Users ``u{n}`` with a heavy-tailed activity (`user_skew`) and 1-3 preferred
  leaves (the extra ones often siblings of the first, under the same root).
  At each event a user drifts with probability `drift_prob`: one preferred
  leaf is replaced by a new one, and the event is in it.
- An event goes back to the user's previous item with probability `repeat`,
  explores a leaf outside the preferences with probability `explore`, and
  otherwise picks a preferred leaf, then an item by popularity.
- Behaviour types follow a funnel (views ≫ clicks > fav/cart > purchase);
  going back to an item raises the chance of cart and purchase.
- Timestamps rise over [start_ts, start_ts + duration_s): event n is at
  ``start_ts + duration_s * (n + jitter) / events``, so they never go down.

Everything is drawn from numpy Generators seeded from `seed` (one stream for
the world, one for the events), in fixed chunks: the same config gives the
same catalog and events, a prefix of the stream does not depend on how much
of it is read.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Iterator

import numpy as np

from strata.models.events import EVENT_TYPES

TYPES: tuple[str, ...] = EVENT_TYPES  # the funnels below are in this order
# P(type) for an event on a new item, and on an item the user came back to
FUNNEL_NEW = (0.88, 0.08, 0.02, 0.015, 0.005)
FUNNEL_REPEAT = (0.55, 0.15, 0.08, 0.13, 0.09)
CHUNK = 1 << 16


@dataclass(frozen=True)
class SyntheticConfig:
    users: int = 10_000
    items: int = 50_000
    roots: int = 8
    categories_per_root: int = 12
    events: int = 1_000_000
    start_ts: float = 1_700_000_000.0
    duration_s: float = 30 * 86_400.0
    popularity_skew: float = 1.1  # Zipf exponent of item popularity within a leaf
    drift_prob: float = 0.005  # per event: the user's interests move to a new leaf
    seed: int = 0
    category_skew: float = 0.8  # Zipf exponent of leaf popularity
    user_skew: float = 0.5  # Zipf exponent of user activity
    repeat: float = 0.3  # share of events back on the user's previous item
    explore: float = 0.1  # share of events in a leaf outside the user's preferences

    def __post_init__(self) -> None:
        for name in ("users", "items", "roots", "categories_per_root"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.events, bool) or not isinstance(self.events, int) or self.events < 0:
            raise ValueError(f"events must be a non-negative integer, got {self.events!r}")
        if self.items < self.leaves:
            raise ValueError(f"items ({self.items}) must be at least the number of leaf categories ({self.leaves})")
        for name in ("drift_prob", "repeat", "explore"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        for name in ("popularity_skew", "category_skew", "user_skew"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not self.duration_s > 0 or not np.isfinite(self.duration_s):
            raise ValueError(f"duration_s must be positive, got {self.duration_s!r}")
        if not 0 <= self.start_ts < 1e11:
            raise ValueError(f"start_ts must be epoch seconds, got {self.start_ts!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")

    @property
    def leaves(self) -> int:
        return self.roots * self.categories_per_root

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


def root_id(r: int) -> str:
    return f"r{r}"


def category_id(leaf: int, categories_per_root: int) -> str:
    return f"r{leaf // categories_per_root}.c{leaf % categories_per_root}"


def item_id(n: int) -> str:
    return f"i{n}"


def user_id(n: int) -> str:
    return f"u{n}"


def _zipf_cdf(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """CDF over n entities whose Zipf ranks are a random permutation."""
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    weights = weights[rng.permutation(n)]
    cdf = np.cumsum(weights)
    return cdf / cdf[-1]


def _draw(cdf: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """`size` iid draws from a CDF.

    Searching sorted uniforms is several times faster on a large CDF (the
    binary search reuses its last bound); a random permutation of a sorted iid
    sample is again an iid sample.
    """
    u = np.sort(rng.random(size))
    idx = np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)
    return idx[rng.permutation(size)]


@dataclass(frozen=True)
class World:
    """The catalog side of a config: which leaf each item is in, and the popularity laws."""

    config: SyntheticConfig
    item_leaf: np.ndarray  # item -> leaf
    leaf_cdf: np.ndarray  # popularity of leaves
    user_cdf: np.ndarray  # activity of users
    seg_keys: np.ndarray  # leaf + within-leaf CDF, items sorted by (leaf, rank)
    seg_items: np.ndarray  # the item at each position of seg_keys
    seg_start: np.ndarray  # first position of each leaf in seg_keys
    seg_end: np.ndarray  # one past the last

    def items_in(self, leaves: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One item per given leaf, Zipf-popular within the leaf."""
        query = leaves + rng.random(len(leaves))
        order = np.argsort(query)  # sorted keys make the search much faster, see _draw
        pos = np.empty(len(leaves), dtype=np.int64)
        pos[order] = np.searchsorted(self.seg_keys, query[order], side="right")
        pos = np.clip(pos, self.seg_start[leaves], self.seg_end[leaves] - 1)
        return self.seg_items[pos]

    def catalog_records(self) -> list[dict]:
        cfg = self.config
        records: list[dict] = [{"category_id": root_id(r), "parent_id": None} for r in range(cfg.roots)]
        records += [{"category_id": category_id(c, cfg.categories_per_root),
                     "parent_id": root_id(c // cfg.categories_per_root)} for c in range(cfg.leaves)]
        names = [category_id(c, cfg.categories_per_root) for c in range(cfg.leaves)]
        records += [{"item_id": f"i{n}", "category_id": names[c]} for n, c in enumerate(self.item_leaf.tolist())]
        return records


def _rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    world, events = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(world), np.random.default_rng(events)


def build_world(config: SyntheticConfig) -> World:
    rng, _ = _rngs(config.seed)
    n_leaf, n_item = config.leaves, config.items
    item_leaf = np.concatenate([np.arange(n_leaf), rng.integers(0, n_leaf, n_item - n_leaf)])
    item_leaf = item_leaf[rng.permutation(n_item)].astype(np.int64)
    # items sorted by leaf, in a random rank order inside each leaf
    order = np.lexsort((rng.random(n_item), item_leaf))
    leaf_sorted = item_leaf[order]
    seg_start = np.searchsorted(leaf_sorted, np.arange(n_leaf), side="left")
    seg_end = np.searchsorted(leaf_sorted, np.arange(n_leaf), side="right")
    rank = np.arange(n_item) - seg_start[leaf_sorted]
    weights = (rank + 1.0) ** -config.popularity_skew
    cum = np.cumsum(weights)
    before = np.concatenate([[0.0], cum])[seg_start]  # cumulative weight before each leaf
    total = cum[seg_end - 1] - before
    within = (cum - before[leaf_sorted]) / total[leaf_sorted]
    within[seg_end - 1] = 1.0
    return World(
        config=config,
        item_leaf=item_leaf,
        leaf_cdf=_zipf_cdf(n_leaf, config.category_skew, rng),
        user_cdf=_zipf_cdf(config.users, config.user_skew, rng),
        seg_keys=leaf_sorted + within,
        seg_items=order.astype(np.int64),
        seg_start=seg_start,
        seg_end=seg_end,
    )


@dataclass(frozen=True)
class Chunk:
    """A run of consecutive events as numpy columns (indices; see `user_id`, `item_id`, `TYPES`)."""

    start: int  # number of the first event
    user: np.ndarray
    item: np.ndarray
    leaf: np.ndarray
    type: np.ndarray
    ts: np.ndarray

    def __len__(self) -> int:
        return len(self.user)


def iter_chunks(config: SyntheticConfig, world: World | None = None) -> Iterator[Chunk]:
    """The event stream as numpy chunks (for benchmarks that do not need dicts)."""
    world = world if world is not None else build_world(config)
    _, rng = _rngs(config.seed)
    cfg = config
    cpr = cfg.categories_per_root

    # user state: 1-3 preferred leaves (slots), extra ones often siblings of the first
    n_pref = rng.integers(1, 4, cfg.users)
    first = _draw(world.leaf_cdf, rng, cfg.users)
    prefs = np.empty((cfg.users, 3), dtype=np.int64)
    prefs[:, 0] = first
    for s in (1, 2):
        sibling = (first // cpr) * cpr + rng.integers(0, cpr, cfg.users)
        other = _draw(world.leaf_cdf, rng, cfg.users)
        prefs[:, s] = np.where(rng.random(cfg.users) < 0.5, sibling, other)
    prefs_flat = prefs.reshape(-1)
    last_item = np.full(cfg.users, -1, dtype=np.int64)
    cdf_new = np.cumsum(FUNNEL_NEW) / sum(FUNNEL_NEW)
    cdf_rep = np.cumsum(FUNNEL_REPEAT) / sum(FUNNEL_REPEAT)

    for base in range(0, cfg.events, CHUNK):
        n = min(CHUNK, cfg.events - base)
        pos = np.arange(n)
        user = _draw(world.user_cdf, rng, n)
        slot = (rng.random(n) * n_pref[user]).astype(np.int64)
        drift = rng.random(n) < cfg.drift_prob
        explore = (rng.random(n) < cfg.explore) & ~drift
        repeat = (rng.random(n) < cfg.repeat) & ~drift & ~explore

        # preferred leaf of each event, as of that event (drifts take effect in order)
        group = user * 3 + slot
        leaf = prefs_flat[group]
        d_pos = np.flatnonzero(drift)
        if len(d_pos):
            new_leaf = _draw(world.leaf_cdf, rng, len(d_pos))
            keys = group[d_pos] * n + d_pos
            ordered = np.argsort(keys, kind="stable")
            keys, new_leaf = keys[ordered], new_leaf[ordered]
            j = np.searchsorted(keys, group * n + pos, side="right") - 1
            hit = j >= 0
            hit[hit] = keys[j[hit]] // n == group[hit]
            leaf[hit] = new_leaf[j[hit]]
            key_group = keys // n
            last = np.r_[key_group[1:] != key_group[:-1], True]
            prefs_flat[key_group[last]] = new_leaf[last]
        n_explore = int(explore.sum())
        if n_explore:
            leaf[explore] = _draw(world.leaf_cdf, rng, n_explore)
        fresh_item = world.items_in(leaf, rng)

        # going back: the item of the user's previous event (this chunk or before)
        by_user = np.argsort(user, kind="stable")
        su = user[by_user]
        head = np.r_[True, su[1:] != su[:-1]]
        rep_s = repeat[by_user]
        prior = last_item[su]
        base_item = np.where(head & rep_s & (prior >= 0), prior, fresh_item[by_user])
        anchor = ~rep_s | head
        src = np.maximum.accumulate(np.where(anchor, np.arange(n), 0))
        item_s = base_item[src]
        went_back_s = rep_s & ~(head & (prior < 0))
        tail = np.r_[su[1:] != su[:-1], True]
        last_item[su[tail]] = item_s[tail]
        item = np.empty(n, dtype=np.int64)
        item[by_user] = item_s
        went_back = np.empty(n, dtype=bool)
        went_back[by_user] = went_back_s

        r = rng.random(n)
        etype = np.where(went_back, np.searchsorted(cdf_rep, r, side="right"),
                         np.searchsorted(cdf_new, r, side="right"))
        etype = np.minimum(etype, len(TYPES) - 1).astype(np.int8)
        ts = cfg.start_ts + cfg.duration_s * ((base + pos) + rng.random(n)) / cfg.events
        yield Chunk(base, user, item, world.item_leaf[item], etype, ts)


def _event_dicts(config: SyntheticConfig, world: World) -> Iterator[dict]:
    prefix = f"syn:{config.seed}:"
    names = [category_id(c, config.categories_per_root) for c in range(config.leaves)]
    for chunk in iter_chunks(config, world):
        for n, u, i, c, t, ts in zip(range(chunk.start, chunk.start + len(chunk)), chunk.user.tolist(),
                                     chunk.item.tolist(), chunk.leaf.tolist(), chunk.type.tolist(),
                                     np.round(chunk.ts, 3).tolist()):
            yield {"event_id": f"{prefix}{n}", "user_id": f"u{u}", "item_id": f"i{i}",
                   "type": TYPES[t], "ts": ts, "category_id": names[c]}


def generate(config: SyntheticConfig | None = None) -> tuple[list[dict], Iterator[dict]]:
    """(catalog records, lazy iterator of event dicts) for a config (default: `SyntheticConfig()`).

    Catalog: the roots (`parent_id` None), the leaves, then every item.
    Events are in the event JSON shape, with `category_id` and ids
    ``syn:{seed}:{n}``.
    """
    config = config if config is not None else SyntheticConfig()
    world = build_world(config)
    return world.catalog_records(), _event_dicts(config, world)
