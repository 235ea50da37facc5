"""How much each layer counts for a user now, how often the user returns to their own items, and
the user vector the factor term reads (docs/design.md §3: "dynamic layer weights", ρ_u, "interest
regression").

All three are read off the profile at request time, so a user's weights follow their activity
without any state of their own.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from strata.models.profile import LAYERS, Profile, ProfileParams
from strata.models.ranking.params import RankParams


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
    return weights_of_layers(profile, profile.weights("domain", pp, now), params, now, pp, domain_share)


def weights_of_layers(
    profile: Profile, domain: Mapping[str, float], params: RankParams, now: float, pp: ProfileParams,
    domain_share: float | None = None,
) -> dict[str, float]:
    """`layer_weights` of a user with events, from their domain weights at `now` (which the
    ranker reads anyway)."""
    b_item = params.base_weights[0]
    mu = prior_domain_share(params) if domain_share is None else min(1.0, max(0.0, float(domain_share)))
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


def prior_domain_share(params: RankParams) -> float:
    """μ0 = b_domain / (b_domain + b_overall): the domain share before the shop's stream says."""
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

