"""The layered scorer of SPEC §3, shared by the stream workers and the offline evaluator.

No I/O, deterministic, vectorised over the factor model's items with numpy.

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

The result carries, per item, each layer's contribution λ_L·s_L(j) (they sum
to the score) and, when asked, short reasons.
"""
from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np

from strata.models.als import fold_in_weights, gram
from strata.models.catalog import ROOT_UNKNOWN
from strata.models.popularity import DAY, Popularity
from strata.models.profile import LAYERS, Profile, ProfileParams

_MEMO_CAP = 1 << 20
DEFAULT_ALPHA = 10.0  # fold-in fallbacks when neither RankParams nor the model say (= models.als defaults)
DEFAULT_REGULARIZATION = 0.05


@dataclass(frozen=True)
class RankParams:
    """Every knob of the scorer (the evaluation of SPEC §6 picks the defaults).

    base_weights        (item, domain, overall) layer weights of a fresh, focused user with
                        plenty of events; normalised to sum 1.  b_domain : b_overall is only
                        the prior of the domain share μ the shop's stream teaches (`ShopRates`).
    item_own_weight     a_own: weight of the user's own normalised item weight ("people return
                        to what they just looked at") inside the item layer.  It is scaled per
                        user by the revisit propensity ρ_u (see `repeat_prior`): 100·ρ_u puts a
                        returning shopper's recent items first (on e-commerce logs most carts
                        and purchases return to a seen item), the other layers ordering and
                        filling around them, and fades to 0 for users who never come back to
                        an item (MovieLens), with no per-log setting.
    recency_weight      a_rec: weight of the own item's recency 2^(−(T − t_j)/H_rec), next to ŵ_item(j).
    recency_half_life_s H_rec of that recency (seconds).
    recency_rank        use 1/(1 + r_j) instead, r_j the number of the user's items touched after
                        j: free of any time scale (sessions of minutes or of days alike).
    repeat_prior        ρ0: the revisit propensity assumed before a user's own evidence, or None
                        to use a_own as it is (no propensity, no seen penalty).
    repeat_strength     m: pseudo-events behind ρ0 (ρ_u = (r + m·ρ0) / (n − 1 + m), r the
                        user's events on an item already in the item layer, n the events).
    seen_penalty        a_seen: subtracted, times (1 − ρ_u), from every item in the user's item
                        layer: a user who does not revisit is shown new items instead.
    item_factor_weight  a_fac: weight of the factor term x_u·y_j inside the item layer.
    blend_k0            interest regression: x_u = w·live + (1−w)·long_term, w = E/(E + k0), E the
                        user's total decayed item weight (≈ k0 recent views weigh both equally).
    evidence_n0         events at which the evidence factor n/(n + n0) of the layer weights is ½.
    focus_floor         ρ: share of the domain weight an evenly spread (exploratory) user keeps.
    root_floor          ε: overall-layer weight of a root the user never touched (popular fill).
    popularity_half_life_s  half-life of `Popularity` (the caller builds it with this value).
    popular_pool        M: global popular candidates (and the floor below which π counts as 0).
    category_pool       popular candidates taken from each of the user's top categories …
    pool_categories     … for this many top categories (by domain weight).
    alpha, regularization   fold-in confidence α and ridge λ; None: the values the model was
                        trained with (`model.params["als"]`, a flat `model.params` mapping
                        or attributes), else 10.0 / 0.05.
    explain_reasons     at most this many reasons per item.
    layers              the layers that score (default all three).  Leaving some out is an
                        ablation: the kept layers' weights are rescaled to sum to 1.
    """

    base_weights: tuple[float, float, float] = (0.6, 0.2, 0.2)
    item_own_weight: float = 100.0
    item_factor_weight: float = 1.0
    blend_k0: float = 5.0
    evidence_n0: float = 1.0
    focus_floor: float = 0.5
    root_floor: float = 0.1
    popularity_half_life_s: float = DAY
    popular_pool: int = 500
    category_pool: int = 50
    pool_categories: int = 3
    alpha: float | None = None
    regularization: float | None = None
    explain_reasons: int = 3
    layers: tuple[str, ...] = LAYERS
    recency_weight: float = 3.0
    recency_half_life_s: float = 3600.0
    recency_rank: bool = True
    repeat_prior: float | None = 0.5
    repeat_strength: float = 5.0
    seen_penalty: float = 1.0

    def __post_init__(self) -> None:
        kept = tuple(dict.fromkeys(self.layers))
        if not kept or any(layer not in LAYERS for layer in kept):
            raise ValueError(f"layers must be a non-empty subset of {LAYERS}, got {self.layers!r}")
        object.__setattr__(self, "layers", tuple(l for l in LAYERS if l in kept))
        b = tuple(float(x) for x in self.base_weights)
        if len(b) != 3 or any(not (math.isfinite(x) and x >= 0) for x in b) or sum(b) <= 0:
            raise ValueError(f"base_weights must be three finite numbers ≥ 0 with a positive sum, got {self.base_weights!r}")
        object.__setattr__(self, "base_weights", tuple(x / sum(b) for x in b))
        if self.repeat_prior is not None and not 0.0 <= self.repeat_prior <= 1.0:
            raise ValueError(f"repeat_prior must be in [0, 1] or None, got {self.repeat_prior!r}")
        for name in ("item_own_weight", "item_factor_weight", "blend_k0", "evidence_n0", "repeat_strength", "seen_penalty", "recency_weight"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number ≥ 0, got {v!r}")
        for name in ("focus_floor", "root_floor"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {v!r}")
        if not self.popularity_half_life_s > 0:
            raise ValueError("popularity_half_life_s must be > 0")
        if not self.recency_half_life_s > 0:
            raise ValueError("recency_half_life_s must be > 0")
        for name in ("popular_pool", "category_pool", "pool_categories", "explain_reasons"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be ≥ 0")

    def as_dict(self) -> dict:
        return asdict(self)


def fold_param(model: Any, name: str, explicit: float | None, default: float) -> float:
    if explicit is not None:
        return float(explicit)
    mp = getattr(model, "params", None)
    value = None
    if isinstance(mp, Mapping):
        als = mp.get("als")
        value = als.get(name) if isinstance(als, Mapping) else None
        if value is None:
            value = mp.get(name)
    elif mp is not None:
        value = getattr(mp, name, None)
    return float(value) if value is not None else default


# -- dynamic layer weights ---------------------------------------------------
def layer_weights(
    profile: Profile | None,
    params: RankParams,
    now: float,
    profile_params: ProfileParams | None = None,
    domain_share: float | None = None,
) -> dict[str, float]:
    """How much each layer counts for this user now; the three weights sum to 1.

    With base weights (b_item, b_domain, b_overall), Δ = max(0, now − last event),
    n = event count, p_c the user's domain weights at `now` normalised to sum 1:

        fresh_L  = 2^(−Δ / H_L)                 (H_item, H_domain: the profile half-lives)
        evidence = n / (n + n0)
        focus    = exp(−Σ_c p_c ln p_c)⁻¹ = 1 / (effective number of categories) ∈ (0, 1]
        μ        = the shop's domain share (`ShopRates.domain_share`, learned online), or
                   b_domain / (b_domain + b_overall) when none is given

        λ_item    = b_item · fresh_item · evidence
        λ_domain  = (1 − λ_item) · μ · fresh_domain · (ρ + (1−ρ) · focus)   (0 with no categories)
        λ_overall = 1 − λ_item − λ_domain

    So rich, fresh activity keeps the weight on the item layer, and what it leaves — all
    the more for a sparse (few events) or stale (Δ ≫ half-lives) user — goes to the
    user's categories or to popularity in the proportion the shop's own stream says
    predicts the next item better (μ); an exploratory user (many even categories) and a
    stale one slide from domain towards overall, i.e. root interest × popularity.
    No profile / no events: (0, 0, 1).
    """
    pp = profile_params or ProfileParams()
    if profile is None or profile.count <= 0 or not profile.w["item"] or profile.last_ts is None:
        return {"item": 0.0, "domain": 0.0, "overall": 1.0}
    return _layer_weights(profile, profile.weights("domain", pp, now), params, now, pp, domain_share)


def _layer_weights(
    profile: Profile, domain: Mapping[str, float], params: RankParams, now: float, pp: ProfileParams,
    domain_share: float | None = None,
) -> dict[str, float]:
    b_item = params.base_weights[0]
    mu = _prior_domain_share(params) if domain_share is None else min(1.0, max(0.0, float(domain_share)))
    dt = max(0.0, now - float(profile.last_ts or now))
    fresh_item = 2.0 ** (-dt / pp.half_life_s["item"])
    fresh_domain = 2.0 ** (-dt / pp.half_life_s["domain"])
    n = float(profile.count)
    evidence = n / (n + params.evidence_n0) if n + params.evidence_n0 > 0 else 1.0
    lam_item = b_item * fresh_item * evidence
    lam_domain = 0.0
    total = sum(domain.values())
    if total > 0:
        entropy = -sum(w / total * math.log(w / total) for w in domain.values() if w > 0)
        focus = math.exp(-entropy)
        rho = params.focus_floor
        lam_domain = (1.0 - lam_item) * mu * fresh_domain * (rho + (1.0 - rho) * focus)
    lam = {"item": lam_item, "domain": lam_domain, "overall": max(0.0, 1.0 - lam_item - lam_domain)}
    if len(params.layers) < len(LAYERS):
        return _keep_layers(lam, params.layers)
    return lam


def _keep_layers(lam: dict[str, float], kept: tuple[str, ...]) -> dict[str, float]:
    """Zero the left-out layers and rescale the kept ones to sum 1 (evenly when all are 0)."""
    total = sum(lam[l] for l in kept)
    return {l: (lam[l] / total if total > 0 else 1.0 / len(kept)) if l in kept else 0.0 for l in LAYERS}


# -- what the whole shop's stream says -------------------------------------------
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
        prior = SHARE_STRENGTH * _prior_domain_share(params)
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


def _prior_domain_share(params: RankParams) -> float:
    _, b_domain, b_overall = params.base_weights
    return b_domain / (b_domain + b_overall) if b_domain + b_overall > 0 else 0.0


def repeat_propensity(
    profile: Profile, params: RankParams, profile_params: ProfileParams, prior: float | None = None
) -> float:
    """ρ_u: how likely this user's next event returns to an item of their item layer.

    Read off the profile: with n events on m distinct item keys, n − m events
    were returns (the first event on a key cannot be one), smoothed towards
    the prior ρ0 with m pseudo-events:

        ρ_u = (n − m_keys + m·ρ0) / (n − 1 + m)

    Once the item layer has hit its cap, keys were dropped and n − m_keys
    over-counts returns, so the prior alone is used.  `prior` (e.g. a learned
    `ShopRates.revisit_rate`) replaces the configured ρ0.  1 when `params.repeat_prior`
    is None (the own-item weight then applies unscaled).
    """
    if params.repeat_prior is None:
        return 1.0
    rho0 = params.repeat_prior if prior is None else prior
    keys = len(profile.w["item"])
    if keys >= profile_params.caps["item"]:
        return rho0
    n = profile.count
    returns = max(0, n - keys)
    m = params.repeat_strength
    denom = max(n - 1, 0) + m
    return (returns + m * rho0) / denom if denom > 0 else rho0


# -- interest regression -----------------------------------------------------
def blend_user_vector(
    live: np.ndarray | None,
    long_term: np.ndarray | None,
    evidence: float,
    params: RankParams,
) -> np.ndarray | None:
    """x_u = w·live + (1−w)·long_term with w = E / (E + k0).

    E is the fresh evidence (the user's total decayed item weight): no
    evidence → the long-term batch vector, lots → the live fold-in.  Either
    vector may be missing; then the other is used as it is (None if both are).
    """
    if live is None:
        return None if long_term is None else np.asarray(long_term)
    if long_term is None:
        return np.asarray(live)
    live = np.asarray(live)
    long_term = np.asarray(long_term)
    if live.shape != long_term.shape:
        raise ValueError(f"live {live.shape} and long-term {long_term.shape} vectors differ in shape")
    e = max(0.0, float(evidence))
    k0 = params.blend_k0
    w = e / (e + k0) if e + k0 > 0 else 1.0
    return w * live + (1.0 - w) * long_term


# -- the result ----------------------------------------------------------------
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
        """The HTTP shape of SPEC §4 (plus `cold_start` and `layer_weights`)."""
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


class _Coefficients(NamedTuple):
    """One user's scalars of the score (module docstring)."""

    own: float  # λ_item · a_own · ρ_u
    seen: float  # λ_item · a_seen · (1 − ρ_u)
    factor: float  # λ_item · a_fac
    domain: float  # λ_domain
    overall: float  # λ_overall
    root_floor: float  # ε


@dataclass(frozen=True)
class _Candidates:
    """A request's sparse candidates, the popular pool's then its own, in two index maps; per
    candidate π(j), its dense position (−1 outside the model) and its sparse add to the dense
    score.  Those outside the model are scored here in full, as (score, item)."""

    in_pool: dict[str, int]
    in_more: dict[str, int]
    pop: np.ndarray
    pos: np.ndarray
    add: np.ndarray
    outside: list[tuple[float, str]]
    ci: np.ndarray  # category index per candidate
    ys: list[np.ndarray]  # the pools' factor rows, in candidate order (the user's own items after them)


class _FoldIn(NamedTuple):
    """What one user's vector is made of.  `Ranker.plan` solves them (`Ranker._vector`) after
    planning every request of the batch: solved in the middle of each plan, they cost the loop
    5–9 % more (docs/tools/compare_ranking.py), their numpy work evicting the planning's
    look-ups."""

    rows: np.ndarray  # rows of Y of the user's items in the model
    weights: np.ndarray  # their decayed item weights
    evidence: float  # Σ_i w_item(i,T), for the blend
    long_term: np.ndarray | None


@dataclass(frozen=True)
class _Plan:
    """One request after everything but the dense pass (see `Ranker._plan`)."""

    request: RankRequest
    lam: dict[str, float]
    coef: _Coefficients
    fold: _FoldIn | None  # the user vector's inputs; None without factors
    lo: int  # the dense range scored: the request's category (or root), or every item
    hi: int
    purchased: Mapping[str, Any]  # left out of the answer (empty with exclude_purchased=False)
    layers: tuple[dict[str, float], dict[str, float], dict[str, float]]  # item, domain, overall weights at `now`
    own: dict[str, float]  # ŵ_item(j) plus its recency, per own item j
    by_category: dict[int, float]  # ŵ_domain by category index
    by_root: dict[int, float]  # ŵ_overall by root index
    candidates: _Candidates


@dataclass(frozen=True)
class _Pool:
    """The most popular items of one scope (the shop, a category or a root) in one popularity
    state, located in one ranker, with their global ranks: what the requests drawing on that
    scope share, so that they look up none of it in the big item dicts."""

    ids: list[str]
    at: dict[str, int]  # item → its index in ids
    ranks: np.ndarray  # global ranks (an item's rank within its category may differ)
    pos: np.ndarray
    ci: np.ndarray
    ri: np.ndarray
    outside: list[int]  # indices of the items the factor model does not know
    Y: np.ndarray | None  # their factor rows, contiguous (zeros outside the model), if `_bounded` is tried


@dataclass
class RankBatch:
    """Requests between `Ranker.plan` and `Ranker.finish`: the answers that needed no ranking
    (cold start, k = 0), the plans by item range, their user vectors (by request index; none
    without factors), the dense finalists the bound found (`bounded`), each range's float32
    factor rows of the other requests (one row, or a matrix) and, after `Ranker.products`,
    their scores."""

    ranker: "Ranker"
    answers: list[Recommendations | None]
    groups: dict[tuple[int, int], list[tuple[int, _Plan]]] = field(default_factory=dict)
    vectors: dict[int, np.ndarray] = field(default_factory=dict)
    factors: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    scores: dict[tuple[int, int], np.ndarray] | None = None
    bounded: dict[int, np.ndarray] = field(default_factory=dict)  # dense finalists found without a product


# -- the ranker ------------------------------------------------------------------
class Ranker:
    """Scores candidates for one factor-model version and catalog state.

    `model` (or None) needs `item_ids`, `Y` (n×k) and `index` (item → row); its `YtY`
    (else computed here), `version` and training α/λ (see `RankParams.alpha`) are used when
    present.  Users are folded in by `models.als.fold_in_weights`, as `FactorModel.fold_in`.
    `category_of` maps an item to its category (callable or mapping) and
    `root_of` a category to its root (e.g. `Catalog.category_of/root_of`).

    At build time the model's items are laid out sorted by (root, category),
    so each category and each root is one contiguous column range of the
    transposed factor matrix: the domain term is a handful of slice adds and a
    category filter scans only its range.  Items outside the model are
    resolved (and memoised) on first sight; rebuild the ranker when the
    catalog changes the category of known items.  Building takes ~0.5 s for
    250k items (run it off the event loop); `recommend` updates that small
    memo, so call it from one thread at a time.
    """

    # A request's dense pass is skipped when the bound of `_bounded` leaves at most this share
    # of its item range to score (then scored item by item); 0 scores every item, always.
    # Scoring an item alone costs ≈ 85 ns (its row gathered), the dense pass ≈ 15 ns an item
    # (a matvec) or much less batched on a worker's products thread, whose event loop then
    # still pays ≈ 0.3 ms a request for the sparse adds and the top-n over every item: 2 % is
    # where a worker's loop breaks even; a single-threaded caller may take more (the evaluator).
    bound_share = 0.02
    # Nor is the bound tried on a catalogue of fewer items than this: its fixed cost (the
    # candidates scored, ≈ 0.1 ms a request, and the pools' factor rows copied at every
    # popularity change) is more than a dense pass over so few items.
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
        self._category_of = category_of.get if isinstance(category_of, Mapping) else category_of
        self._root_of = root_of
        self._cat_index: dict[str | None, int] = {}
        self._cat_ids: list[str | None] = []
        self._cat_root: list[int] = []
        self._cat_range: list[tuple[int, int]] = []
        self._root_index: dict[str, int] = {}
        self._root_ids: list[str] = []
        self._root_range: list[tuple[int, int]] = []
        self._memo: dict[str, tuple[int, int, int]] = {}
        # pools of the popularity state (`_pools_of`, `_pools_changes`) they were located in
        self._pools: dict[tuple[str | None, int], _Pool] = {}
        self._beyond_pools: dict[int, tuple[_Pool, _Pool]] = {}  # id(scope pool) → (it, `_beyond` of it)
        self._pools_of: Popularity | None = None
        self._pools_changes = -1

        self._alpha = fold_param(model, "alpha", self.params.alpha, DEFAULT_ALPHA)
        self._reg = fold_param(model, "regularization", self.params.regularization, DEFAULT_REGULARIZATION)

        if model is None:
            self.n = 0
            self.dims = 0
            self._Yt = np.zeros((0, 0), np.float32)
            self._Y = np.zeros((0, 0), np.float32)
            self._fold = None
            self._perm = np.zeros(0, np.int64)
            self._inv = np.zeros(0, np.int64)
            self._index: Mapping[str, int] = {}
            self._ids: tuple[str, ...] = ()
            self._item_cat = np.zeros(0, np.int64)
            self._item_root = np.zeros(0, np.int64)
            self._index_norms(np.zeros(0, np.int64))
            return

        ids = tuple(model.item_ids)
        n = len(ids)
        Y = np.asarray(model.Y, dtype=np.float32)
        if Y.ndim != 2 or Y.shape[0] != n:
            raise ValueError(f"model.Y has shape {Y.shape}, expected ({n}, k)")
        self.n, self.dims = n, Y.shape[1]
        self._ids = ids
        self._Y = Y
        YtY = getattr(model, "YtY", None)
        self._fold = (model.Y, gram(model.Y) if YtY is None else YtY)  # what fold_in_weights solves with
        self._index = model.index
        cat_of = self._category_of
        cis = np.fromiter((self._cat(cat_of(i)) for i in ids), dtype=np.int64, count=n)
        ris = np.asarray(self._cat_root, dtype=np.int64)[cis] if n else np.zeros(0, np.int64)
        perm = np.lexsort((np.arange(n), cis, ris))  # by root, then category, then model row
        inv = np.empty(n, np.int64)
        inv[perm] = np.arange(n)
        self._perm, self._inv = perm, inv
        self._Yt = np.ascontiguousarray(Y[perm].T)  # k × n, columns in (root, category) order
        self._cat_range = [(0, 0)] * len(self._cat_ids)
        self._root_range = [(0, 0)] * len(self._root_ids)
        for keys, ranges in ((cis[perm], self._cat_range), (ris[perm], self._root_range)):
            if n == 0:
                continue
            cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
            starts = np.concatenate(([0], cuts))
            ends = np.concatenate((cuts, [n]))
            for s, e in zip(starts.tolist(), ends.tolist()):
                ranges[int(keys[s])] = (s, e)
        self._item_cat = cis
        self._item_root = ris
        self._index_norms(cis[perm])

    def _index_norms(self, dense_cat: np.ndarray) -> None:
        """What `_bounded` needs: each category's dense positions by descending factor norm, and
        a sorted key that counts, in one `searchsorted`, a category's items above a norm.

        Category segment g (the g-th category range in dense order) holds keys g + 1 − ‖y‖/D,
        in (g, g + 1] with D just above the largest norm, ascending within the segment as the
        norms descend."""
        n = self.n
        if n == 0:
            self._seg_start = self._seg_cat = self._by_norm = self._dense_cat = np.zeros(0, np.int64)
            self._marked = np.zeros(0, bool)
            self._norm_key = np.zeros(0)
            self._norm_max, self._norm_scale = 0.0, 1.0
            return
        norms = np.sqrt(np.einsum("ij,ij->j", self._Yt, self._Yt, dtype=np.float64))
        seg = np.zeros(n, np.int64)
        seg[1:] = np.cumsum(dense_cat[1:] != dense_cat[:-1])
        order = np.lexsort((-norms, seg))
        self._seg_start = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
        self._seg_cat = dense_cat[self._seg_start]
        self._dense_cat = dense_cat
        self._norm_max = float(norms.max())
        self._norm_scale = self._norm_max * 1.001 + 1e-30
        self._by_norm = order
        self._marked = np.zeros(n, bool)  # scratch of `_bounded`, all False between its calls
        self._norm_key = seg[order] + 1.0 - norms[order] / self._norm_scale

    # -- vocabulary ----------------------------------------------------------
    def _cat(self, cat: str | None) -> int:
        ci = self._cat_index.get(cat)
        if ci is None:
            root = ROOT_UNKNOWN if cat is None else self._root_of(cat)
            ri = self._root_index.get(root)
            if ri is None:
                ri = self._root_index[root] = len(self._root_ids)
                self._root_ids.append(root)
                self._root_range.append((0, 0))
            ci = self._cat_index[cat] = len(self._cat_ids)
            self._cat_ids.append(cat)
            self._cat_root.append(ri)
            self._cat_range.append((0, 0))
        return ci

    def _resolve(self, item: str) -> tuple[int, int, int]:
        """(dense position or −1, category index, root index) of an item."""
        info = self._memo.get(item)
        if info is None:
            row = self._index.get(item)
            if row is not None:
                info = (int(self._inv[row]), int(self._item_cat[row]), int(self._item_root[row]))
            else:
                ci = self._cat(self._category_of(item))
                info = (-1, ci, self._cat_root[ci])
            if len(self._memo) >= _MEMO_CAP:
                self._memo.clear()
            self._memo[item] = info
        return info

    def _rows(self, items) -> np.ndarray:
        """The model row of each item, −1 for those outside the model."""
        n = len(items)
        return np.fromiter(map(self._index.get, items, itertools.repeat(-1, n)), np.int64, n)

    def _locate(self, items: list[str], rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
        """(dense position or −1, category index, root index) of each item as three arrays, and
        the indices of the items outside the model; vectorised for the model's items (whose
        `rows` may be given)."""
        n = len(items)
        if rows is None:
            rows = self._rows(items)
        if self.n:
            safe = np.maximum(rows, 0)
            pos = np.where(rows >= 0, self._inv[safe], -1)
            ci = self._item_cat[safe]
            ri = self._item_root[safe]
        else:
            pos = np.full(n, -1, np.int64)
            ci = np.zeros(n, np.int64)
            ri = np.zeros(n, np.int64)
        outside = np.flatnonzero(pos < 0).tolist()
        for t in outside:
            _, ci[t], ri[t] = self._resolve(items[t])
        return pos, ci, ri, outside

    def _pool(self, popularity: Popularity, size: int, scope: str | None = None) -> _Pool:
        """The `size` most popular items of a scope (None: the whole shop), located in this
        ranker; kept until the popularity changes (every request shares the shop's pool, and
        the users of a category its pool, so these are most of a request's candidates)."""
        if self._pools_of is not popularity or self._pools_changes != popularity.changes:
            self._pools.clear()
            self._beyond_pools.clear()
            self._pools_of, self._pools_changes = popularity, popularity.changes
        pool = self._pools.get((scope, size))
        if pool is None:
            if len(self._pools) >= _POOLS_KEPT:
                self._pools.clear()
                self._beyond_pools.clear()
            ids = popularity.top_ranked(size, scope)[0]
            pos, ci, ri, outside = self._locate(ids)
            pool = self._pools[(scope, size)] = _Pool(
                ids, {j: t for t, j in enumerate(ids)}, np.asarray(popularity.ranks(ids), np.float64), pos, ci, ri, outside,
                self._rows_at(pos) if self._bounding() else None)
        return pool

    def _beyond(self, scope: _Pool, shop: _Pool) -> _Pool:
        """The items of a scope's pool that are not in the shop's pool, as a pool of their own;
        kept with the pools (the shop's pool is replaced only when they are all dropped)."""
        kept = self._beyond_pools.get(id(scope))
        if kept is not None and kept[0] is scope:
            return kept[1]
        in_shop = shop.at
        taken = [t for t, j in enumerate(scope.ids) if j not in in_shop]
        unknown = set(scope.outside)
        part = _Pool([scope.ids[t] for t in taken], {}, scope.ranks[taken], scope.pos[taken], scope.ci[taken],
                     scope.ri[taken], [q for q, t in enumerate(taken) if t in unknown],
                     scope.Y[taken] if scope.Y is not None else None)
        self._beyond_pools[id(scope)] = (scope, part)
        return part

    def _bounding(self) -> bool:
        """Whether `plan` tries the bound of `_bounded` (see `bound_share`, `bound_min_items`)."""
        return self.bound_share > 0 and self.n >= self.bound_min_items

    def _rows_at(self, pos: np.ndarray) -> np.ndarray:
        """The factor rows of dense positions, as one contiguous array (zeros for −1)."""
        Y = self._Y[self._perm[np.maximum(pos, 0)]] if self.n else np.zeros((pos.shape[0], self.dims), np.float32)
        Y[pos < 0] = 0.0
        return Y

    def _filter(self, category: str | None) -> tuple[int, int]:
        """The dense range of the items of `category` (a category or a root); all without one."""
        if category is None:
            return 0, self.n
        ri = self._root_index.get(category)
        if ri is not None:
            return self._root_range[ri]
        ci = self._cat_index.get(category)
        if ci is not None:
            return self._cat_range[ci]
        return 0, 0

    def _matches(self, ci: int, ri: int, category: str | None) -> bool:
        return category is None or self._cat_ids[ci] == category or self._root_ids[ri] == category

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
        """The top-k items for `profile` at time `now` (see the module docstring for the score).

        `revisit_rate`, `domain_share`: the shop's ρ0 and μ learned online (`ShopRates`), used
        in place of `params.repeat_prior` and of the base weights' split when given.
        `exclude_seen` leaves out every item of the user's item layer, besides the purchases.
        """
        request = RankRequest(profile, k, popularity, now, profile_params, category, exclude_purchased, long_term,
                              explain, user_id, revisit_rate, domain_share, exclude_seen)
        return self.recommend_many([request])[0]

    def recommend_many(self, requests: Sequence[RankRequest]) -> list[Recommendations]:
        """`recommend` for several requests at once, in their order.

        Most requests need no dense pass: the bound of `_bounded` finds their finalists among
        the candidates and a few items.  The others read all n × k factors; requests over the
        same item range (the whole catalogue, or one category) share it as one matrix product, which on
        this hardware costs about a quarter of one matvec per request (the matvec is bound by
        memory bandwidth, the product by arithmetic).  Each request's finalists are then
        re-scored exactly as alone: a batch changes no result beyond float32 rounding of the
        dense scores, which the finalist margin absorbs.

        The same in three steps, for a caller that runs the products elsewhere (a worker runs
        them on a thread while its event loop plans and finishes other batches):
        `finish(products(plan(requests)))`.
        """
        batch = self.plan(requests)
        self.products(batch)
        return self.finish(batch)

    def plan(self, requests: Sequence[RankRequest]) -> "RankBatch":
        """Everything of the requests but the matrix products, which only the requests the bound
        of `_bounded` cannot answer need (the caller's thread)."""
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
                    top = self._bounded(plan, x, lo, hi) if bounding else None
                    if top is not None:
                        batch.bounded[i] = top
                    else:
                        X.append((plan.coef.factor * x).astype(np.float32))
            if hi > lo and X:
                # one request keeps the matvec, so that a lone request (and the evaluator) is
                # bit for bit what it was before batching
                batch.factors[(lo, hi)] = X[0] if len(X) == 1 else np.stack(X)
        return batch

    def products(self, batch: "RankBatch") -> None:
        """The factor term of every planned request: one matrix product per item range, nothing
        else — numpy releases the GIL for it, so it may run on another thread."""
        if batch.ranker is not self:
            raise ValueError("a batch is scored by the ranker that planned it")
        batch.scores = {(lo, hi): X @ self._Yt[:, lo:hi] for (lo, hi), X in batch.factors.items()}

    def finish(self, batch: "RankBatch") -> list[Recommendations]:
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
                    top = self._perm[_top_indices(s, plan.request.k + _MARGIN) + lo]
                out[i] = self._finish(plan, x, top)
        return out  # type: ignore[return-value]

    def _vector(self, fold: "_FoldIn | None") -> np.ndarray | None:
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

    def _plan(self, request: RankRequest) -> "_Plan | Recommendations":
        """Everything of one request but the dense pass (or its answer, when it needs none)."""
        profile, k, popularity, now = request.profile, request.k, request.popularity, request.now
        category, explain, user_id = request.category, request.explain, request.user_id
        if k <= 0:
            return Recommendations(user_id, model_version=self.version)
        if profile is None or profile.count <= 0 or not profile.w["item"] or profile.last_ts is None:
            return self._cold(k, popularity, category, explain, user_id)
        p = self.params
        pp = request.profile_params
        long_term = request.long_term
        iw = profile.weights("item", pp, now)
        dw = profile.weights("domain", pp, now)
        rw = profile.weights("overall", pp, now)
        lam = _layer_weights(profile, dw, p, now, pp, request.domain_share)
        l_item, l_dom, l_over = lam["item"], lam["domain"], lam["overall"]
        own_items = list(iw)
        own_w = np.fromiter(iw.values(), np.float64, len(own_items))
        iw_max = float(own_w.max()) if own_items else 0.0
        dw_max = max(dw.values(), default=0.0)
        rw_max = max(rw.values(), default=0.0)
        rho = repeat_propensity(profile, p, pp, request.revisit_rate)
        c_own = l_item * p.item_own_weight * rho
        c_seen = l_item * p.seen_penalty * (1.0 - rho) if p.repeat_prior is not None else 0.0
        # ŵ_item(j) plus its recency, per own item j (in the item layer's order)
        own = own_w / iw_max if iw_max > 0 else None
        if p.recency_weight > 0 and own is not None:
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
        own_of = dict(zip(own_items, own.tolist())) if own is not None else {}
        c_fac = l_item * p.item_factor_weight
        eps = p.root_floor

        # the user's items in the model, looked up once: for the fold-in and as candidates
        own_rows = self._rows(own_items)
        # user vector: fold-in of the current item layer, blended with the long-term one
        fold: _FoldIn | None = None
        if self.model is not None and c_fac > 0:
            lt = long_term
            if lt is not None and np.shape(lt) != (self.dims,):
                lt = None  # a vector of another model: ignore
            known = own_rows >= 0
            fold = _FoldIn(own_rows[known], own_w[known], sum(iw.values()), lt)

        lo, hi = self._filter(category)
        purchased = profile.purchases if request.exclude_purchased else {}
        if request.exclude_seen:
            purchased = {**purchased, **dict.fromkeys(profile.w["item"], 0.0)}

        # sparse candidates: the shop's popular pool, the pools of the request's category and of
        # the user's top categories (each located once per popularity state), then the user's
        # own items; each item once, with its global rank
        pool = self._pool(popularity, p.popular_pool)
        scopes = []
        if category is not None:
            scopes.append(self._pool(popularity, p.popular_pool, category))
        if p.pool_categories > 0 and p.category_pool > 0 and dw:
            for _, c in heapq.nlargest(p.pool_categories, zip(dw.values(), dw)):  # ties: the larger key
                scopes.append(self._pool(popularity, p.category_pool, c))
        in_pool = pool.at
        at: dict[str, int] = {}  # candidate → its index, beyond the shop's pool
        js = list(pool.ids)
        parts = [(pool.ranks, pool.pos, pool.ci, pool.ri)]
        ys = [pool.Y]  # each part's factor rows; the user's own items' are gathered when needed
        outside = list(pool.outside)
        for scope in scopes:
            part = self._beyond(scope, pool)
            ids, take, unknown = part.ids, slice(None), part.outside
            if at and not at.keys().isdisjoint(ids):  # scopes that share items (a root and its category)
                take = [q for q, j in enumerate(ids) if j not in at]
                ids = [ids[q] for q in take]
                outside_part = set(part.outside)
                unknown = [n for n, q in enumerate(take) if q in outside_part]
            if not ids:
                continue
            first = len(js)
            at.update(zip(ids, range(first, first + len(ids))))
            js += ids
            parts.append((part.ranks[take], part.pos[take], part.ci[take], part.ri[take]))
            ys.append(None if part.Y is None else part.Y[take])  # no rows kept where the bound is not tried
            outside.extend(first + q for q in unknown)
        # each own item's candidate index; those in no pool are added as candidates of their own
        in_pool_get, at_get = in_pool.get, at.get
        own_at = np.fromiter(map(in_pool_get, own_items, map(at_get, own_items, itertools.repeat(-1))), np.int64, len(own_items))
        new = np.flatnonzero(own_at < 0)
        if new.shape[0]:
            more = [own_items[q] for q in new.tolist()]
            own_at[new] = np.arange(len(js), len(js) + len(more))
            m_pos, m_ci, m_ri, m_outside = self._locate(more, own_rows[new])
            outside.extend(t + len(js) for t in m_outside)
            at.update(zip(more, range(len(js), len(js) + len(more))))
            js += more
            parts.append((np.asarray(popularity.ranks(more), np.float64), m_pos, m_ci, m_ri))
        nj = len(js)
        rank_a, pos_a, ci_a, ri_a = (np.concatenate(column) for column in zip(*parts))
        r_top = popularity.max_rank()
        if r_top > -math.inf and nj:
            pop_a = np.exp2(rank_a - r_top)
        else:
            pop_a = np.zeros(nj)
        own_a = np.zeros(nj)
        seen_a = np.zeros(nj)
        if own is not None:
            own_a[own_at] = own
            seen_a[own_at] = 1.0
        own_a *= c_own
        if c_seen:
            own_a -= c_seen * seen_a

        root_w = {ri: w / rw_max for r, w in rw.items() if (ri := self._root_index.get(r)) is not None} if rw_max > 0 else {}
        dom_w = {ci: w / dw_max for c, w in dw.items() if (ci := self._cat_index.get(c)) is not None} if dw_max > 0 else {}
        root_arr = np.zeros(len(self._root_ids))
        for ri, w in root_w.items():
            root_arr[ri] = w
        add_a = own_a + (l_over * (eps + (1.0 - eps) * root_arr[ri_a])) * pop_a
        extra: list[tuple[float, str]] = []
        for t in outside:
            j = js[t]
            ci, ri = int(ci_a[t]), int(ri_a[t])
            if j in purchased or not self._matches(ci, ri, category):
                continue
            extra.append((float(add_a[t]) + l_dom * dom_w.get(ci, 0.0), j))

        return _Plan(
            request=request,
            lam=lam,
            coef=_Coefficients(c_own, c_seen, c_fac, l_dom, l_over, eps),
            fold=fold,
            lo=lo,
            hi=hi,
            purchased=purchased,
            layers=(iw, dw, rw),
            own=own_of,
            by_category=dom_w,
            by_root=root_w,
            candidates=_Candidates(in_pool, at, pop_a, pos_a, add_a, extra, ci_a, ys),
        )

    def _bounded(self, plan: "_Plan", x: np.ndarray, lo: int, hi: int) -> np.ndarray | None:
        """The plan's dense finalists (model rows) from its candidates and the few items whose
        bound reaches them, or None when the bound leaves more than `bound_share` of the range
        (then the dense pass scores every item).

        An item j that is no candidate scores s(j) = a_fac·x·y_j + λ_domain·ŵ_domain(c(j)) ≤
        a_fac·‖x‖·‖y_j‖ + λ_domain·ŵ_domain(c(j)) (Cauchy–Schwarz).  Let L be the (k + margin)-th
        best candidate's score: an item whose bound is below L cannot be a finalist, and within
        each category those are the items under a norm threshold — the tail of the category in
        `_by_norm` order.  On a shop where a user's own items and the popular pools lead (the
        item layer's own-item term is large), that leaves a few hundred items to score instead
        of the whole catalogue."""
        n_final = plan.request.k + _MARGIN
        cand = plan.candidates
        if lo >= hi or cand.pos.shape[0] < n_final:
            return None
        c_fac, l_dom = plan.coef.factor, plan.coef.domain
        dom_of_cat = np.zeros(len(self._cat_ids))
        for ci, w in plan.by_category.items():
            dom_of_cat[ci] = l_dom * w
        xf = (c_fac * x).astype(np.float32)  # as the dense pass's row of X
        # the candidates' dense scores: the pools' rows are kept contiguous, the own items' gathered
        # (all of them, for pools located while the bound was not tried)
        fac = [Y @ xf for Y in cand.ys] if all(Y is not None for Y in cand.ys) else []
        pooled = sum(f.shape[0] for f in fac)
        if pooled < cand.pos.shape[0]:
            fac.append(self._rows_at(cand.pos[pooled:]) @ xf)
        inside = (cand.pos >= lo) & (cand.pos < hi)
        cpos = cand.pos[inside]
        if cpos.shape[0] < n_final:
            return None
        s_c = np.concatenate(fac)[inside] + dom_of_cat[cand.ci[inside]] + cand.add[inside]
        perm, marked = self._perm, self._marked
        purchased = self._purchased_positions(plan, lo, hi)
        if purchased.shape[0]:
            marked[purchased] = True
            s_c[marked[cpos]] = -np.inf
            marked[purchased] = False
        finite = s_c[np.isfinite(s_c)]
        if finite.shape[0] < n_final:
            return None
        L = float(np.partition(finite, finite.shape[0] - n_final)[finite.shape[0] - n_final])
        # per category of the range: the items whose bound reaches L, by norm; generous by 1e-6
        # of the scores' scale for the rounding of float32 factors and of the products
        if lo == 0 and hi == self.n:
            g_lo, g_hi = 0, self._seg_start.shape[0]
        else:
            g_lo, g_hi = np.searchsorted(self._seg_start, (lo, hi - 1), side="right").tolist()
            g_lo -= 1
        dom_of_seg = dom_of_cat[self._seg_cat[g_lo:g_hi]]
        a = c_fac * float(np.sqrt(x @ x))
        slack = 1e-6 * (abs(L) + l_dom + a * self._norm_max + 1.0)
        g = np.arange(g_lo, g_hi)
        need = (L - slack - dom_of_seg) / (a * (1.0 + 1e-6)) if a > 0 else np.where(dom_of_seg >= L - slack, 0.0, np.inf)
        q = g + 1.0 - np.clip(need / self._norm_scale, 0.0, 1.0)
        ends = np.searchsorted(self._norm_key, q, side="right")
        starts = self._seg_start[g_lo:g_hi]
        counts = np.maximum(ends - starts, 0)
        total = int(counts.sum())
        if total > self.bound_share * (hi - lo):
            return None
        if total:
            offsets = np.repeat(starts - np.cumsum(counts) + counts, counts)
            extra = self._by_norm[offsets + np.arange(total)]
            marked[cpos] = True
            marked[purchased] = True
            extra = extra[~marked[extra]]
            marked[cpos] = False
            marked[purchased] = False
            s_e = self._Y[perm[extra]] @ xf + dom_of_cat[self._dense_cat[extra]]
            pos = np.concatenate((cpos, extra))
            score = np.concatenate((s_c, s_e))
        else:
            pos, score = cpos, s_c
        return perm[pos[_top_indices(score, n_final)]]

    def _purchased_positions(self, plan: "_Plan", lo: int, hi: int) -> np.ndarray:
        """Dense positions, within lo..hi, of the items the request leaves out."""
        if not plan.purchased:
            return np.zeros(0, np.int64)
        rows = self._rows(list(plan.purchased))
        pos = self._inv[rows[rows >= 0]]
        return pos[(pos >= lo) & (pos < hi)]

    def _add_sparse(self, plan: "_Plan", s: np.ndarray, lo: int, hi: int) -> None:
        """Adds to the dense scores s (of items lo..hi) the plan's domain and sparse terms, and
        −inf for its purchases."""
        l_dom = plan.coef.domain
        if l_dom > 0:
            cat_range = self._cat_range
            if lo == 0 and hi == self.n:  # no filter: every category's range as it is
                for ci, w in plan.by_category.items():
                    a, b = cat_range[ci]
                    if a < b:
                        s[a:b] += l_dom * w  # a Python float, added as float32 (NEP 50)
            else:
                for ci, w in plan.by_category.items():
                    a, b = cat_range[ci]
                    a, b = max(a, lo), min(b, hi)
                    if a < b:
                        s[a - lo : b - lo] += l_dom * w
        pos_a, add_a = plan.candidates.pos, plan.candidates.add
        mask = (pos_a >= lo) & (pos_a < hi) & (add_a != 0)
        s[pos_a[mask] - lo] += add_a[mask].astype(np.float32)
        purchased = self._purchased_positions(plan, lo, hi)
        if purchased.shape[0]:
            s[purchased - lo] = -np.inf

    def _finish(self, plan: "_Plan", x: np.ndarray | None, dense: np.ndarray | None) -> Recommendations:
        """The top k of one plan from its user vector, the model rows of its dense finalists and
        its candidates outside the model, with exact contributions."""
        k = plan.request.k
        c_own, c_seen, c_fac, l_dom, l_over, eps = plan.coef
        own_of, dom_w, root_w, candidates = plan.own, plan.by_category, plan.by_root, plan.candidates
        # the dense finalists (model rows) and the best candidates outside the model, each with
        # its row (−1 outside), category and root index; then exact contributions
        finalists: list[tuple[str, int, int, int]] = []
        if dense is not None:
            ids = self._ids
            dense_rows = dense.tolist()
            finalists.extend(zip([ids[r] for r in dense_rows], dense_rows, self._item_cat[dense].tolist(),
                                 self._item_root[dense].tolist()))
        for _, j in heapq.nlargest(k + _MARGIN, candidates.outside):
            _, ci, ri = self._resolve(j)
            finalists.append((j, -1, ci, ri))

        Y = self._Y
        in_pool, in_more, pop = candidates.in_pool, candidates.in_more, candidates.pop
        rows: list[tuple[float, str, dict[str, float], dict]] = []
        for j, row, ci, ri in finalists:
            own = c_own * own_of.get(j, 0.0) - (c_seen if j in own_of else 0.0)
            fac = 0.0
            if x is not None and row >= 0:
                fac = c_fac * float(np.dot(x, Y[row]))
            dom = l_dom * dom_w.get(ci, 0.0)
            t = in_pool.get(j)
            if t is None:
                t = in_more.get(j)
            over = l_over * (eps + (1.0 - eps) * root_w.get(ri, 0.0)) * (float(pop[t]) if t is not None else 0.0)
            contrib = {"item": own + fac, "domain": dom, "overall": over}
            score = contrib["item"] + contrib["domain"] + contrib["overall"]
            rows.append((score, j, contrib, {"own": own, "fac": fac, "ci": ci, "ri": ri}))
        rows.sort(key=lambda r: (-r[0], r[1]))
        rows = rows[:k]

        because: list[list[str]] = []
        if plan.request.explain:
            because = self._explain(rows, *plan.layers, x)
        else:
            because = [[] for _ in rows]
        return Recommendations(
            user_id=plan.request.user_id,
            items=[r[1] for r in rows],
            scores=[r[0] for r in rows],
            layers=[r[2] for r in rows],
            because=because,
            cold_start=False,
            layer_weights=plan.lam,
            model_version=self.version,
        )

    # -- explanations -------------------------------------------------------------
    def _explain(self, rows, iw, dw, rw, x) -> list[list[str]]:
        user_rows: list[int] = []
        user_items: list[str] = []
        if x is not None:
            for i in iw:
                row = self._index.get(i)
                if row is not None:
                    user_rows.append(row)
                    user_items.append(i)
        Yu = self._Y[user_rows] if user_rows else None
        wu = np.asarray([iw[i] for i in user_items], np.float64)
        out = []
        for _, j, contrib, parts in rows:
            reasons: list[tuple[float, str]] = []
            if parts["own"] > 0:
                reasons.append((parts["own"], f"your item {j} (w {iw[j]:.1f})"))
            if parts["fac"] > 0:
                text = "your long-term taste"
                pos = self._resolve(j)[0]
                if Yu is not None and pos >= 0:
                    sims = (Yu @ self._Y[self._perm[pos]]).astype(np.float64) * wu
                    for idx in np.argsort(-sims, kind="stable")[:3].tolist():
                        if sims[idx] > 0 and user_items[idx] != j:
                            i = user_items[idx]
                            text = f"like {i} (w {iw[i]:.1f})"
                            break
                reasons.append((parts["fac"], text))
            if contrib["domain"] > 0:
                c = self._cat_ids[parts["ci"]]
                reasons.append((contrib["domain"], f"your category {c} (w {dw.get(c, 0.0):.1f})"))
            if contrib["overall"] > 0:
                r = self._root_ids[parts["ri"]]
                reasons.append((contrib["overall"], f"popular in {r}" if rw.get(r, 0.0) > 0 else "popular now"))
            reasons.sort(key=lambda t: -t[0])
            out.append([t for _, t in reasons[: self.params.explain_reasons]])
        return out

    # -- cold start -----------------------------------------------------------------
    def _cold(self, k: int, popularity: Popularity, category: str | None, explain: bool, user_id) -> Recommendations:
        """Recent popular items (global or within `category`), scored π(j), all from the overall layer."""
        r_top = popularity.max_rank()
        if category is None:
            items, ranks = popularity.top_ranked(k)
            picked = list(zip(items, ranks))
        else:
            # the category's own pool, then (e.g. for a root) the shop's popular pool filtered by
            # the catalog — bounded, so that a category nobody has costs one pass over that pool,
            # not over every item ever seen; every score is the item's global popularity
            picked = []
            seen: set[str] = set()
            for j in popularity.top_ranked(max(k, self.params.popular_pool), category)[0]:
                _, ci, ri = self._resolve(j)
                if self._matches(ci, ri, category):
                    seen.add(j)
                    picked.append((j, popularity.rank(j)))
            found = 0
            if len(picked) < k:
                for j, r in zip(*popularity.top_ranked(popularity.pool_size)):
                    if j in seen:
                        continue
                    _, ci, ri = self._resolve(j)
                    if self._matches(ci, ri, category):
                        seen.add(j)
                        picked.append((j, r))
                        found += 1
                        if found >= k:
                            break
            picked.sort(key=lambda t: (-t[1], t[0]))
            picked = picked[:k]
        scores = [2.0 ** (r - r_top) for _, r in picked]
        reason = "popular now" if category is None else f"popular in {category}"
        return Recommendations(
            user_id=user_id,
            items=[j for j, _ in picked],
            scores=scores,
            layers=[{"item": 0.0, "domain": 0.0, "overall": s} for s in scores],
            because=[[reason] if explain else [] for _ in picked],
            cold_start=True,
            layer_weights={"item": 0.0, "domain": 0.0, "overall": 1.0},
            model_version=self.version,
        )


def _top_indices(s: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n largest finite values of s (fewer if s has fewer), exactly, in no order.

    Long arrays are cut by group maxima first.  Split the first `_GROUPS`·g values into g
    groups of `_GROUPS` (group j: indices j, j + g, j + 2g, …, so that the maxima are one
    vectorised pass) and let t be the n-th largest group maximum: at least n values are ≥ t,
    so every one of the n largest is ≥ t and lies in a group whose maximum is ≥ t, or in the
    short tail after the last whole row — a few groups instead of a scan of every index.
    Whenever that saves nothing (ties, −inf rows) it falls back to a full argpartition.
    """
    m = s.shape[0]
    if m <= n:
        top = np.arange(m)
    else:
        top = None
        g = m // _GROUPS
        if g >= 64 and g > n:
            maxes = np.fmax.reduce(s[: g * _GROUPS].reshape(_GROUPS, g), axis=0)  # NaN-blind
            t = np.partition(maxes, g - n)[g - n]
            if np.isfinite(t):
                groups = np.flatnonzero(maxes >= t)
                if groups.shape[0] <= g // 8:
                    idx = (_GROUP_ROWS[:, None] * g + groups).ravel()
                    if g * _GROUPS < m:
                        idx = np.concatenate((idx, np.arange(g * _GROUPS, m)))
                    idx = idx[s[idx] >= t]
                    if idx.shape[0] >= n:
                        top = idx[np.argpartition(s[idx], idx.shape[0] - n)[idx.shape[0] - n :]]
        if top is None:  # NaN (which argpartition takes for the largest) as −inf
            top = np.argpartition(np.fmax(s, -np.inf), m - n)[m - n :]
    return top[np.isfinite(s[top])]


_GROUPS = 64
_MARGIN = 8  # finalists beyond k: the dense scores' float32 rounding must not change the top k
_POOLS_KEPT = 4096  # located pools per ranker (≈ 10 KB each at 50 items)
_GROUP_ROWS = np.arange(_GROUPS)


# -- as text (STRATA_RANK_PARAMS, strata evaluate --rank-params) -------------------------
def parse_rank_params(text: str | None, base: RankParams | None = None) -> RankParams:
    """`RankParams` from "name=value,…" (tuples as a/b/c), e.g. "item_own_weight=3,base_weights=0.6/0.2/0.2"."""
    base = base or RankParams()
    if not text:
        return base
    fields = RankParams.__dataclass_fields__
    changes: dict = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in fields or name in ("alpha", "regularization", "layers"):
            tunable = ", ".join(n for n in fields if n not in ("alpha", "regularization", "layers"))
            raise ValueError(f"bad rank parameter {part!r}; use name=value with name one of {tunable}")
        current = getattr(base, name)
        try:
            if value.strip().lower() == "none" and name == "repeat_prior":
                changes[name] = None
            elif isinstance(current, bool):
                changes[name] = value.strip().lower() in ("1", "true", "yes")
            elif isinstance(current, tuple):
                changes[name] = tuple(float(x) for x in value.split("/"))
            elif isinstance(current, int) and not isinstance(current, bool):
                changes[name] = int(value)
            else:
                changes[name] = float(value)
        except ValueError:
            raise ValueError(f"bad value for rank parameter {name}: {value!r}") from None
    return replace(base, **changes)


def format_rank_params(params: RankParams, base: RankParams | None = None) -> str:
    """The inverse of `parse_rank_params`: the fields that differ from `base`."""
    base = base or RankParams()
    parts = []
    for name in params.__dataclass_fields__:
        v = getattr(params, name)
        if v != getattr(base, name):
            text = "none" if v is None else str(int(v)) if isinstance(v, bool) else "/".join(f"{x:g}" for x in v) if isinstance(v, tuple) else f"{v:g}"
            parts.append(f"{name}={text}")
    return ",".join(parts)


__all__ = [
    "LAYERS",
    "RankParams",
    "RankBatch",
    "RankRequest",
    "Ranker",
    "ShopRates",
    "Recommendations",
    "blend_user_vector",
    "format_rank_params",
    "parse_rank_params",
    "layer_weights",
    "repeat_propensity",
]
