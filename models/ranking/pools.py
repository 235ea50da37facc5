"""The most popular items of a scope (the shop, a category or a root), located once per popularity
state and shared by every request that draws on that scope.

The shop's pool is every request's candidates and a category's pool those of its users, so these
are most of a request's candidates: located once, no request looks them up in the big item dicts.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strata.models.popularity import Popularity
from strata.models.ranking.items import ItemIndex

_POOLS_KEPT = 4096  # located pools per ranker (≈ 10 KB each at 50 items)


@dataclass(frozen=True)
class Pool:
    """The most popular items of one scope in one popularity state, located in one `ItemIndex`,
    with their global ranks (an item's rank within its category may differ)."""

    ids: list[str]
    at: dict[str, int]  # item → its index in ids
    ranks: np.ndarray  # global ranks
    pos: np.ndarray
    ci: np.ndarray
    ri: np.ndarray
    outside: list[int]  # indices of the items the factor model does not know
    Y: np.ndarray | None  # their factor rows, contiguous (zeros outside the model), if the bound is tried


class Pools:
    """The located pools of the popularity state they were located in."""

    def __init__(self, items: ItemIndex) -> None:
        self._items = items
        self._pools: dict[tuple[str | None, int], Pool] = {}
        self._beyond: dict[int, tuple[Pool, Pool]] = {}  # id(scope pool) → (it, `beyond` of it)
        self._of: Popularity | None = None
        self._changes = -1

    def get(self, popularity: Popularity, size: int, scope: str | None = None, with_rows: bool = False) -> Pool:
        """The `size` most popular items of a scope (None: the whole shop), with their factor
        rows when `with_rows`; kept until the popularity changes."""
        if self._of is not popularity or self._changes != popularity.changes:
            self._pools.clear()
            self._beyond.clear()
            self._of, self._changes = popularity, popularity.changes
        pool = self._pools.get((scope, size))
        if pool is None:
            if len(self._pools) >= _POOLS_KEPT:
                self._pools.clear()
                self._beyond.clear()
            ids = popularity.top_ranked(size, scope)[0]
            pos, ci, ri, outside = self._items.locate(ids)
            pool = self._pools[(scope, size)] = Pool(
                ids, {j: t for t, j in enumerate(ids)}, np.asarray(popularity.ranks(ids), np.float64), pos, ci, ri, outside,
                self._items.rows_at(pos) if with_rows else None)
        return pool

    def beyond(self, scope: Pool, shop: Pool) -> Pool:
        """The items of a scope's pool that are not in the shop's pool, as a pool of their own;
        kept with the pools (the shop's pool is replaced only when they are all dropped)."""
        kept = self._beyond.get(id(scope))
        if kept is not None and kept[0] is scope:
            return kept[1]
        in_shop = shop.at
        taken = [t for t, j in enumerate(scope.ids) if j not in in_shop]
        unknown = set(scope.outside)
        part = Pool([scope.ids[t] for t in taken], {}, scope.ranks[taken], scope.pos[taken], scope.ci[taken],
                    scope.ri[taken], [q for q, t in enumerate(taken) if t in unknown],
                    scope.Y[taken] if scope.Y is not None else None)
        self._beyond[id(scope)] = (scope, part)
        return part
