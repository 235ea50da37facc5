"""The ranker: the top k items of docs/design.md §3's score for a batch of requests, for one
factor-model version and catalog state.

A batch is ranked in three steps, `finish(products(plan(requests)))`, so that a worker runs the
matrix products — the only step that reads every item — on a thread while its event loop plans
and finishes other batches.  `plan` gathers each request's candidates (its own items and the
popular pools, `models.ranking.pools`) with their sparse terms, and tries the bound
(`models.ranking.bound`) that finds most requests' finalists without a dense pass; `finish`
re-scores each request's finalists exactly and explains them (`models.ranking.explain`).  The
score itself is `models.ranking.score`.
"""
from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from strata.models.als import fold_in_weights, gram
from strata.models.popularity import Popularity
from strata.models.profile import Profile, ProfileParams
from strata.models.ranking.bound import MARGIN, NormIndex, top_indices
from strata.models.ranking.explain import cold, exact, reasons
from strata.models.ranking.items import ItemIndex
from strata.models.ranking.layers import blend_user_vector, repeat_propensity, weights_of_layers
from strata.models.ranking.params import DEFAULT_ALPHA, DEFAULT_REGULARIZATION, RankParams, fold_param
from strata.models.ranking.plan import Candidates, FoldIn, Plan
from strata.models.ranking.pools import Pool, Pools
from strata.models.ranking.request import RankRequest, Recommendations
from strata.models.ranking.score import Score


@dataclass
class RankBatch:
    """Requests between `Ranker.plan` and `Ranker.finish`: the answers that needed no ranking
    (cold start, k = 0), the plans by item range, their user vectors (by request index; none
    without factors), the dense finalists the bound found (`bounded`), each range's float32
    factor rows of the other requests (one row, or a matrix) and, after `Ranker.products`,
    their scores."""

    ranker: "Ranker"
    answers: list[Recommendations | None]
    groups: dict[tuple[int, int], list[tuple[int, Plan]]] = field(default_factory=dict)
    vectors: dict[int, np.ndarray] = field(default_factory=dict)
    factors: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    scores: dict[tuple[int, int], np.ndarray] | None = None
    bounded: dict[int, np.ndarray] = field(default_factory=dict)  # dense finalists found without a product


@dataclass
class _Gathered:
    """A request's candidates as they are gathered: items, each one's index (`in_pool` in the
    shop's pool, `at` beyond it), per part their global ranks, dense positions, category and root
    indices and factor rows, and the indices of those outside the model."""

    js: list[str]
    in_pool: dict[str, int]
    at: dict[str, int]
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    ys: list[np.ndarray | None]
    outside: list[int]

    def add(self, ids: list[str], part: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], unknown: Sequence[int]) -> None:
        first = len(self.js)
        self.at.update(zip(ids, range(first, first + len(ids))))
        self.js += ids
        self.parts.append(part)
        self.outside.extend(first + q for q in unknown)


class Ranker:
    """Scores candidates for one factor-model version and catalog state.

    `model` (or None) needs `item_ids`, `Y` (n×k) and `index` (item → row); its `YtY`
    (else computed here), `version` and training α/λ (see `RankParams.alpha`) are used when
    present.  Users are folded in by `models.als.fold_in_weights`, as `FactorModel.fold_in`.
    `category_of` maps an item to its category (callable or mapping) and
    `root_of` a category to its root (e.g. `Catalog.category_of/root_of`).

    The items are laid out by (root, category) (`ItemIndex`); rebuild the ranker when the
    catalog changes the category of known items.  Building sorts and copies every factor row
    (run it off the event loop); `recommend` updates a small memo of items outside the model, so
    call it from one thread at a time.
    """

    # A request's dense pass is skipped when the bound (`NormIndex.finalists`) leaves at most this
    # share of its item range to score (then scored item by item); 0 scores every item, always.
    # Scoring an item alone (its row gathered) costs several times its share of a matvec, and
    # far more than its share of a batched product on a worker's products thread; but after
    # that product the worker's event loop still pays for the sparse adds and the top-n over
    # every item: 2 % is where a worker's loop breaks even; a single-threaded caller may take
    # more (the evaluator).
    bound_share = 0.02
    # Nor is the bound tried on a catalogue of fewer items than this: its fixed cost (the
    # candidates scored, and the pools' factor rows copied at every popularity change) is more
    # than a dense pass over so few items.
    bound_min_items = 20_000

    def __init__(
        self,
        model: Any | None,
        category_of: Callable[[str], str | None] | Mapping[str, str],
        root_of: Callable[[str], str],
        params: RankParams | None = None,
    ) -> None:
        self.model = model
        self.params = params or RankParams()
        self.version = getattr(model, "version", None)
        self.items = ItemIndex(model, category_of.get if isinstance(category_of, Mapping) else category_of, root_of)
        self.n, self.dims = self.items.n, self.items.dims
        self.norms = NormIndex(self.items)
        self.pools = Pools(self.items)
        self._alpha = fold_param(model, "alpha", self.params.alpha, DEFAULT_ALPHA)
        self._reg = fold_param(model, "regularization", self.params.regularization, DEFAULT_REGULARIZATION)
        self._fold = None
        if model is not None:
            YtY = getattr(model, "YtY", None)
            self._fold = (model.Y, gram(model.Y) if YtY is None else YtY)  # what fold_in_weights solves with

    def _bounding(self) -> bool:
        """Whether `plan` tries the bound (see `bound_share`, `bound_min_items`)."""
        return self.bound_share > 0 and self.n >= self.bound_min_items

    # -- recommend -------------------------------------------------------------
    def recommend(
        self,
        profile: Profile | None,
        *,
        k: int,
        popularity: Popularity,
        now: float,
        category: str | None = None,
        exclude_purchased: bool = True,
        long_term: np.ndarray | None = None,
        explain: bool = False,
        profile_params: ProfileParams,
        user_id: str | None = None,
        revisit_rate: float | None = None,
        domain_share: float | None = None,
        exclude_seen: bool = False,
    ) -> Recommendations:
        """The top-k items for `profile` at time `now` (`models.ranking.score` defines the score).

        `revisit_rate`, `domain_share`: the shop's ρ0 and μ learned online (`ShopRates`), used
        in place of `params.repeat_prior` and of the base weights' split when given.
        `exclude_seen` leaves out every item of the user's item layer, besides the purchases.
        """
        request = RankRequest(profile, k, popularity, now, profile_params, category, exclude_purchased, long_term,
                              explain, user_id, revisit_rate, domain_share, exclude_seen)
        return self.recommend_many([request])[0]

    def recommend_many(self, requests: Sequence[RankRequest]) -> list[Recommendations]:
        """`recommend` for several requests at once, in their order.

        Most requests need no dense pass: the bound (`NormIndex.finalists`) finds their
        finalists among the candidates and a few items.  The others read all n × k factors; requests over the
        same item range (the whole catalogue, or one category) share it as one matrix product, which
        costs a fraction of one matvec per request (the matvec is bound by memory bandwidth, the
        product by arithmetic).  Each request's finalists are then
        re-scored exactly as alone: a batch changes no result beyond float32 rounding of the
        dense scores, which the finalist margin absorbs.

        The same in three steps, for a caller that runs the products elsewhere (a worker runs
        them on a thread while its event loop plans and finishes other batches):
        `finish(products(plan(requests)))`.
        """
        batch = self.plan(requests)
        self.products(batch)
        return self.finish(batch)

    def plan(self, requests: Sequence[RankRequest]) -> RankBatch:
        """Everything of the requests but the matrix products, which only the requests the bound
        cannot answer need (the caller's thread)."""
        batch = RankBatch(self, [None] * len(requests))
        for i, request in enumerate(requests):
            plan = self._plan(request)
            if isinstance(plan, Recommendations):
                batch.answers[i] = plan
            else:
                batch.groups.setdefault((plan.lo, plan.hi), []).append((i, plan))
        bounding = self._bounding()
        for (lo, hi), members in batch.groups.items():
            X = []
            for i, plan in members:
                x = self._vector(plan.fold)
                if x is not None:
                    batch.vectors[i] = x
                    # the factor term of x_u: its product with y_j is the factor term of item j
                    xf = plan.score.terms(xy=x).factor.astype(np.float32)
                    top = self.norms.finalists(plan, x, xf, lo, hi, self.bound_share) if bounding else None
                    if top is not None:
                        batch.bounded[i] = top
                    else:
                        X.append(xf)
            if hi > lo and X:
                # a lone request keeps the matvec, so that its dense scores (and the evaluator's)
                # are bit for bit those of the request ranked alone
                batch.factors[(lo, hi)] = X[0] if len(X) == 1 else np.stack(X)
        return batch

    def products(self, batch: RankBatch) -> None:
        """The factor term of every planned request: one matrix product per item range, nothing
        else — numpy releases the GIL for it, so it may run on another thread."""
        if batch.ranker is not self:
            raise ValueError("a batch is scored by the ranker that planned it")
        batch.scores = {(lo, hi): X @ self.items.Yt[:, lo:hi] for (lo, hi), X in batch.factors.items()}

    def finish(self, batch: RankBatch) -> list[Recommendations]:
        """Each request's answer from its plan and the products (plain Python: the caller's thread)."""
        if batch.scores is None and batch.factors:
            raise ValueError("finish() needs products() first")
        out = batch.answers
        scores = batch.scores or {}
        for (lo, hi), members in batch.groups.items():
            S = scores.get((lo, hi))
            rows = iter(S if S is not None and S.ndim == 2 else [S])
            m = hi - lo
            for i, plan in members:
                x = batch.vectors.get(i)
                top = batch.bounded.get(i)
                if m > 0 and top is None:
                    s = next(rows) if x is not None else None
                    if s is None:
                        s = np.zeros(m, np.float32)
                    self._add_sparse(plan, s, lo, hi)
                    top = self.items.perm[top_indices(s, plan.request.k + MARGIN) + lo]
                out[i] = self._finish(plan, x, top)
        return out  # type: ignore[return-value]

    def _vector(self, fold: FoldIn | None) -> np.ndarray | None:
        """x_u: the fold-in of the item layer blended with the long-term vector (float64), or
        None (no factors, nothing to fold in, or not finite)."""
        if fold is None:
            return None
        Y, YtY = self._fold
        live = fold_in_weights(Y, YtY, fold.rows, fold.weights, self._alpha, self._reg)
        x = blend_user_vector(live, fold.long_term, fold.evidence, self.params)
        if x is None:
            return None
        x = np.asarray(x, dtype=np.float64)
        return x if np.all(np.isfinite(x)) else None

    # -- planning one request ------------------------------------------------------
    def _plan(self, request: RankRequest) -> Plan | Recommendations:
        """Everything of one request but the dense pass (or its answer, when it needs none)."""
        profile, k, now = request.profile, request.k, request.now
        if k <= 0:
            return Recommendations(request.user_id, model_version=self.version)
        if profile is None or profile.count <= 0 or not profile.w["item"] or profile.last_ts is None:
            return cold(k, request.popularity, request.category, request.explain, request.user_id, self.items,
                        self.params, self.version)
        p, pp, items = self.params, request.profile_params, self.items
        iw = profile.weights("item", pp, now)
        dw = profile.weights("domain", pp, now)
        rw = profile.weights("overall", pp, now)
        lam = weights_of_layers(profile, dw, p, now, pp, request.domain_share)
        score = Score.of(lam, p, repeat_propensity(profile, p, pp, request.revisit_rate))
        own_items = list(iw)
        own_w = np.fromiter(iw.values(), np.float64, len(own_items))
        own = self._own(profile, own_items, own_w, now)
        own_rows = items.rows(own_items)  # looked up once: for the fold-in and as candidates
        lo, hi = items.filter(request.category)
        purchased = profile.purchases if request.exclude_purchased else {}
        if request.exclude_seen:
            purchased = {**purchased, **dict.fromkeys(profile.w["item"], 0.0)}
        gathered, own_at = self._gather(request, dw, own_items, own_rows)
        # after gathering, which may add categories and roots to the vocabulary
        by_category = _normalised(dw, items.cat_index)
        by_root = _normalised(rw, items.root_index)
        return Plan(
            request=request,
            lam=lam,
            score=score,
            fold=self._fold_in(request.long_term, own_rows, own_w, iw, score),
            lo=lo,
            hi=hi,
            purchased=purchased,
            layers=(iw, dw, rw),
            own=dict(zip(own_items, own.tolist())) if own is not None else {},
            by_category=by_category,
            by_root=by_root,
            candidates=self._candidates(request, score, gathered, own, own_at, by_category, by_root, purchased),
        )

    def _own(self, profile: Profile, own_items: list[str], own_w: np.ndarray, now: float) -> np.ndarray | None:
        """ŵ_item(j) plus its recency, per own item j (in the item layer's order); None when the
        item layer weighs nothing."""
        p = self.params
        iw_max = float(own_w.max()) if own_items else 0.0
        if not iw_max > 0:
            return None
        own = own_w / iw_max
        if p.recency_weight > 0:
            a_rec, h_rec = p.recency_weight, p.recency_half_life_s
            item_time = profile.t["item"]
            if p.recency_rank:
                times = np.fromiter(map(item_time.__getitem__, own_items), np.float64, len(own_items))
                by_time = np.argsort(-times, kind="stable")  # newest first …
                if (times[by_time[1:]] == times[by_time[:-1]]).any():
                    by_time = np.lexsort((np.array(own_items), -times))  # … ties by item
                own[by_time] += a_rec / (1.0 + np.arange(len(own_items)))
            else:
                own += [a_rec * 2.0 ** (-max(0.0, now - item_time[j]) / h_rec) for j in own_items]
        return own

    def _fold_in(self, long_term: np.ndarray | None, own_rows: np.ndarray, own_w: np.ndarray, iw: dict[str, float],
                 score: Score) -> FoldIn | None:
        """The user vector's inputs: the item layer's rows to fold in, blended with the long-term
        vector (None without factors, or when the factor term weighs nothing)."""
        if self.model is None or not score.factor > 0:
            return None
        if long_term is not None and np.shape(long_term) != (self.dims,):
            long_term = None  # a vector of another model: ignore
        known = own_rows >= 0
        return FoldIn(own_rows[known], own_w[known], sum(iw.values()), long_term)

    def _gather(self, request: RankRequest, dw: dict[str, float], own_items: list[str],
                own_rows: np.ndarray) -> tuple[_Gathered, np.ndarray]:
        """The sparse candidates: the shop's popular pool, the pools of the request's category and
        of the user's top categories (each located once per popularity state), then the user's
        own items; each item once, with its global rank.  Also each own item's candidate index."""
        p, popularity, with_rows = self.params, request.popularity, self._bounding()
        pool = self.pools.get(popularity, p.popular_pool, None, with_rows)
        scopes: list[Pool] = []
        if request.category is not None:
            scopes.append(self.pools.get(popularity, p.popular_pool, request.category, with_rows))
        if p.pool_categories > 0 and p.category_pool > 0 and dw:
            for _, c in heapq.nlargest(p.pool_categories, zip(dw.values(), dw)):  # ties: the larger key
                scopes.append(self.pools.get(popularity, p.category_pool, c, with_rows))
        # each part's factor rows; the user's own items' are gathered when needed
        got = _Gathered(list(pool.ids), pool.at, {}, [(pool.ranks, pool.pos, pool.ci, pool.ri)], [pool.Y], list(pool.outside))
        at = got.at
        for scope in scopes:
            part = self.pools.beyond(scope, pool)
            ids, take, unknown = part.ids, slice(None), part.outside
            if at and not at.keys().isdisjoint(ids):  # scopes that share items (a root and its category)
                take = [q for q, j in enumerate(ids) if j not in at]
                ids = [ids[q] for q in take]
                outside_part = set(part.outside)
                unknown = [n for n, q in enumerate(take) if q in outside_part]
            if ids:
                got.add(ids, (part.ranks[take], part.pos[take], part.ci[take], part.ri[take]), unknown)
                got.ys.append(None if part.Y is None else part.Y[take])  # no rows kept where the bound is not tried
        # each own item's candidate index; those in no pool are added as candidates of their own
        own_at = np.fromiter(map(pool.at.get, own_items, map(at.get, own_items, itertools.repeat(-1))), np.int64,
                             len(own_items))
        new = np.flatnonzero(own_at < 0)
        if new.shape[0]:
            more = [own_items[q] for q in new.tolist()]
            own_at[new] = np.arange(len(got.js), len(got.js) + len(more))
            m_pos, m_ci, m_ri, m_outside = self.items.locate(more, own_rows[new])
            got.add(more, (np.asarray(popularity.ranks(more), np.float64), m_pos, m_ci, m_ri), m_outside)
        return got, own_at

    def _candidates(self, request: RankRequest, score: Score, got: _Gathered, own: np.ndarray | None,
                    own_at: np.ndarray, by_category: dict[int, float], by_root: dict[int, float],
                    purchased: Mapping[str, Any]) -> Candidates:
        """The gathered candidates with π(j) and their sparse add to the dense score (their own and
        overall terms); those outside the model scored in full."""
        js, nj = got.js, len(got.js)
        rank_a, pos_a, ci_a, ri_a = (np.concatenate(column) for column in zip(*got.parts))
        r_top = request.popularity.max_rank()
        pop_a = np.exp2(rank_a - r_top) if r_top > -math.inf and nj else np.zeros(nj)
        own_a = np.zeros(nj)
        seen_a = np.zeros(nj)
        if own is not None:
            own_a[own_at] = own
            seen_a[own_at] = 1.0
        root_arr = np.zeros(len(self.items.root_ids))
        for ri, w in by_root.items():
            root_arr[ri] = w
        sparse = score.terms(own_a, seen_a, root=root_arr[ri_a], pop=pop_a)
        add_a = sparse.own + sparse.overall  # the factor and domain terms are the dense pass's
        extra: list[tuple[float, str]] = []
        domain_of = score.domain_of(by_category) if got.outside else {}
        for t in got.outside:
            j = js[t]
            ci, ri = int(ci_a[t]), int(ri_a[t])
            if j in purchased or not self.items.matches(ci, ri, request.category):
                continue
            extra.append((float(add_a[t]) + domain_of.get(ci, 0.0), j))
        return Candidates(got.in_pool, got.at, pop_a, pos_a, add_a, extra, ci_a, got.ys)

    # -- the dense pass's scores, and the answer -------------------------------------
    def _add_sparse(self, plan: Plan, s: np.ndarray, lo: int, hi: int) -> None:
        """Adds to the dense scores s (of items lo..hi) the plan's domain and sparse terms, and
        −inf for the items it leaves out."""
        if plan.score.domain > 0:
            cat_range = self.items.cat_range
            domain_of = plan.score.domain_of(plan.by_category)
            if lo == 0 and hi == self.n:  # no filter: every category's range as it is
                for ci, d in domain_of.items():
                    a, b = cat_range[ci]
                    if a < b:
                        s[a:b] += d  # a Python float, added as float32 (NEP 50)
            else:
                for ci, d in domain_of.items():
                    a, b = cat_range[ci]
                    a, b = max(a, lo), min(b, hi)
                    if a < b:
                        s[a - lo : b - lo] += d
        pos_a, add_a = plan.candidates.pos, plan.candidates.add
        mask = (pos_a >= lo) & (pos_a < hi) & (add_a != 0)
        s[pos_a[mask] - lo] += add_a[mask].astype(np.float32)
        purchased = self.items.positions(plan.purchased, lo, hi)
        if purchased.shape[0]:
            s[purchased - lo] = -np.inf

    def _finish(self, plan: Plan, x: np.ndarray | None, dense: np.ndarray | None) -> Recommendations:
        """The top k of one plan from its user vector, the model rows of its dense finalists and
        its candidates outside the model, with exact contributions."""
        items = self.items
        # the dense finalists (model rows) and the best candidates outside the model, each with
        # its row (−1 outside), category and root index
        finalists: list[tuple[str, int, int, int]] = []
        if dense is not None:
            dense_rows = dense.tolist()
            finalists.extend(zip([items.ids[r] for r in dense_rows], dense_rows, items.item_cat[dense].tolist(),
                                 items.item_root[dense].tolist()))
        for _, j in heapq.nlargest(plan.request.k + MARGIN, plan.candidates.outside):
            _, ci, ri = items.resolve(j)
            finalists.append((j, -1, ci, ri))
        rows = exact(plan, x, finalists, items.Y)
        if plan.request.explain:
            because = reasons(rows, *plan.layers, x, items, self.params.explain_reasons)
        else:
            because = [[] for _ in rows]
        return Recommendations(
            user_id=plan.request.user_id,
            items=[r[1] for r in rows],
            scores=[r[0] for r in rows],
            layers=[r[2].layers() for r in rows],
            because=because,
            cold_start=False,
            layer_weights=plan.lam,
            model_version=self.version,
        )


def _normalised(weights: dict[str, float], index: dict) -> dict[int, float]:
    """ŵ by vocabulary index: the weights over their maximum, for the keys the vocabulary has."""
    top = max(weights.values(), default=0.0)
    if not top > 0:
        return {}
    return {i: w / top for key, w in weights.items() if (i := index.get(key)) is not None}
