"""Top-K ranking metrics of the prequential evaluation (docs/design.md §6).

With one relevant item per target (the item the user went on to cart or buy)
and r its 1-based rank in the top-K list (r = ∞ when it is not in the list):

    HR@K   = 1[r ≤ K]
    NDCG@K = 1[r ≤ K] / log2(r + 1)      (the ideal DCG of one relevant item is 1)
    MRR@K  = 1[r ≤ K] / r

Each is averaged over targets.  Catalogue coverage is the share of the
catalogue that appeared in at least one recommended list.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence


def hit_rank(recommended: Sequence[str], target: str, k: int) -> int | None:
    """1-based rank of `target` within the first k recommendations, None when absent."""
    for r, item in enumerate(recommended[:k], 1):
        if item == target:
            return r
    return None


def hr_at_k(rank: int | None) -> float:
    return 0.0 if rank is None else 1.0


def ndcg_at_k(rank: int | None) -> float:
    return 0.0 if rank is None else 1.0 / math.log2(rank + 1)


def mrr_at_k(rank: int | None) -> float:
    return 0.0 if rank is None else 1.0 / rank


def coverage(recommended_lists: Iterable[Iterable[str]], catalogue_size: int) -> float:
    """|∪ recommended items| / catalogue size (0 for an empty catalogue)."""
    if catalogue_size <= 0:
        return 0.0
    seen: set[str] = set()
    for items in recommended_lists:
        seen.update(items)
    return len(seen) / catalogue_size


@dataclass
class RankingScore:
    """Running sums of HR, NDCG and MRR over targets, plus the distinct items recommended."""

    k: int
    targets: int = 0
    hits: float = 0.0
    dcg: float = 0.0
    rr: float = 0.0
    recommended: set[str] = field(default_factory=set)

    def add(self, recommended: Sequence[str], target: str) -> int | None:
        """Score one list against its target; returns the hit rank (None for a miss)."""
        top = recommended[: self.k]
        rank = hit_rank(top, target, self.k)
        self.targets += 1
        self.hits += hr_at_k(rank)
        self.dcg += ndcg_at_k(rank)
        self.rr += mrr_at_k(rank)
        self.recommended.update(top)
        return rank

    @property
    def hr(self) -> float:
        return self.hits / self.targets if self.targets else 0.0

    @property
    def ndcg(self) -> float:
        return self.dcg / self.targets if self.targets else 0.0

    @property
    def mrr(self) -> float:
        return self.rr / self.targets if self.targets else 0.0

    def coverage(self, catalogue_size: int) -> float:
        return coverage([self.recommended], catalogue_size)


def paired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int = 2000, seed: int = 0,
                     groups: Sequence[str] | None = None) -> dict:
    """How much better `a` is than `b` on the same targets: the mean of the per-target
    differences a_i − b_i and its 95 % interval by the paired bootstrap, seeded (the same inputs
    give the same interval).

    With `groups` (the user of every target) the bootstrap resamples groups, not targets: all
    of a user's targets are drawn together, since targets of one user are not independent.  A
    resample's difference is Σ d over its drawn users' targets / their number of targets.

    {"delta", "ci95": [low, high], "targets", "groups", "resamples"}; delta and ci95 are None
    without targets.
    """
    import numpy as np

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.ndim != 1:
        raise ValueError("a and b must be sequences of the same length")
    n = d.size
    if groups is not None and len(groups) != n:
        raise ValueError(f"groups has {len(groups)} entries for {n} targets")
    if n == 0:
        return {"delta": None, "ci95": None, "targets": 0, "groups": 0, "resamples": resamples}
    if groups is None:
        sums, counts = d, np.ones(n)
    else:
        _, codes = np.unique(np.asarray(groups, dtype=object), return_inverse=True)
        sums = np.bincount(codes, weights=d)
        counts = np.bincount(codes).astype(np.float64)
    g = sums.size
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    step = max(1, 2_000_000 // g)  # resamples per chunk: bounded memory on big logs
    for start in range(0, resamples, step):
        stop = min(resamples, start + step)
        draw = rng.integers(0, g, (stop - start, g))
        means[start:stop] = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"delta": float(d.mean()), "ci95": [float(low), float(high)], "targets": int(n), "groups": int(g),
            "resamples": resamples}


__all__ = ["RankingScore", "coverage", "hit_rank", "hr_at_k", "mrr_at_k", "ndcg_at_k", "paired_bootstrap"]
