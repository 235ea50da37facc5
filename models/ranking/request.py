"""A ranking request as data, and its answer in the HTTP shape of docs/design.md §4.

A request is a value so that a caller can gather many and rank them as one batch
(`Ranker.recommend_many`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from strata.models.popularity import Popularity
from strata.models.profile import Profile, ProfileParams


@dataclass
class Recommendations:
    """Top-k items, best first, with each layer's contribution λ_L·s_L (summing to the score)."""

    user_id: str | None = None
    items: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    layers: list[dict[str, float]] = field(default_factory=list)
    because: list[list[str]] = field(default_factory=list)
    cold_start: bool = False
    layer_weights: dict[str, float] = field(default_factory=dict)
    model_version: Any = None
    terms: list[dict[str, float]] = field(default_factory=list)  # per item, each term's share of its score (explained)

    def __len__(self) -> int:
        return len(self.items)

    def to_dict(self) -> dict:
        """The HTTP shape of docs/design.md §4 (plus `cold_start` and `layer_weights`)."""
        return {
            "user_id": self.user_id,
            "model_version": self.model_version,
            "cold_start": self.cold_start,
            "layer_weights": dict(self.layer_weights),
            "items": [
                {"item_id": i, "score": s, "layers": dict(l), "because": list(b),
                 **({"terms": self.terms[n]} if n < len(self.terms) else {})}
                for n, (i, s, l, b) in enumerate(zip(self.items, self.scores, self.layers, self.because))
            ],
        }


@dataclass(frozen=True)
class RankRequest:
    """One `Ranker.recommend` call as data (see there), for `Ranker.recommend_many`."""

    profile: Profile | None
    k: int
    popularity: Popularity
    now: float
    profile_params: ProfileParams
    category: str | None = None
    exclude_purchased: bool = True
    long_term: np.ndarray | None = None
    explain: bool = False
    user_id: str | None = None
    revisit_rate: float | None = None
    domain_share: float | None = None
    exclude_seen: bool = False
    theta: np.ndarray | None = None  # the learned ranker's term weights for this request (an A/B variant's)
