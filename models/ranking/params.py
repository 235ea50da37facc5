"""Every knob of the layered scorer, and its text form (STRATA_RANK_PARAMS, `strata evaluate --rank-params`).

The fold-in's α and λ default to what the factor model was trained with (`fold_param`): a user
folded in with other values than the items were fitted with lands off the items' scale.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

from strata.models.popularity import DAY
from strata.models.profile import LAYERS

DEFAULT_ALPHA = 10.0  # fold-in fallbacks when neither RankParams nor the model say (= models.als defaults)
DEFAULT_REGULARIZATION = 0.05


@dataclass(frozen=True)
class RankParams:
    """Every knob of the scorer (the evaluation of docs/design.md §6 picks the defaults).

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

