"""A request planned: everything of it but the dense pass, as `Ranker.plan` leaves it for
`Ranker.products` and `Ranker.finish` (and the bound, which may make the dense pass needless).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

import numpy as np

from strata.models.ranking.request import RankRequest
from strata.models.ranking.score import Score


@dataclass(frozen=True)
class Candidates:
    """A request's sparse candidates, the popular pool's then its own, in two index maps; per
    candidate π(j), its dense position (−1 outside the model) and its sparse add to the dense
    score (its own and overall terms).  Those outside the model are scored here in full, as
    (score, item)."""

    in_pool: dict[str, int]
    in_more: dict[str, int]
    pop: np.ndarray
    pos: np.ndarray
    add: np.ndarray
    outside: list[tuple[float, str]]
    ci: np.ndarray  # category index per candidate
    ys: list[np.ndarray]  # the pools' factor rows, in candidate order (the user's own items after them)


class FoldIn(NamedTuple):
    """What one user's vector is made of.  `Ranker.plan` solves them (`Ranker._vector`) after
    planning every request of the batch: solved in the middle of each plan, their numpy work
    evicts the planning's look-ups (docs/tools/compare_ranking.py measures the difference)."""

    rows: np.ndarray  # rows of Y of the user's items in the model
    weights: np.ndarray  # their decayed item weights
    evidence: float  # Σ_i w_item(i,T), for the blend
    long_term: np.ndarray | None


@dataclass(frozen=True)
class Plan:
    """One request after everything but the dense pass (see `Ranker._plan`)."""

    request: RankRequest
    lam: dict[str, float]
    score: Score
    fold: FoldIn | None  # the user vector's inputs; None without factors
    lo: int  # the dense range scored: the request's category (or root), or every item
    hi: int
    purchased: Mapping[str, Any]  # left out of the answer (empty with exclude_purchased=False)
    layers: tuple[dict[str, float], dict[str, float], dict[str, float]]  # item, domain, overall weights at `now`
    own: dict[str, float]  # ŵ_item(j) plus its recency, per own item j
    by_category: dict[int, float]  # ŵ_domain by category index
    by_root: dict[int, float]  # ŵ_overall by root index
    candidates: Candidates
