"""Candidates and their terms for one user, scored with the shop's learned weights θ.

`TermRanker.candidates` gathers what a shopper may go to next: their own items,
the items co-visited with their recent ones, the most popular items of the
category in view and of their top categories, the shop's most popular items and
the best items by x_u·y_j; `features` gives each candidate the terms of
`models.terms`; `rank` orders them by θ·f.  The evaluator and a worker call the
same code with the same state: a user's recent distinct items, their profile,
the shop's popularity and co-visitation, and the item factors when a fit exists.
"""
from __future__ import annotations

import itertools
import math
import operator
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from strata.models.covisit import CoVisits
from strata.models.factors import FactorModel
from strata.models.popularity import Popularity
from strata.models.profile import Profile, ProfileParams
from strata.models.terms import LONG_WINDOW, SESSION_S, SHORT_WINDOW, T, TERMS, normalised, recency_onehot

#: the weights a_i of the recent items in the two co-visitation terms (most recent first)
SHORT_WEIGHTS = tuple(2.0 ** -n for n in range(SHORT_WINDOW))
LONG_WEIGHTS = (1.0,) * LONG_WINDOW


@dataclass(frozen=True)
class PoolSizes:
    """How many candidates each source adds (one default for every shop)."""

    own: int = 50
    covisited: int = 50
    category: int = 20
    categories: int = 2
    popular: int = 50
    factor: int = 30
    factor_pool: int = 1000  # the popular items the factor source picks from


@dataclass
class UserState:
    """What the ranker reads of one user: recent distinct items (most recent first: recent[0]
    is the item in view), the profile's layers, the user vector x_u (None without factors), and
    the item layer's weights as of the ranking's time when already computed (the fold-in reads
    them too: `models.learned.user_state`)."""

    recent: Sequence[str]
    profile: Profile | None
    x: np.ndarray | None = None
    item_weights: Mapping[str, float] | None = None


class TermRanker:
    """Candidates, terms and θ-scores for a user at time `now`."""

    def __init__(self, category_of: Callable[[str], str | None], root_of: Callable[[str], str],
                 covisits: CoVisits, popularity: Popularity, profile_params: ProfileParams,
                 pools: PoolSizes | None = None) -> None:
        self.category_of = category_of
        self.root_of = root_of
        self.covisits = covisits
        self.popularity = popularity
        self.pp = profile_params
        self.pools = pools or PoolSizes()
        self._factor_pool: tuple = (None, None, -1, None)  # model, popularity, its changes, the FactorPool
        self._pool_rows: tuple = (None, {})  # model, the rows of Y of the items its pools held

    # -- candidates ---------------------------------------------------------------------
    def candidates(self, user: UserState, now: float, model: FactorModel | None) -> tuple[list[str], dict]:
        """Candidate ids (the item in view left out) and the per-source scores the terms need.
        The factor source is the best items by x_u·y_j among the shop's `factor_pool` most popular
        ones: a bounded cost a request, whatever the size of the catalogue."""
        pools = self.pools
        recent = list(user.recent)
        in_view = recent[0] if recent else None
        own = user.item_weights
        if own is None:
            own = user.profile.weights("item", self.pp, now) if user.profile is not None else {}
        cv_short, cv_long = self.covisits.scores(recent[:LONG_WINDOW], (SHORT_WEIGHTS, LONG_WEIGHTS))
        ids: dict[str, None] = dict.fromkeys(recent[1:])
        ids.update(dict.fromkeys(_top(own, pools.own)))
        ids.update(dict.fromkeys(_top(cv_long, pools.covisited)))
        ids.update(dict.fromkeys(_top(cv_short, pools.covisited // 2)))
        for c in self._categories(user, in_view):
            ids.update(dict.fromkeys(self.popularity.top_items(pools.category, c)))
        ids.update(dict.fromkeys(self.popularity.top_items(pools.popular)))
        x = None
        if model is not None and user.x is not None and np.any(user.x):
            x = np.asarray(user.x, np.float32)
            ids.update(dict.fromkeys(self.factor_pool(model).top(x, pools.factor)))
        ids.pop(in_view, None)
        return list(ids), {"own": own, "cv_short": cv_short, "cv_long": cv_long, "x": x, "in_view": in_view,
                           "recent": recent}

    def factor_pool(self, model: FactorModel) -> "FactorPool":
        """The factor source's pool P, the shop's `factor_pool` most popular items with factors: the
        same for every request until the popularity changes (then built again), so the requests
        ranked together share it."""
        pop = self.popularity
        cached_model, cached_pop, changes, pool = self._factor_pool
        if cached_model is not model or cached_pop is not pop or changes != pop.changes:
            changes = pop.changes  # read before the pool: a change meanwhile builds it again next time
            items = pop.top_items(self.pools.factor_pool)
            rows_model, memo = self._pool_rows
            if rows_model is not model or len(memo) > 4 * len(items):  # a new model, or many items came and went
                memo = {}
                self._pool_rows = (model, memo)
            pool = FactorPool.of(model, items, memo)
            self._factor_pool = (model, pop, changes, pool)
        return pool

    def _categories(self, user: UserState, in_view: str | None) -> list[str]:
        cats: dict[str, None] = {}
        if in_view is not None:
            c = self.category_of(in_view)
            if c is not None:
                cats[c] = None
        if user.profile is not None:
            dom = user.profile.w["domain"]
            cats.update(dict.fromkeys(sorted(dom, key=lambda c: -dom[c])[: self.pools.categories]))
        return list(cats)

    # -- terms ----------------------------------------------------------------------------
    def features(self, ids: list[str], src: dict, user: UserState, now: float, model: FactorModel | None) -> np.ndarray:
        """The terms of `models.terms.TERMS` for every candidate, one row each."""
        F = np.zeros((len(ids), len(TERMS)))
        if not ids:
            return F
        row = {j: n for n, j in enumerate(ids)}
        self._own_terms(F, row, src, user, now)
        for name in ("cv_short", "cv_long"):
            scores = src[name]
            top = max(scores.values(), default=0.0)  # over every co-visited item, candidate or not
            if top > 0:
                F[:, T[name]] = np.fromiter(map(scores.get, ids, itertools.repeat(0.0)), np.float64, len(ids)) / top
        self._factor_terms(F, ids, src["x"], model)
        self._category_terms(F, ids, src["in_view"], user, now)
        return F

    def _own_terms(self, F: np.ndarray, row: dict, src: dict, user: UserState, now: float) -> None:
        own = src["own"]
        top = max(own.values(), default=0.0)
        for j, n in row.items():
            w = own.get(j)
            if w is not None:
                F[n, T["own"]] = 1.0
                F[n, T["own_w"]] = w / top if top > 0 else 0.0
        t_item = user.profile.t["item"] if user.profile is not None else {}
        for r, j in enumerate(src["recent"][1:]):
            n = row.get(j)
            if n is None:
                continue
            F[n, T["own"]] = 1.0
            F[n, T[recency_onehot(r)]] = 1.0
            t = t_item.get(j)
            if t is not None:
                F[n, T["fresh"]] = 2.0 ** (-max(0.0, now - t) / SESSION_S)

    def _factor_terms(self, F: np.ndarray, ids: list[str], x: np.ndarray | None, model: FactorModel | None) -> None:
        if model is None or x is None:
            return
        rows = factor_rows(model, ids)
        at = np.flatnonzero(rows >= 0)
        if not at.size:
            return
        s = (model.Y[rows[at]] @ x).astype(np.float64)
        top = np.abs(s).max()
        if top > 0:
            F[at, T["factor"]] = s / top

    def _category_terms(self, F: np.ndarray, ids: list[str], in_view: str | None, user: UserState, now: float) -> None:
        """`pop`, `log_pop`, and the terms of j's category c(j): `domain`, `same_cat`, `cat_pop`
        2^(rank_c(j) − rank_c(top)) and `overall_pop` ŵ_overall(root(c))·π(j); what depends on c
        alone is looked up once per category."""
        pop = self.popularity
        profile = user.profile
        domain = normalised(profile.weights("domain", self.pp, now)) if profile is not None else {}
        overall = normalised(profile.weights("overall", self.pp, now)) if profile is not None else {}
        view_cat = self.category_of(in_view) if in_view is not None else None
        rel = np.asarray(pop.ranks(ids), np.float64) - pop.max_rank()
        known = np.isfinite(rel)
        F[known, T["pop"]] = np.exp2(rel[known])
        F[known, T["log_pop"]] = np.maximum(0.0, 1.0 + rel[known] / 16.0)
        cats = list(map(self.category_of, ids))
        code = {c: n for n, c in enumerate(dict.fromkeys(c for c in cats if c is not None))}
        rows = [code.get(c, -1) for c in cats]  # −1: the last row, of zeros, for an item without category
        per_cat = np.zeros((len(code) + 1, 3))  # domain, same_cat, the root's weight
        per_cat[:-1, 0] = [domain.get(c, 0.0) for c in code]
        per_cat[:-1, 1] = [1.0 if c == view_cat else 0.0 for c in code]
        if overall:
            per_cat[:-1, 2] = [overall.get(self.root_of(c), 0.0) for c in code]
        top = pop.max_ranks(code)
        cols = per_cat[rows]
        F[:, T["domain"]] = cols[:, 0]
        F[:, T["same_cat"]] = cols[:, 1]
        F[:, T["cat_pop"]] = [2.0 ** (r - top[n]) if r > -math.inf else 0.0
                              for r, n in zip(pop.ranks_within(ids, cats), rows)]
        F[:, T["overall_pop"]] = cols[:, 2] * F[:, T["pop"]]


@dataclass(frozen=True)
class FactorPool:
    """The items of a pool that have factors, in the pool's order, and their rows Y_P of the item factors."""

    items: list[str]
    Y: np.ndarray

    @classmethod
    def of(cls, model: FactorModel, items: Sequence[str], memo: dict[str, int] | None = None) -> "FactorPool":
        rows = factor_rows(model, items, memo)
        at = rows >= 0
        return cls(list(itertools.compress(items, at.tolist())), model.Y[rows[at]])

    def top(self, x: np.ndarray, n: int) -> list[str]:
        """The n items that score best by x·y_j (ties: the earlier in the pool)."""
        if not self.items:
            return []
        return [self.items[i] for i in first_n(-(self.Y @ x), n).tolist()]


def n_smallest(v: np.ndarray, n: int) -> np.ndarray:
    """The indices of the n smallest values of v and of every tie of the n-th, in index order."""
    if v.size <= n:
        return np.arange(v.size)
    return np.flatnonzero(v <= np.partition(v, n - 1)[n - 1])


def first_n(v: np.ndarray, n: int) -> np.ndarray:
    """`np.argsort(v, kind="stable")[:n]` without sorting all of v (a stable sort of `n_smallest`
    keeps the ties in index order)."""
    at = n_smallest(v, n)
    return at[np.argsort(v[at], kind="stable")][:n]


def factor_rows(model: FactorModel, items: Sequence[str], memo: dict[str, int] | None = None) -> np.ndarray:
    """The row of Y of each item (−1 for an item without factors).  `memo` keeps the rows looked
    up in the model's index, for items asked for again and again (a small dict, quicker to read)."""
    if memo is None:
        return np.fromiter(map(model.index.get, items, itertools.repeat(-1)), np.int64, len(items))
    rows = list(map(memo.get, items))
    if None in rows:
        missing = list(itertools.compress(items, map(operator.is_, rows, itertools.repeat(None))))
        memo.update(zip(missing, map(model.index.get, missing, itertools.repeat(-1))))
        rows = list(map(memo.__getitem__, items))
    return np.array(rows, np.int64)


def _top(scores: dict[str, float], n: int) -> list[str]:
    """The n keys of the largest values (ties: the earlier key)."""
    if len(scores) <= n:
        return list(scores)
    return sorted(scores, key=scores.__getitem__, reverse=True)[:n]


__all__ = ["FactorPool", "PoolSizes", "TermRanker", "UserState", "first_n", "n_smallest"]
