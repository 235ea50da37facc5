"""Strata's ranker as served: the candidates and terms of `models.blend`, weighted by the shop's θ.

`LearnedRanker` answers `models.ranking.RankRequest`s: `plan` finds each user's state (their
recent distinct items, their profile, their vector x_u: folded in from the live item layer and
blended with the batch vector, docs/design.md §3 "interest regression"); `finish` the candidates, terms,
θ·f, the filters, the top k and their explanations.  No step scores every item: the factor
source picks from the shop's most popular items (`models.blend.PoolSizes.factor_pool`), so a
request costs the same at 250,000 items as at 2,000.

The evaluator's `StrataModel` calls the same `user_state` and `score`, with its own
co-visitation, popularity and θ, which the workers keep from the activity topic.

A score is θ·f(j) = Σ_t θ_t·f_t(j); an item's `layers` are the sums of its terms' contributions
θ_t·f_t per layer (`LAYER_TERMS`), so they add up to the score; explained (the first
`EXPLAIN_TOP` items of a list), its `terms` are each term's share of the score and `because` the
largest shares with the evidence behind them (the recent item it was co-visited with, the
category, …).  A user with no profile gets the same terms with no own items: the
popular items (of the category asked for), scored by the shop's θ (`cold_start` set).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from strata.models.blend import PoolSizes, TermRanker, UserState, n_smallest
from strata.models.covisit import CoVisits
from strata.models.factors import FactorModel
from strata.models.popularity import Popularity
from strata.models.profile import Profile, ProfileParams
from strata.models.ranking import (
    DEFAULT_ALPHA, DEFAULT_REGULARIZATION, RankParams, RankRequest, Recommendations, fold_param, blend_user_vector,
)
from strata.models.terms import LONG_WINDOW, T, TERMS, TermWeights

LAYER_TERMS: dict[str, tuple[str, ...]] = {
    "item": ("own", "own_w", "rec_0", "rec_1", "rec_2_3", "rec_4_7", "rec_8p", "fresh", "cv_short", "cv_long", "factor"),
    "domain": ("domain", "same_cat", "cat_pop"),
    "overall": ("pop", "log_pop", "overall_pop"),
}
_LAYER_OF = {t: layer for layer, terms in LAYER_TERMS.items() for t in terms}
_LAYER_MATRIX = np.array([[1.0 if _LAYER_OF[t] == layer else 0.0 for layer in LAYER_TERMS] for t in TERMS])  # terms × layers
#: items of a list that are explained (`terms`, `because`): a list of 1,000 costs the explanations of 100
EXPLAIN_TOP = 100
#: the kind of evidence each term is (an explanation sums the shares of a kind)
_GROUP_OF = {t: "own" if t.startswith("rec_") or t in ("own", "own_w", "fresh") else "cv" if t.startswith("cv_")
             else "factor" if t == "factor" else "domain" if t in ("same_cat", "domain", "cat_pop") else "overall" for t in TERMS}
#: a kind of evidence whose share of an item's score is below this is left out of its explanation
EXPLAIN_SHARE = 0.05


def layer_mask(layers: Sequence[str]) -> np.ndarray:
    """1 for the terms of `layers`, 0 for the others (an ablation keeps some layers only)."""
    return np.array([1.0 if _LAYER_OF[t] in layers else 0.0 for t in TERMS])


def fold_params(model: FactorModel, rank_params: RankParams) -> tuple[float, float]:
    """α and λ of the fold-in: RankParams' when set, else the fit's (`params["als"]`), else the defaults."""
    return (fold_param(model, "alpha", rank_params.alpha, DEFAULT_ALPHA),
            fold_param(model, "regularization", rank_params.regularization, DEFAULT_REGULARIZATION))


def user_state(profile: Profile | None, model: FactorModel | None, long_term: np.ndarray | None, now: float,
               pp: ProfileParams, rank_params: RankParams) -> UserState:
    """What the ranker reads of a user: their last distinct items (the item in view first), their
    profile, and x_u = the fold-in of their live item layer blended with their batch vector."""
    if profile is None:
        return UserState([], None, long_term if model is not None else None)
    recent = profile.recent_items(LONG_WINDOW + 1)
    live_w = profile.weights("item", pp, now)
    x = None
    if model is not None:
        live = model.fold_in(live_w, *fold_params(model, rank_params)) if live_w else None
        x = blend_user_vector(live, long_term, sum(live_w.values()), rank_params)
    return UserState(recent, profile, x, live_w)


def shares(contrib: np.ndarray, score: float) -> dict[str, float]:
    """Each term's share θ_t·f_t / score of a score (the terms that contribute; {} for a zero score)."""
    if not score or not math.isfinite(score):
        return {}
    return {TERMS[t]: round(c / score, 4) for t, c in enumerate(contrib.tolist()) if c}


@dataclass
class LearnedBatch:
    """Requests planned together, each with its user's state (what `streams.views` queues)."""

    planned: list[tuple[RankRequest, UserState]]


def feedback(ranker: "LearnedRanker", profile: Profile | None, item: str, ts: float, long_term: np.ndarray | None) -> np.ndarray | None:
    """The step of θ (`TermWeights.step`) that an event on `item` at `ts` gives, asked before the
    event is applied to `profile`: the list the ranker would have shown, and where `item` is in
    it.  None for an event on the item in view (no feedback) or when there is no step."""
    user = user_state(profile, ranker.model, long_term, ts, ranker.terms.pp, ranker.rank_params)
    if not user.recent or user.recent[0] == item:
        return None
    ids, F, s = ranker.score(user, ts)
    try:
        positive = ids.index(item)
    except ValueError:
        positive = None
    return ranker.weights.step(F, positive, s)


def list_feedback(ranker: "LearnedRanker", profile: Profile | None, shown: Sequence[str], served_at: float, item: str,
                  type_: str, ts: float, long_term: np.ndarray | None) -> np.ndarray | None:
    """The step of θ that a served list gives (docs/design.md §3, explicit feedback), from an event on `item`
    at `ts` after the list `shown` was served at `served_at`: `item` is the positive — acted on in
    the list, or chosen instead of it — and each item shown that the user has not touched since is
    a negative (shown, and passed over); the step weighted by the event type's β relative to a
    click's.  Features as of now, asked before the event is applied to `profile`; None when there
    is no negative."""
    user = user_state(profile, ranker.model, long_term, ts, ranker.terms.pp, ranker.rank_params)
    ids, F, _ = ranker.score(user, ts, extra=(item, *shown))
    rows = {j: n for n, j in enumerate(ids)}
    positive = rows.get(item)
    if positive is None:  # the item in view: no feedback
        return None
    last_touch = profile.t["item"] if profile is not None else {}
    negatives = [rows[j] for j in shown if j != item and j in rows and last_touch.get(j, -math.inf) < served_at]
    beta = ranker.terms.pp.beta
    return ranker.weights.step_pairs(F, positive, negatives, beta[type_] / beta["click"])


class LearnedRanker:
    """θ·f over each user's candidates, for one factor version (or none)."""

    def __init__(self, model: FactorModel | None, category_of: Callable[[str], str | None], root_of: Callable[[str], str],
                 covisits: CoVisits, popularity: Popularity, weights: TermWeights, profile_params: ProfileParams,
                 rank_params: RankParams | None = None, pools: PoolSizes | None = None) -> None:
        self.model = model
        self.version = model.version if model is not None else None
        self.weights = weights
        self.rank_params = rank_params or RankParams()
        # the catalogue look-ups, co-visitation, popularity and profile parameters: self.terms's
        self.terms = TermRanker(category_of, root_of, covisits, popularity, profile_params, pools)

    # -- scoring (the evaluator calls this too) ------------------------------------------
    def score(self, user: UserState, now: float, mask: np.ndarray | None = None,
              extra: Sequence[str] = (), theta: np.ndarray | None = None) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Candidate ids, their features and θ·f (the shop's θ, or `theta`); `extra` ids join the candidates."""
        ids, src = self.terms.candidates(user, now, self.model)
        if extra:
            known = set(ids)
            in_view = src["in_view"]
            ids += [j for j in dict.fromkeys(extra) if j not in known and j != in_view]
        F = self.terms.features(ids, src, user, now, self.model)
        if mask is not None:
            F *= mask
        return ids, F, F @ (self.weights.theta if theta is None else theta)

    # -- serving ------------------------------------------------------------------------
    def recommend_many(self, requests: Sequence[RankRequest]) -> list[Recommendations]:
        return self.finish(self.plan(requests))

    def plan(self, requests: Sequence[RankRequest]) -> LearnedBatch:
        """Each request's user state (the fold-in)."""
        return LearnedBatch([(r, user_state(r.profile, self.model, r.long_term, r.now, r.profile_params, self.rank_params))
                             for r in requests])

    def finish(self, batch: LearnedBatch) -> list[Recommendations]:
        return [self._answer(request, user) for request, user in batch.planned]

    def _answer(self, request: RankRequest, user: UserState) -> Recommendations:
        k, profile, category = request.k, request.profile, request.category
        excluded: set[str] = set()
        if profile is not None:
            if request.exclude_purchased:
                excluded.update(profile.purchases)
            if request.exclude_seen:
                excluded.update(profile.w["item"])
        need = k + len(excluded) + 1
        extra = self.terms.popularity.top_items(need, category) if category is not None else []
        extra += self.terms.popularity.top_items(need) if need > self.terms.pools.popular else []
        theta = self.weights.theta if request.theta is None else request.theta
        ids, F, s = self.score(user, request.now, extra=extra, theta=theta)
        keep = [n for n, j in enumerate(ids) if j not in excluded and (category is None or self._matches(j, category))]
        score_of = s.tolist()
        kept = np.asarray(keep, dtype=np.intp)
        best = kept[n_smallest(-s[kept], k)].tolist()  # the k best and the ties of the k-th: sorted by (−s, id)
        order = sorted(best, key=lambda n: (-score_of[n], ids[n]))[:k]
        out = Recommendations(user_id=request.user_id, cold_start=profile is None or profile.count == 0,
                              model_version=self.version)
        contrib = F[np.asarray(order, dtype=np.intp)] * theta  # θ_t·f_t of each item shown
        by_layer = contrib @ _LAYER_MATRIX
        for row, (n, layers) in enumerate(zip(order, by_layer.tolist())):
            item, score = ids[n], score_of[n]
            out.items.append(item)
            out.scores.append(score)
            out.layers.append(dict(zip(LAYER_TERMS, layers)))
            if request.explain and row < EXPLAIN_TOP:
                term_shares = shares(contrib[row], score)
                out.terms.append(term_shares)
                out.because.append(self._because(item, term_shares, user))
            else:
                out.because.append([])
        totals = np.abs(by_layer.sum(axis=0)).tolist() if order else [0.0] * len(LAYER_TERMS)
        total = sum(totals)
        out.layer_weights = {layer: v / total if total > 0 else 0.0 for layer, v in zip(LAYER_TERMS, totals)}
        return out

    def _matches(self, item: str, category: str) -> bool:
        c = self.terms.category_of(item)
        return c is not None and (c == category or self.terms.root_of(c) == category)

    # -- explanations -------------------------------------------------------------------
    def _because(self, item: str, term_shares: dict[str, float], user: UserState) -> list[str]:
        """The kinds of evidence behind an item (own history, co-visitation, taste, category,
        popularity), each with the summed share of its terms and the evidence of its largest term,
        largest first; kinds below `EXPLAIN_SHARE` are left out (and their evidence not looked up)."""
        groups: dict[str, list] = {}  # group → [share, its largest term]
        for term, share in sorted(term_shares.items(), key=lambda ts: -ts[1]):
            entry = groups.setdefault(_GROUP_OF[term], [0.0, term])
            entry[0] += share
        ranked = sorted(groups.values(), key=lambda entry: -entry[0])
        return [f"{share:.0%} {self._evidence(item, term, user)}" for share, term in ranked if share >= EXPLAIN_SHARE]

    def _evidence(self, item: str, term: str, user: UserState) -> str:
        """What lies behind `term` for `item`, in words."""
        recent = list(user.recent)
        if term.startswith("rec_") or term in ("own", "own_w", "fresh"):
            if item in recent:
                back = recent.index(item)
                return "you looked at it just before this one" if back == 1 else f"you looked at it {back} items back"
            return "in your history"
        if term.startswith("cv_"):
            best = max(recent[:LONG_WINDOW], key=lambda i: self.terms.covisits.similarity(i, item), default=None)
            return f"often visited with {best}" if best is not None else "often visited with your items"
        if term == "factor":
            return "close to your taste (ALS factors)"
        c = self.terms.category_of(item)
        if term == "same_cat":
            return f"same category ({c}) as the item in view"
        if term in ("domain", "cat_pop"):
            return f"popular in {c}, one of your categories" if term == "cat_pop" else f"in {c}, one of your categories"
        root = self.terms.root_of(c) if c is not None else "*"
        if term == "overall_pop":
            return f"popular in {root}, a department you visit"
        return "popular now"


__all__ = ["EXPLAIN_SHARE", "EXPLAIN_TOP", "LAYER_TERMS", "feedback", "list_feedback", "shares", "LearnedBatch", "LearnedRanker", "layer_mask", "user_state"]
