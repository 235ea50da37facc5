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

import math
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
            ids.update(dict.fromkeys(self.popularity.top_ranked(pools.category, c)[0]))
        ids.update(dict.fromkeys(self.popularity.top_ranked(pools.popular)[0]))
        x = None
        if model is not None and user.x is not None and np.any(user.x):
            x = np.asarray(user.x, np.float32)
            ids.update(dict.fromkeys(factor_top(model, x, self.popularity.top_ranked(pools.factor_pool)[0], pools.factor)))
        ids.pop(in_view, None)
        return list(ids), {"own": own, "cv_short": cv_short, "cv_long": cv_long, "x": x, "in_view": in_view,
                           "recent": recent}

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
                get = scores.get
                F[:, T[name]] = [get(j, 0.0) / top for j in ids]
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
        index = model.index
        rows = [(n, index.get(j)) for n, j in enumerate(ids)]
        rows = [(n, r) for n, r in rows if r is not None]
        if not rows:
            return
        at = np.array([n for n, _ in rows])
        s = (model.Y[np.array([r for _, r in rows])] @ x).astype(np.float64)
        top = np.abs(s).max()
        if top > 0:
            F[at, T["factor"]] = s / top

    def _category_terms(self, F: np.ndarray, ids: list[str], in_view: str | None, user: UserState, now: float) -> None:
        pop = self.popularity
        profile = user.profile
        domain = normalised(profile.weights("domain", self.pp, now)) if profile is not None else {}
        overall = normalised(profile.weights("overall", self.pp, now)) if profile is not None else {}
        view_cat = self.category_of(in_view) if in_view is not None else None
        rel = np.asarray(pop.ranks(ids), np.float64) - pop.max_rank()
        known = np.isfinite(rel)
        F[known, T["pop"]] = np.exp2(rel[known])
        F[known, T["log_pop"]] = np.maximum(0.0, 1.0 + rel[known] / 16.0)
        # per category once: the user's domain weight, whether it is the category in view, the
        # category's top rank and the user's weight of its root; per item its rank in its category
        per_cat: dict[str, tuple[float, float, float, float]] = {}
        cols = np.zeros((4, len(ids)))  # domain, same_cat, cat_pop, the root's weight
        category_of, rank = self.category_of, pop.rank
        for n, j in enumerate(ids):
            c = category_of(j)
            if c is None:
                continue
            entry = per_cat.get(c)
            if entry is None:
                root_w = overall.get(self.root_of(c), 0.0) if overall else 0.0
                entry = per_cat[c] = (domain.get(c, 0.0), 1.0 if c == view_cat else 0.0, pop.max_rank(c), root_w)
            rc = rank(j, c)
            cols[0, n], cols[1, n], cols[3, n] = entry[0], entry[1], entry[3]
            cols[2, n] = 2.0 ** (rc - entry[2]) if rc > -math.inf else 0.0
        F[:, T["domain"]] = cols[0]
        F[:, T["same_cat"]] = cols[1]
        F[:, T["cat_pop"]] = cols[2]
        F[:, T["overall_pop"]] = cols[3] * F[:, T["pop"]]


def factor_top(model: FactorModel, x: np.ndarray, items: Sequence[str], n: int) -> list[str]:
    """The n of `items` with factors that score best by x·y_j (ties: the earlier in `items`)."""
    index = model.index
    rows = np.fromiter((index.get(j, -1) for j in items), np.int64, len(items))
    at = np.flatnonzero(rows >= 0)
    if not at.size:
        return []
    s = model.Y[rows[at]] @ x
    order = np.argsort(-s, kind="stable")[:n]
    return [items[i] for i in at[order].tolist()]


def _top(scores: dict[str, float], n: int) -> list[str]:
    """The n keys of the largest values (ties: the earlier key)."""
    if len(scores) <= n:
        return list(scores)
    return sorted(scores, key=scores.__getitem__, reverse=True)[:n]


__all__ = ["PoolSizes", "TermRanker", "UserState", "factor_top"]
