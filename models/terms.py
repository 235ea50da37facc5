"""The score's terms and their weights, learned online from what shoppers do next (docs/design.md §3).

For user u at time T, with item in view v (u's latest item), a candidate j gets
a feature vector f(j) of the terms below, each in [0, 1] (or −1…1 for the factor
term), and the score

    s(j) = θ · f(j)

Terms (`TERMS`, in this order):

- own item layer: `own` 1[j ∈ I_u]; `own_w` ŵ_item(j) = w_item(j, T) / max_i w_item(i, T);
  `rec_0`, `rec_1`, `rec_2_3`, `rec_4_7`, `rec_8p`: one-hot of j's recency rank r among u's
  distinct items (r = 0: the item touched just before v); `fresh` 2^(−(T − t_j)/1 h);
- co-visitation: `cv_short` and `cv_long`, Σ_i a_i · sim(i, j) over u's last 3 (a_i = 2^−pos)
  and last 20 (a_i = 1) distinct items, each divided by its maximum over the candidates;
- factors: `factor` x_u·y_j divided by the largest |x_u·y_j| among the candidates;
- domain: `domain` ŵ_domain(c(j)); `same_cat` 1[c(j) = c(v)];
- overall: `pop` π(j) = pop(j, T) / pop(top item, T); `log_pop` max(0, 1 + log2 π(j) / 16);
  `cat_pop` j's popularity within its category, relative to the category's top item;
  `overall_pop` ŵ_overall(root(j)) · π(j).

θ is learned by pairwise logistic SGD (BPR, Rendle et al. 2009) from every event
whose item differs from the user's previous one: before the event is applied,
the candidates are scored, and for the event's item j⁺ (when it is a candidate)
and negatives j⁻ drawn from the current top of the list and from all candidates,

    θ ← θ + η · (σ(−θ·(f(j⁺) − f(j⁻))) · (f(j⁺) − f(j⁻)) − λ θ).

θ is the shop's, one vector for every user: what a user's own state says enters
through the terms (their recency ranks, their categories, their fold-in x_u).
`THETA0` is the prior the learner starts from: the user's most recent items,
then their co-visited items, their categories and popularity.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import zlib

import numpy as np

from strata.models.profile import KEEP_RECENT

TERMS: tuple[str, ...] = (
    "own", "own_w", "rec_0", "rec_1", "rec_2_3", "rec_4_7", "rec_8p", "fresh",
    "cv_short", "cv_long", "factor", "domain", "same_cat", "pop", "log_pop", "cat_pop", "overall_pop",
)
T = {name: n for n, name in enumerate(TERMS)}
#: names the terms and their order in what workers exchange (a Δθ of other terms is refused)
TERMS_ID = zlib.crc32(",".join(TERMS).encode())
#: what the learner starts from: recent own items first, then co-visited ones, then categories and popularity
THETA0: dict[str, float] = {
    "own": 1.0, "rec_0": 2.0, "rec_1": 1.0, "rec_2_3": 0.5, "own_w": 0.5, "fresh": 0.5,
    "cv_short": 1.0, "cv_long": 0.5, "factor": 0.3, "domain": 0.3, "same_cat": 0.3,
    "pop": 0.2, "log_pop": 0.2, "cat_pop": 0.1, "overall_pop": 0.1,
}
SESSION_S = 3600.0
SHORT_WINDOW = 3
LONG_WINDOW = KEEP_RECENT - 1  # the recent items besides the one in view


@dataclass(frozen=True)
class LearnParams:
    """The learner's knobs: one default for every shop.

    rate        η, the SGD step
    l2          λ, the pull towards 0 of every step
    negatives   negatives per positive; half from the current top (`hard_top`), half uniform
    hard_top    the top of the list the hard negatives come from
    """

    rate: float = 0.05
    l2: float = 1e-4
    negatives: int = 8
    hard_top: int = 20


def theta0() -> np.ndarray:
    theta = np.zeros(len(TERMS))
    for name, value in THETA0.items():
        theta[T[name]] = value
    return theta


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class TermWeights:
    """θ, the shop's weights of the terms, learned online; mergeable counts of what was learned."""

    def __init__(self, params: LearnParams | None = None, theta: np.ndarray | None = None, seed: int = 0) -> None:
        self.params = params or LearnParams()
        self.theta = theta0() if theta is None else np.asarray(theta, np.float64).copy()
        self.updates = 0
        self.misses = 0
        self._rng = np.random.default_rng(seed)

    def learn(self, F: np.ndarray, positive: int | None, scores: np.ndarray, skip: int | None = None) -> None:
        """One pairwise step, applied at once (`step`)."""
        delta = self.step(F, positive, scores, skip)
        if delta is not None:
            self.theta += delta

    def step(self, F: np.ndarray, positive: int | None, scores: np.ndarray, skip: int | None = None) -> np.ndarray | None:
        """The pairwise step Δθ, not applied: F the candidates' features, `positive` the row of the
        item the user went to (None when it was not a candidate), `scores` = F·θ before the step,
        `skip` a row that is never a negative (the item in view).  None when there is no step.
        A worker sums its steps and publishes them; every worker adds every worker's sums."""
        if positive is None:
            self.misses += 1
            return None
        n = F.shape[0]
        p = self.params
        if n < 2:
            return None
        half = p.negatives // 2
        top = np.argsort(-scores, kind="stable")[: p.hard_top]
        draws = np.concatenate([
            self._rng.choice(top, size=min(half, top.size), replace=False),
            self._rng.integers(0, n, size=p.negatives - half),
        ])
        neg = draws[(draws != positive) & (draws != (-1 if skip is None else skip))]
        return self.step_pairs(F, positive, neg)

    def step_pairs(self, F: np.ndarray, positive: int, negatives: np.ndarray | Sequence[int],
                   weight: float = 1.0) -> np.ndarray | None:
        """The pairwise logistic step for `positive` over each of `negatives` (rows of F), scaled by
        `weight`: Δθ = weight · η · (mean_n σ(−θ·(f_p − f_n)) (f_p − f_n) − λθ).  None without negatives."""
        neg = np.asarray(negatives, dtype=np.intp)
        if neg.size == 0:
            return None
        diff = F[positive][None, :] - F[neg]
        g = _sigmoid(-(diff @ self.theta))
        self.updates += 1
        return weight * self.params.rate * ((g[:, None] * diff).mean(axis=0) - self.params.l2 * self.theta)

    def as_dict(self) -> dict[str, float]:
        return {name: float(self.theta[n]) for n, name in enumerate(TERMS)}


def recency_onehot(rank: int) -> str:
    """The recency term of an own item with recency rank `rank` (0: just before the item in view)."""
    if rank == 0:
        return "rec_0"
    if rank == 1:
        return "rec_1"
    if rank <= 3:
        return "rec_2_3"
    if rank <= 7:
        return "rec_4_7"
    return "rec_8p"


def normalised(values: Mapping[str, float]) -> dict[str, float]:
    """Values divided by their maximum (empty or all-zero: empty)."""
    top = max(values.values(), default=0.0)
    return {k: v / top for k, v in values.items()} if top > 0 else {}


__all__ = ["LearnParams", "T", "TERMS", "TERMS_ID", "THETA0", "TermWeights", "normalised",
           "recency_onehot", "theta0"]
