"""What the whole shop's stream says about every user: the revisit rate ρ0 and the domain share μ.

Both are learned online from every event rather than set per log, so one configuration serves a
shop whose users return to their items and one whose users never do.
"""
from __future__ import annotations

from typing import Mapping

from strata.models.popularity import Popularity
from strata.models.profile import Profile, ProfileParams
from strata.models.ranking.layers import prior_domain_share
from strata.models.ranking.params import RankParams

SHARE_STRENGTH = 2.0  # pseudo-events behind the prior domain share b_domain / (b_domain + b_overall)
SHARE_BUCKET_NAMES = ("1", "2-3", "4-7", "8-15", "16+")  # users' earlier events (`share_bucket`)
SHARE_BUCKETS = len(SHARE_BUCKET_NAMES)


class ShopRates:
    """Two rates of the whole shop, learned online from every event; no tuning per log.

    - ρ0, the revisit rate: the share of events (after a user's first) that return to an item
      of the user's item layer.  Laplace-smoothed, so it starts at ½: 0.05–0.42 on the
      e-commerce logs here, 0 on MovieLens (no item is rated twice).
    - μ, the domain share: how the weight the item layer leaves is split between the domain
      and the overall layer (see `layer_weights`).  A fair race between the two layers'
      candidate pools of equal size: a *domain hit* is an event whose item is among the
      `category_pool` most popular items of one of the user's `pool_categories` top
      categories, an *overall hit* one whose item is among the shop's
      `pool_categories · category_pool` most popular items, and

          μ_b = (domain hits_b + m·μ0) / (domain hits_b + overall hits_b + m),  μ0 = b_domain / (b_domain + b_overall)

      counted apart for users with 1, 2–3, 4–7, 8–15 and 16+ earlier events (bucket b): how
      much a user's categories say depends on how much of the user was seen.  Where
      categories are fine and shoppers stay in theirs (Taobao: μ ≈ 0.85 from the first event
      on) the domain layer gets the weight; where a few broad categories say little until a
      user has rated many films (MovieLens genres: μ ≈ 0.2 after one rating, 0.5 after 20)
      the overall layer keeps it.

    Kept as counts, not rates, so each worker counts its micro-batch (`observe` + `add`) and
    the activity feed adds every worker's counts up: the same rates as learning every event
    in one place.  Call `learn`/`observe` with the profile *before* it learns the event.
    """

    __slots__ = ("returns", "chances", "domain_hits", "overall_hits")

    def __init__(self) -> None:
        self.returns = 0
        self.chances = 0
        self.domain_hits = [0] * SHARE_BUCKETS
        self.overall_hits = [0] * SHARE_BUCKETS

    def learn(self, profile: Profile | None, item_id: str, category: str | None, popularity: Popularity,
              params: RankParams, profile_params: ProfileParams) -> None:
        self.add(self.observe(profile, item_id, category, popularity, params, profile_params))

    @staticmethod
    def observe(profile: Profile | None, item_id: str, category: str | None, popularity: Popularity,
                params: RankParams, profile_params: ProfileParams) -> tuple[int, int, int, int, int]:
        """(returns, chances, share bucket, domain hit, overall hit) that one event on `item_id`
        (in `category`, its domain key) adds, given the user's profile before it and the
        shop's popularity."""
        if profile is None or profile.count <= 0:
            return 0, 0, 0, 0, 0
        per_category, categories = params.category_pool, params.pool_categories
        # bools, which count as 1 and 0 (this runs for every event on the hot path)
        returns = item_id in profile.w["item"]
        overall = popularity.in_top(item_id, per_category * categories)
        domain = (
            category is not None
            and popularity.in_top(item_id, per_category, category)
            and _among_top_categories(profile, category, categories, profile_params)
        )
        return returns, 1, share_bucket(profile.count), domain, overall

    def add(self, observed: tuple[int, int, int, int, int]) -> None:
        """Count what `observe` saw."""
        returns, chances, bucket, domain, overall = observed
        self.returns += returns
        self.chances += chances
        self.domain_hits[bucket] += domain
        self.overall_hits[bucket] += overall

    def merge(self, other: "ShopRates") -> None:
        """Add counts taken elsewhere (another worker's batch, via the activity topic)."""
        self.returns += other.returns
        self.chances += other.chances
        for b in range(SHARE_BUCKETS):
            self.domain_hits[b] += other.domain_hits[b]
            self.overall_hits[b] += other.overall_hits[b]

    def to_dict(self) -> dict:
        return {"returns": self.returns, "chances": self.chances,
                "domain_hits": list(self.domain_hits), "overall_hits": list(self.overall_hits)}

    @classmethod
    def from_dict(cls, data: Mapping) -> "ShopRates":
        """The inverse of `to_dict`; missing counts are 0.  ValueError on impossible counts."""
        rates = cls()
        rates.returns, rates.chances = int(data.get("returns", 0)), int(data.get("chances", 0))
        if not 0 <= rates.returns <= rates.chances:
            raise ValueError(f"revisit counts {rates.returns}/{rates.chances}")
        for name in ("domain_hits", "overall_hits"):
            counts = [int(c) for c in data.get(name, ())] or [0] * SHARE_BUCKETS
            if len(counts) != SHARE_BUCKETS or min(counts) < 0:
                raise ValueError(f"{name} must be {SHARE_BUCKETS} counts ≥ 0, got {counts!r:.80}")
            setattr(rates, name, counts)
        return rates

    @property
    def revisit_rate(self) -> float:
        return (self.returns + 1.0) / (self.chances + 2.0)

    def domain_share(self, params: RankParams, profile: Profile | None) -> float:
        """μ for this user (by their event count), smoothed towards the base weights' split."""
        return self.domain_shares(params)[share_bucket(profile.count if profile is not None else 1)]

    def domain_shares(self, params: RankParams) -> list[float]:
        """μ of every bucket of `SHARE_BUCKET_NAMES`."""
        prior = SHARE_STRENGTH * prior_domain_share(params)
        return [(d + prior) / (d + o + SHARE_STRENGTH) for d, o in zip(self.domain_hits, self.overall_hits)]


def share_bucket(count: int) -> int:
    """The users' event-count bucket of the domain share: 1, 2–3, 4–7, 8–15, 16+ → 0…4."""
    b = count.bit_length() - 1 if count > 1 else 0
    return b if b < SHARE_BUCKETS else SHARE_BUCKETS - 1


def _among_top_categories(profile: Profile, category: str, n: int, pp: ProfileParams) -> bool:
    """Whether `category` is one of the user's n heaviest domain keys (by decayed weight; the
    clock-free rank log2(w) + t/H orders them the same at any time)."""
    ws = profile.w["domain"]
    w = ws.get(category)
    if w is None or n <= 0:
        return False
    if len(ws) <= n:
        return True
    ts, h = profile.t["domain"], pp.half_life_s["domain"]
    t = ts[category]
    above = 0
    # key k is heavier at any common time iff w_k · 2^((t_k − t)/H) > w: no power needed
    # unless k is heavier but older, or lighter but newer
    for key, other in ws.items():
        tk = ts[key]
        if other > w:
            if tk < t and other * 2.0 ** ((tk - t) / h) <= w:
                continue
        elif tk <= t or other * 2.0 ** ((tk - t) / h) <= w:
            continue
        above += 1
        if above >= n:
            return False
    return True
