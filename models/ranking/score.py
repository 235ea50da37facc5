"""The score of docs/design.md §3, defined once: every path that scores an item calls `Score.terms`.

For user u with profile P at time T, with max-normalised layer weights

    ŵ_item(j) = w_item(j,T) / max_i w_item(i,T)      (same for domain keys c, root keys r)

the score of a candidate item j with category c(j) and root r(j) is

    s(j) = λ_item    · [ a_own·ρ_u · (ŵ_item(j) + a_rec·2^(−(T − t_j)/H_rec))
                         − a_seen·(1−ρ_u) · 1[j ∈ I_u]  +  a_fac · x_u·y_j ]
         + λ_domain  · ŵ_domain(c(j))
         + λ_overall · [ ε + (1−ε) · ŵ_overall(r(j)) ] · π(j)

- t_j is the time of u's last event on j (kept with its item weight): the
  recency term a_rec·2^(−(T − t_j)/H_rec), with H_rec minutes to hours, puts
  the item just looked at first among the user's own items — within a session
  the decayed weights of H_item = days hardly differ, but the next cart or
  purchase is mostly the item of the last few clicks;
- ρ_u = repeat_propensity(P): how often this user returns to an item of
  their item layer I_u (smoothed towards a prior ρ0; 1 and a_seen = 0 when no
  prior is set), so own items lead for shoppers who come back to them and
  give way to new items for users who never revisit (MovieLens);
- x_u = blend_user_vector(fold-in of the current item layer, long-term batch
  vector, evidence = Σ_i w_item(i,T))  — "interest regression";
- π(j) = pop(j,T) / pop(top item,T) = 2^(rank(j) − rank(top)) ∈ [0,1], the
  normalised recent popularity (independent of T, see models.popularity);
  it is read for the candidates outside the dense pass (the user's own items,
  the global popular pool and the pools of the user's top categories) and
  counts as 0 for every other item — their true π is below the global pool's
  floor π(M-th item), so the truncation error is bounded by that floor;
- ε (`root_floor`) lets globally popular items fill the list after the
  user's own roots;
- λ = layer_weights(P, T, μ) — "dynamic layer weights", summing to 1; μ, the share of
  what the item layer leaves that goes to the domain layer rather than the overall one, is
  learned online from the whole shop's events (`ShopRates`), as is ρ_u's prior.

A change of the score is a change of `Score.terms` alone.  Each path evaluates it on what it has:

- the dense pass on the candidates' own and overall terms (`Plan.candidates.add`), on each
  category's domain term (`Score.domain_terms`) and on x_u, whose factor term λ_item·a_fac·x_u
  the matrix product turns into every item's (the term is linear in x_u·y_j);
- the bound on the same three, and on the factor term at ‖x_u‖, the Cauchy–Schwarz bound of
  x_u·y_j per unit ‖y_j‖;
- the finalists, re-scored exactly, on all of them at once: their `Terms` are the layers'
  contributions of the answer and what its explanations rank;
- the cold path on a user with no layer but the overall one and no root preferred to another
  (ŵ_overall ≡ 1), which leaves s(j) = π(j).

The dense pass and the bound rely on two properties of the definition: the factor term is linear
in x_u·y_j, and an item that is no candidate has no own-item or overall term (its π counts as 0).
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import numpy as np

from strata.models.ranking.params import RankParams


class Terms(NamedTuple):
    """s(j) in its parts: the item layer's own-item and factor terms, the domain and the overall
    term, each with its layer weight (floats, or arrays over items)."""

    own: Any
    factor: Any
    domain: Any
    overall: Any

    @property
    def item(self) -> Any:
        return self.own + self.factor

    @property
    def total(self) -> Any:
        """s(j): the three layers' contributions summed."""
        return self.own + self.factor + self.domain + self.overall

    def layers(self) -> dict[str, float]:
        """Each layer's contribution λ_L·s_L(j), as an answer reports it."""
        return {"item": self.own + self.factor, "domain": self.domain, "overall": self.overall}


class Score(NamedTuple):
    """One user's scalars of s(j), and s(j) itself (`terms`)."""

    own: float  # λ_item · a_own · ρ_u
    seen: float  # λ_item · a_seen · (1 − ρ_u)
    factor: float  # λ_item · a_fac
    domain: float  # λ_domain
    overall: float  # λ_overall
    root_floor: float  # ε

    @classmethod
    def of(cls, lam: dict[str, float], params: RankParams, rho: float) -> "Score":
        """The scalars of a user with layer weights λ and revisit propensity ρ_u."""
        l_item = lam["item"]
        seen = l_item * params.seen_penalty * (1.0 - rho) if params.repeat_prior is not None else 0.0
        return cls(l_item * params.item_own_weight * rho, seen, l_item * params.item_factor_weight,
                   lam["domain"], lam["overall"], params.root_floor)

    @classmethod
    def cold(cls, params: RankParams) -> "Score":
        """A user without a profile: λ = (0, 0, 1)."""
        return cls(0.0, 0.0, 0.0, 0.0, 1.0, params.root_floor)

    def terms(self, own: Any = 0.0, seen: Any = 0.0, xy: Any = 0.0, domain: Any = 0.0, root: Any = 0.0,
              pop: Any = 0.0) -> Terms:
        """The terms of s(j) from ŵ_item(j) plus its recency (own), 1[j ∈ I_u] (seen), x_u·y_j
        (xy), ŵ_domain(c(j)), ŵ_overall(r(j)) and π(j); what is not given counts as 0."""
        c_own, c_seen, c_fac, l_dom, l_over, eps = self
        return _new(Terms, (c_own * own - c_seen * seen, c_fac * xy, l_dom * domain,
                            l_over * (eps + (1.0 - eps) * root) * pop))

    def domain_terms(self, weights: Mapping[int, float]) -> tuple[np.ndarray, np.ndarray]:
        """The domain term of each category of `weights` (ŵ_domain by category index), as
        (category indices, terms)."""
        n = len(weights)
        return (np.fromiter(weights, np.int64, n),
                self.terms(domain=np.fromiter(weights.values(), np.float64, n)).domain)

    def domain_of(self, weights: Mapping[int, float]) -> dict[int, float]:
        """`domain_terms` as category index → term."""
        return dict(zip(*(a.tolist() for a in self.domain_terms(weights))))


_new = tuple.__new__  # `Terms` made without its __new__, a Python function: one is made for every finalist
