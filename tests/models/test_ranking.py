"""The layered scorer (models/ranking/): layer weights, interest regression, recommendations."""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from strata.models.catalog import Catalog
from strata.models.events import EVENT_TYPES, Event
from strata.models.popularity import DAY, Popularity
from strata.models.profile import Profile, ProfileParams
from strata.models.ranking import (
    RankParams,
    RankRequest,
    Ranker,
    Recommendations,
    blend_user_vector,
    layer_weights,
)
from strata.models.ranking.bound import top_indices

PP = ProfileParams(dedup_horizon_s=365 * 86_400.0)  # profiles built from events in any order
RP = RankParams()
T0 = 1_600_000_000.0

# A small world: roots rA, rB; categories a1 a2 under rA, b1 b2 under rB, and "x" with no tree.
CATS = {"a1": "rA", "a2": "rA", "b1": "rB", "b2": "rB"}
ITEMS = {f"{c}-{n}": c for c in ("a1", "a2", "b1", "b2") for n in range(10)}
ITEMS.update({"x-0": "x", "x-1": "x"})
CATALOG = Catalog(dict(ITEMS), {"rA": None, "rB": None, **CATS})


class StandInFactors:
    """The FactorModel interface: item_ids, Y, index, YtY, fold_in (docs/design.md §3 formula)."""

    def __init__(self, item_ids, Y, version="v-test"):
        self.version = version
        self.item_ids = tuple(item_ids)
        self.Y = np.asarray(Y, np.float32)
        self.index = {i: n for n, i in enumerate(self.item_ids)}
        self.YtY = self.Y.T.astype(np.float64) @ self.Y.astype(np.float64)
        self.params = None

    def fold_in(self, item_weights, alpha, regularization):
        rows = [(self.index[i], w) for i, w in item_weights.items() if i in self.index]
        if not rows:
            return None
        idx = np.array([r for r, _ in rows])
        c = 1.0 + alpha * np.array([w for _, w in rows])
        Yu = self.Y[idx].astype(np.float64)
        A = self.YtY + (Yu.T * (c - 1.0)) @ Yu + regularization * np.eye(self.Y.shape[1])
        return np.linalg.solve(A, Yu.T @ c)


def _model(exclude=("x-0", "x-1"), seed=0) -> StandInFactors:
    """Factors with one direction per root (plus noise): items of a root look alike."""
    rng = np.random.default_rng(seed)
    ids = [i for i in ITEMS if i not in exclude]
    dims = 6
    Y = rng.normal(0, 0.05, (len(ids), dims))
    for n, i in enumerate(ids):
        root = CATS.get(ITEMS[i], "x")
        Y[n, {"rA": 0, "rB": 1, "x": 2}[root]] += 0.6
        Y[n, 3 + ("a1", "a2", "b1", "b2", "x").index(ITEMS[i]) % 3] += 0.2
    return StandInFactors(ids, Y)


def _ranker(model="default", params=RP) -> Ranker:
    return Ranker(_model() if model == "default" else model, CATALOG.category_of, CATALOG.root_of, params)


def _profile(events: list[tuple[str, str, float]], user="u") -> Profile:
    """events: (item, type, ts)."""
    profile = Profile()
    for n, (item, etype, ts) in enumerate(events):
        domain, overall = CATALOG.layers_for(item, None)
        profile.learn(Event(f"{user}-{n}", user, item, etype, ts), domain, overall, PP)
    return profile


def _popularity(counts: dict[str, int], ts=T0) -> Popularity:
    pop = Popularity(RP.popularity_half_life_s)
    for item, n in counts.items():
        for _ in range(n):
            pop.learn(item, CATALOG.category_of(item), 1.0, ts)
    return pop


POP = _popularity({i: (n * 7) % 11 + 1 for n, i in enumerate(ITEMS)})


def _recommend(ranker, profile, **kw) -> Recommendations:
    kw.setdefault("k", 10)
    kw.setdefault("popularity", POP)
    kw.setdefault("now", (profile.last_ts if profile and profile.last_ts else T0) + 60)
    return ranker.recommend(profile, profile_params=PP, **kw)


# -- layer weights ------------------------------------------------------------------
profile_events_st = st.lists(
    st.tuples(st.sampled_from(sorted(ITEMS)), st.sampled_from(EVENT_TYPES), st.floats(0, 20 * DAY, allow_nan=False)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(profile_events_st, st.floats(0, 200 * DAY, allow_nan=False))
def test_layer_weights_sum_to_one(events, later):
    profile = _profile([(i, t, T0 + dt) for i, t, dt in events])
    lam = layer_weights(profile, RP, profile.last_ts + later, PP)
    assert set(lam) == {"item", "domain", "overall"}
    assert all(0.0 <= v <= 1.0 for v in lam.values())
    assert math.isclose(sum(lam.values()), 1.0, rel_tol=1e-12)


def test_no_profile_leans_entirely_on_overall():
    assert layer_weights(None, RP, T0, PP) == {"item": 0.0, "domain": 0.0, "overall": 1.0}
    assert layer_weights(Profile(), RP, T0, PP) == {"item": 0.0, "domain": 0.0, "overall": 1.0}


def test_focused_user_leans_on_domain_more_than_an_exploratory_one():
    focused = _profile([(f"a1-{n % 10}", "view", T0 + n) for n in range(20)])
    spread_items = [f"{c}-{n % 10}" for n in range(5) for c in ("a1", "a2", "b1", "b2")]
    exploratory = _profile([(i, "view", T0 + n) for n, i in enumerate(spread_items)])
    now = T0 + 100
    f, e = layer_weights(focused, RP, now, PP), layer_weights(exploratory, RP, now, PP)
    assert f["item"] == pytest.approx(e["item"])  # same count, same freshness
    assert f["domain"] > e["domain"]
    assert f["overall"] < e["overall"]


def test_fresh_user_leans_on_fine_layers_and_a_stale_one_on_overall():
    profile = _profile([(f"b1-{n % 10}", "click", T0 + n * 60) for n in range(30)])
    fresh = layer_weights(profile, RP, profile.last_ts, PP)
    week = layer_weights(profile, RP, profile.last_ts + 7 * DAY, PP)
    stale = layer_weights(profile, RP, profile.last_ts + 90 * DAY, PP)
    assert fresh["item"] > week["item"] > stale["item"]
    assert fresh["overall"] < week["overall"] < stale["overall"]
    # the domain layer (H = 14 d) takes over part of what the item layer (3 d) gives up, and
    # passes it on to overall as it fades in turn
    assert week["domain"] > stale["domain"]
    share = [lam["domain"] / (1.0 - lam["item"]) for lam in (fresh, week, stale)]
    assert share[0] > share[1] > share[2]
    assert stale["overall"] > 0.9
    # a fresh, focused, busy user keeps (almost) the base weights
    assert fresh["item"] == pytest.approx(RP.base_weights[0] * 30 / (30 + RP.evidence_n0), rel=1e-3)


def test_more_evidence_moves_weight_to_the_item_layer():
    few = _profile([("a1-1", "view", T0)])
    many = _profile([(f"a1-{n % 10}", "view", T0 - 10 + n / 10) for n in range(100)])
    lf, lm = layer_weights(few, RP, T0, PP), layer_weights(many, RP, T0, PP)
    assert lm["item"] > lf["item"] and lm["domain"] < lf["domain"] and lm["overall"] < lf["overall"]
    # what the item layer leaves is split alike: both users are fresh and focused on a1
    assert lf["domain"] / lf["overall"] == pytest.approx(lm["domain"] / lm["overall"])


# -- interest regression -----------------------------------------------------------------
def test_blend_leans_on_long_term_without_evidence_and_on_live_with_plenty():
    live, long = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    assert np.allclose(blend_user_vector(live, long, 0.0, RP), long)
    rich = blend_user_vector(live, long, 1e9, RP)
    assert np.allclose(rich, live, atol=1e-6)
    half = blend_user_vector(live, long, RP.blend_k0, RP)
    assert np.allclose(half, [0.5, 0.5])
    w = [blend_user_vector(live, long, e, RP)[0] for e in (0.1, 1, 5, 50)]
    assert w == sorted(w)
    assert blend_user_vector(None, None, 3.0, RP) is None
    assert np.array_equal(blend_user_vector(None, long, 3.0, RP), long)
    assert np.array_equal(blend_user_vector(live, None, 3.0, RP), live)
    with pytest.raises(ValueError):
        blend_user_vector(live, np.zeros(3), 1.0, RP)


# -- recommendations -----------------------------------------------------------------------
USERS = {
    "b-fan": [(f"b1-{n % 4}", "view", T0 + n * 30) for n in range(12)] + [("b2-3", "cart", T0 + 400), ("a1-0", "view", T0 + 410)],
    "a-fan": [(f"a{1 + n % 2}-{n % 5}", "click", T0 + n * 30) for n in range(15)],
    "mixed": [(i, "view", T0 + n * 60) for n, i in enumerate(["a1-1", "b2-2", "x-0", "a2-5", "b1-9", "x-1"])],
    "buyer": [("a1-2", "view", T0), ("a1-2", "cart", T0 + 10), ("a1-2", "purchase", T0 + 20), ("a1-3", "view", T0 + 30)],
}


@pytest.mark.parametrize("user", sorted(USERS))
@pytest.mark.parametrize("explain", [False, True])
def test_contributions_sum_to_the_score_and_results_are_sorted(user, explain):
    profile = _profile(USERS[user], user)
    recs = _recommend(_ranker(), profile, k=12, explain=explain, long_term=np.full(6, 0.1))
    assert not recs.cold_start and len(recs) == 12
    assert len(set(recs.items)) == len(recs.items)
    assert recs.scores == sorted(recs.scores, reverse=True)
    for score, layers in zip(recs.scores, recs.layers):
        assert set(layers) == {"item", "domain", "overall"}
        assert math.isclose(sum(layers.values()), score, rel_tol=1e-12, abs_tol=1e-12)
    assert math.isclose(sum(recs.layer_weights.values()), 1.0)
    assert len(recs.because) == len(recs.items)
    if explain:
        assert all(recs.because) and all(isinstance(r, str) for b in recs.because for r in b)
    d = recs.to_dict()
    assert d["model_version"] == "v-test" and d["items"][0]["item_id"] == recs.items[0]
    assert set(d["items"][0]) == {"item_id", "score", "layers", "because"}


def test_purchased_items_are_filtered_unless_asked_not_to():
    profile = _profile(USERS["buyer"], "buyer")
    ranker = _ranker()
    recs = _recommend(ranker, profile, k=len(ITEMS))
    assert "a1-2" not in recs.items and "a1-3" in recs.items
    kept = _recommend(ranker, profile, k=len(ITEMS), exclude_purchased=False)
    assert "a1-2" in kept.items
    # without the recency term, the item the user kept coming back to has the largest item layer
    weight_only = _recommend(_ranker(params=RankParams(recency_weight=0.0)), profile, k=len(ITEMS), exclude_purchased=False)
    n = weight_only.items.index("a1-2")
    assert weight_only.layers[n]["item"] == max(l["item"] for l in weight_only.layers)


@pytest.mark.parametrize("category, allowed", [("b2", {"b2"}), ("a1", {"a1"}), ("rA", {"a1", "a2"}), ("x", {"x"})])
def test_category_filter_only_returns_that_category(category, allowed):
    ranker = _ranker()
    for user in USERS:
        recs = _recommend(ranker, _profile(USERS[user], user), k=8, category=category)
        assert recs.items, (user, category)
        assert {ITEMS[i] for i in recs.items} <= allowed
    cold = _recommend(ranker, None, k=8, category=category)
    assert cold.cold_start and cold.items and {ITEMS[i] for i in cold.items} <= allowed
    assert _recommend(ranker, _profile(USERS["a-fan"]), k=5, category="no-such-category").items == []


def test_cold_start_returns_recent_popular_items_flagged():
    pop = _popularity({"b2-1": 9, "a1-4": 7, "x-1": 5, "a2-2": 3})
    ranker = _ranker()
    recs = _recommend(ranker, None, k=3, popularity=pop, explain=True)
    assert recs.cold_start
    assert recs.items == ["b2-1", "a1-4", "x-1"]  # x-1 has no factors: popularity reaches it
    assert recs.scores[0] == pytest.approx(1.0) and recs.scores == sorted(recs.scores, reverse=True)
    assert recs.layer_weights == {"item": 0.0, "domain": 0.0, "overall": 1.0}
    assert all(l["item"] == 0 and l["domain"] == 0 and l["overall"] == s for l, s in zip(recs.layers, recs.scores))
    assert recs.because == [["popular now"]] * 3
    assert _recommend(ranker, Profile(), k=2, popularity=pop).items == ["b2-1", "a1-4"]
    in_a = _recommend(ranker, None, k=5, popularity=pop, category="rA")
    assert in_a.items == ["a1-4", "a2-2"] and in_a.cold_start
    assert _recommend(ranker, None, k=3, popularity=Popularity()).items == []


def test_an_item_without_factors_is_reached_through_category_and_popularity():
    model = _model(exclude=("x-0", "x-1", "b1-new"))
    catalog = Catalog({**ITEMS, "b1-new": "b1"}, CATALOG.category_parent)
    ranker = Ranker(model, catalog.category_of, catalog.root_of, RP)
    pop = _popularity({"b1-new": 30, "a1-0": 10, "b1-1": 2})
    profile = _profile([(f"b1-{n % 3}", "view", T0 + n * 60) for n in range(10)])
    recs = ranker.recommend(profile, k=20, popularity=pop, now=profile.last_ts + 60, profile_params=PP, explain=True)
    assert "b1-new" in recs.items
    n = recs.items.index("b1-new")
    # without factors it still leads every item outside the user's category, popular a1-0 included
    assert all(ITEMS.get(j) == "b1" for j in recs.items[:n]), recs.items
    assert recs.layers[n]["domain"] > 0 and recs.layers[n]["overall"] > 0 and recs.layers[n]["item"] == 0
    assert any("b1" in r for r in recs.because[n])


def test_a_user_dominated_by_one_category_gets_mostly_its_items():
    profile = _profile([(f"b1-{n % 5}", "view", T0 + n * 60) for n in range(25)] + [("a1-1", "view", T0 + 10)])
    recs = _recommend(_ranker(), profile, k=10, exclude_purchased=True)
    cats = [ITEMS[i] for i in recs.items]
    assert cats.count("b1") >= 7, cats
    assert sum(c in ("b1", "b2") for c in cats) >= 8, cats


def test_factor_term_discovers_unseen_items_of_the_same_taste():
    # a user of b1 items only; with the domain and overall layers switched off, the factor term
    # still ranks unseen rB items (b2, same root direction) above rA items
    params = RankParams(base_weights=(1.0, 0.0, 0.0), item_own_weight=0.0)
    profile = _profile([(f"b1-{n % 10}", "view", T0 + n) for n in range(30)])
    recs = _recommend(_ranker(params=params), profile, k=15)
    assert {ITEMS[i] for i in recs.items} <= {"b1", "b2"}
    assert sum(ITEMS[i] == "b2" for i in recs.items) >= 5


def test_works_without_a_factor_model():
    ranker = Ranker(None, CATALOG.category_of, CATALOG.root_of, RP)
    profile = _profile(USERS["mixed"], "mixed")
    recs = _recommend(ranker, profile, k=9, explain=True)
    assert len(recs) == 9 and recs.model_version is None
    for score, layers in zip(recs.scores, recs.layers):
        assert math.isclose(sum(layers.values()), score, rel_tol=1e-12)
    own = [n for n, i in enumerate(recs.items) if i in profile.w["item"]]
    assert own and all(recs.layers[n]["item"] > 0 for n in own)  # own items come through the item layer
    assert any(recs.layers[n]["item"] == 0 and recs.layers[n]["overall"] > 0 for n in range(len(recs)))
    assert _recommend(ranker, None, k=2).cold_start


def test_recommendations_are_deterministic():
    results = []
    for _ in range(2):
        ranker = _ranker()
        out = []
        for user in sorted(USERS):
            recs = _recommend(ranker, _profile(USERS[user], user), k=10, explain=True)
            out.append((recs.items, recs.scores, recs.layers, recs.because))
        results.append(out)
    assert results[0] == results[1]


def test_long_term_vector_matters_only_without_fresh_evidence():
    ranker = _ranker(params=RankParams(base_weights=(1.0, 0.0, 0.0), item_own_weight=0.0))
    long_b = np.array([0.0, 1.5, 0.0, 0.0, 0.0, 0.0])  # a long-term rB fan
    nothing_popular = Popularity()
    thin = _profile([("a1-0", "view", T0)])
    recs = _recommend(ranker, thin, k=5, long_term=long_b, now=T0 + 20 * DAY, popularity=nothing_popular)
    assert all(CATS[ITEMS[i]] == "rB" for i in recs.items)
    rich = _profile([(f"a1-{n % 10}", "cart", T0 + n) for n in range(60)])
    recs = _recommend(ranker, rich, k=5, long_term=long_b, popularity=nothing_popular)
    assert all(CATS[ITEMS[i]] == "rA" for i in recs.items)
    # a vector of another model (wrong size) is ignored, not an error
    without = _recommend(ranker, rich, k=5, long_term=None, popularity=nothing_popular)
    assert _recommend(ranker, rich, k=5, long_term=np.ones(3), popularity=nothing_popular).scores == without.scores


def test_k_zero_and_small_k():
    ranker = _ranker()
    profile = _profile(USERS["a-fan"])
    assert _recommend(ranker, profile, k=0).items == []
    assert len(_recommend(ranker, profile, k=1)) == 1


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.integers(1, 60), st.sampled_from([0, 1, 3]), st.floats(0, 0.2),
       st.sampled_from([0.0, 0.001, 0.3]), st.integers(20_000, 70_000))
def test_top_indices_is_exact(seed, n, decimals, inf_share, nan_share, size):
    """The n largest finite values, exactly n of them, with ties, −inf and NaN among them and
    lengths that leave a tail outside the whole groups."""
    rng = np.random.default_rng(seed)
    s = rng.standard_normal(size).astype(np.float32)
    if decimals:
        s = np.round(s, decimals)  # ties
    s[rng.random(s.shape[0]) < inf_share] = -np.inf
    s[rng.random(s.shape[0]) < nan_share] = np.nan
    s[-1] = 100.0  # the largest value in the tail
    got = top_indices(s, n)
    finite = np.flatnonzero(np.isfinite(s))
    want_n = min(n, finite.shape[0])
    assert got.shape[0] == want_n == np.unique(got).shape[0]
    kth = np.sort(s[finite])[::-1][want_n - 1]
    assert np.all(s[got] >= kth)


def test_with_the_real_factor_model():
    from strata.models import factors
    stand_in = _model()
    model = factors.FactorModel(7, stand_in.item_ids, stand_in.Y, {"als": {"alpha": 3.0, "regularization": 0.2}})
    ranker = Ranker(model, CATALOG.category_of, CATALOG.root_of, RP)
    assert (ranker._alpha, ranker._reg) == (3.0, 0.2)  # the values the version was trained with
    assert Ranker(model, CATALOG.category_of, CATALOG.root_of, RankParams(alpha=1.0))._alpha == 1.0
    recs = _recommend(ranker, _profile(USERS["b-fan"]), k=8, explain=True)
    assert len(recs) == 8 and recs.model_version == 7
    for score, layers in zip(recs.scores, recs.layers):
        assert math.isclose(sum(layers.values()), score, rel_tol=1e-12, abs_tol=1e-12)
    assert sum(ITEMS[i].startswith("b") for i in recs.items) >= 6


def _alone(ranker: Ranker, request: RankRequest) -> Recommendations:
    fields = {name: getattr(request, name) for name in RankRequest.__dataclass_fields__}
    fields.pop("theta")  # the learned ranker's; this ranker has no θ
    return ranker.recommend(fields.pop("profile"), **fields)


def test_a_batch_answers_every_request_as_if_alone():
    """recommend_many shares the dense pass between requests of one item range; the answers
    (items, scores, contributions, reasons) are recommend's, in the requests' order."""
    ranker = _ranker()
    now = T0 + 3600
    profiles = {u: _profile(events, u) for u, events in USERS.items()}
    requests = [RankRequest(profiles[u], 12, POP, now, PP, user_id=u, long_term=np.full(6, 0.1)) for u in sorted(USERS)]
    requests += [
        RankRequest(profiles["b-fan"], 5, POP, now, PP, category="rA", explain=True),
        RankRequest(profiles["a-fan"], 5, POP, now, PP, category="a2"),
        RankRequest(profiles["buyer"], 8, POP, now, PP, exclude_purchased=False, revisit_rate=0.3, domain_share=0.7),
        RankRequest(None, 4, POP, now, PP, user_id="cold"),
        RankRequest(profiles["mixed"], 0, POP, now, PP),
    ]
    batch = ranker.recommend_many(requests)
    assert [b.to_dict() for b in batch] == [_alone(_ranker(), r).to_dict() for r in requests]
    assert ranker.recommend_many([]) == []


def test_the_products_may_run_on_another_thread_between_plan_and_finish():
    """A worker plans and finishes on its event loop and runs the products on a thread: the
    answers are recommend_many's; a batch is finished only after its products, by its ranker."""
    ranker = _ranker()
    now = T0 + 3600
    requests = [RankRequest(_profile(events, u), 6, POP, now, PP, user_id=u) for u, events in sorted(USERS.items())]
    requests.append(RankRequest(None, 3, POP, now, PP))
    planned = ranker.plan(requests)
    assert planned.factors and planned.scores is None
    with pytest.raises(ValueError, match="products"):
        ranker.finish(planned)
    with pytest.raises(ValueError, match="ranker that planned it"):
        _ranker().products(planned)
    with ThreadPoolExecutor(1) as pool:
        pool.submit(ranker.products, planned).result()
    got = ranker.finish(planned)
    assert [r.to_dict() for r in got] == [r.to_dict() for r in _ranker().recommend_many(requests)]


def _random_world(seed: int, users: int, params: RankParams = RP, spread_norms: bool = False):
    """3,000 items in 37 categories under 5 roots, random factors (norms spread 10× apart if
    asked), zipf popularity, users of 1-60 events (some carts and purchases): (a ranker
    factory, the popularity, the profiles)."""
    rng = np.random.default_rng(seed)
    ids = [f"i{n}" for n in range(3000)]
    cat_of = {i: f"c{n % 37}" for n, i in enumerate(ids)}
    Y = rng.normal(0, 0.3, (3000, 16))
    if spread_norms:
        Y *= rng.uniform(0.2, 2.0, (3000, 1))
    model = StandInFactors(ids, Y)
    make = lambda: Ranker(model, cat_of, lambda c: f"r{int(c[1:]) % 5}", params)  # noqa: E731
    pop = Popularity(params.popularity_half_life_s)
    for n, j in enumerate(rng.zipf(1.3, 4000) % 3000):
        pop.learn(ids[j], cat_of[ids[j]], 1.0, T0 + n)
    profiles = []
    for u in range(users):
        profile = Profile()
        for e, j in enumerate(rng.integers(0, 3000, int(rng.integers(1, 60)))):
            item = ids[int(j)]
            profile.learn(Event(f"{u}-{e}", f"u{u}", item, EVENT_TYPES[e % 5], T0 + 10 * e), cat_of[item], "r0", PP)
        profiles.append(profile)
    return make, pop, profiles


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 12))
def test_a_batch_over_a_larger_catalogue_matches_single_requests(seed, users):
    """Random factors over 3,000 items: the batch's matrix product rounds differently from a
    matvec, and the finalist margin keeps the answers the same (the dense pass for every
    request: no bound)."""
    make, pop, profiles = _random_world(seed, users)
    requests = [RankRequest(p, 10, pop, T0 + 5000, PP, user_id=f"u{u}") for u, p in enumerate(profiles)]
    ranker, single = make(), make()
    ranker.bound_share = single.bound_share = 0.0
    batch = ranker.recommend_many(requests)
    assert [b.to_dict() for b in batch] == [_alone(single, r).to_dict() for r in requests]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([100.0, 5.0, 0.0]), st.sampled_from([None, "c3", "r2"]),
       st.booleans(), st.integers(1, 30))
def test_the_bounded_dense_pass_finds_what_scoring_every_item_finds(seed, own_weight, category, exclude, k):
    """Skipping the items whose Cauchy–Schwarz bound cannot reach the candidates' (k + margin)-th
    score changes no answer: the same items, scores and layers as the dense pass over every
    item, with category and root filters, purchases left out or kept, any k."""
    make, pop, profiles = _random_world(seed, 8, RankParams(item_own_weight=own_weight), spread_norms=True)
    requests = [RankRequest(p, k, pop, T0 + 5000, PP, category=category, exclude_purchased=exclude, user_id=f"u{u}")
                for u, p in enumerate(profiles)]
    bounded, full = make(), make()
    bounded.bound_share, bounded.bound_min_items, full.bound_share = 1.0, 0, 0.0
    assert [r.to_dict() for r in bounded.recommend_many(requests)] == [r.to_dict() for r in full.recommend_many(requests)]


@settings(max_examples=10, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["c3", "c5", "r0", "r2"]))
def test_filtered_requests_whose_pools_share_items_beyond_the_shops(seed, category):
    """A category filter and the user's top categories can hold the same items beyond the shop's
    pool (a small shop pool makes it common): each is a candidate once, with the bound tried or
    not (below `bound_min_items` the pools keep no factor rows), and the answers are the dense
    pass's."""
    params = RankParams(popular_pool=5, category_pool=50, pool_categories=3)
    make, pop, profiles = _random_world(seed, 8, params)
    requests = [RankRequest(p, 10, pop, T0 + 5000, PP, category=category, user_id=f"u{u}") for u, p in enumerate(profiles)]
    bounded, small, full = make(), make(), make()
    bounded.bound_share, bounded.bound_min_items, full.bound_share = 1.0, 0, 0.0
    expected = [r.to_dict() for r in full.recommend_many(requests)]
    assert [r.to_dict() for r in small.recommend_many(requests)] == expected
    assert [r.to_dict() for r in bounded.recommend_many(requests)] == expected


def test_the_bound_skips_the_dense_pass_when_the_users_own_items_lead():
    """With the own-item term large (the default), the candidates' scores are out of reach of
    almost every other item: most requests are answered without a dense pass, and as the full
    pass answers them."""
    make, pop, profiles = _random_world(7, 40, spread_norms=True)
    requests = [RankRequest(p, 10, pop, T0 + 5000, PP, user_id=f"u{u}") for u, p in enumerate(profiles)]
    bounded, full = make(), make()
    bounded.bound_min_items, full.bound_share = 0, 0.0
    batch = bounded.plan(requests)
    assert len(batch.bounded) >= len(requests) // 2
    bounded.products(batch)
    assert [r.to_dict() for r in bounded.finish(batch)] == [r.to_dict() for r in full.recommend_many(requests)]
    assert not full.plan(requests).bounded
    assert not make().plan(requests).bounded  # 3,000 items: below `bound_min_items`, a dense pass is cheaper


def test_the_popular_pool_follows_the_popularity_it_was_built_from():
    """The ranker keeps the popular pool of the last popularity state it saw; a change to that
    popularity (or another popularity) is seen by the next request."""
    ranker = _ranker()
    profile = _profile(USERS["mixed"])
    pop = _popularity({i: 1 for i in ITEMS})
    before = _recommend(ranker, profile, popularity=pop, k=5)
    for _ in range(50):
        pop.learn("b2-7", "b2", 6.0, T0)
    after = _recommend(ranker, profile, popularity=pop, k=5)
    assert after.to_dict() == _recommend(_ranker(), profile, popularity=pop, k=5).to_dict()
    assert after.to_dict() != before.to_dict()
    assert _recommend(ranker, profile, k=5).to_dict() == _recommend(_ranker(), profile, k=5).to_dict()


@settings(max_examples=40, deadline=None)
@given(
    profile_events_st,
    st.lists(st.tuples(st.sampled_from(sorted(ITEMS)), st.integers(1, 9)), min_size=1, max_size=6),
    st.sampled_from([None, "a1", "b2", "rA", "x"]),
)
def test_a_ranker_that_keeps_its_pools_answers_as_a_fresh_one(events, learned, category):
    """The located pools (the shop's, a category's, the user's top categories') are kept per
    popularity state: after the popularity learns more, a long-lived ranker answers exactly as
    one built afterwards, with and without a category filter, items outside the model included."""
    params = RankParams(category_pool=3, pool_categories=2, popular_pool=8)
    kept = _ranker(params=params)
    profile = _profile([(i, t, T0 + dt) for i, t, dt in events])
    pop = _popularity({i: (n * 7) % 11 + 1 for n, i in enumerate(ITEMS)})
    for item, n in learned:
        _recommend(kept, profile, popularity=pop, category=category, explain=True)
        for _ in range(n):
            pop.learn(item, CATALOG.category_of(item), 2.0, T0)
        answer = _recommend(kept, profile, popularity=pop, category=category, explain=True)
        assert answer.to_dict() == _recommend(_ranker(params=params), profile, popularity=pop, category=category, explain=True).to_dict()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(sorted(ITEMS)), st.sampled_from(EVENT_TYPES), st.integers(0, 20)), min_size=1, max_size=40),
       st.booleans(), st.integers(0, 5000))
def test_the_own_item_term_is_its_definition(events, by_rank, later):
    """ŵ_item(j) plus the recency of j, for every own item: by rank (newest first, ties by the
    smaller item id) or by the decay of its age, as `models.ranking.score` defines it."""
    params = RankParams(recency_rank=by_rank)
    profile = _profile([(item, etype, T0 + 60 * minute) for item, etype, minute in events])
    now = profile.last_ts + later
    plan = _ranker(params=params)._plan(RankRequest(profile, 5, POP, now, PP))
    iw = profile.weights("item", PP, now)
    top = max(iw.values())
    times = profile.t["item"]
    if by_rank:
        newest_first = sorted(iw, key=lambda j: (-times[j], j))
        recency = {j: params.recency_weight / (1.0 + r) for r, j in enumerate(newest_first)}
    else:
        recency = {j: params.recency_weight * 2.0 ** (-max(0.0, now - times[j]) / params.recency_half_life_s) for j in iw}
    assert plan.own == {j: w / top + recency[j] for j, w in iw.items()}


def test_exclude_seen_leaves_out_every_item_the_user_touched():
    pop = Popularity(86_400.0)
    profile = Profile()
    t0 = 1_700_000_000.0
    for n in range(30):
        item, cat = f"i{n}", f"c{n % 3}"
        pop.learn(item, cat, 1.0, t0 + n)
        if n < 5:
            profile.learn(Event(f"e{n}", "u", item, "view", t0 + n, cat), cat, "r", ProfileParams())
    ranker = Ranker(None, lambda j: f"c{int(j[1:]) % 3}", lambda c: "r", RankParams())
    kw = dict(k=10, popularity=pop, now=t0 + 30, profile_params=ProfileParams())
    plain = ranker.recommend(profile, **kw)
    unseen = ranker.recommend(profile, exclude_seen=True, **kw)
    assert set(plain.items) & {f"i{n}" for n in range(5)}  # the user's own items lead by default
    assert not set(unseen.items) & {f"i{n}" for n in range(5)}
    assert len(unseen.items) == 10


def test_a_category_nobody_has_is_answered_from_the_popular_pool_alone(monkeypatch):
    """Cold start with `category=<missing>` never walks the whole popularity ranking."""
    pop = Popularity(86_400.0, pool_size=50)
    for n in range(2_000):
        pop.learn(f"i{n}", f"c{n % 10}", 1.0, 1_700_000_000.0 + n)
    monkeypatch.setattr(Popularity, "iter_ranked", lambda *a, **kw: (_ for _ in ()).throw(AssertionError("full scan")))
    ranker = Ranker(None, lambda j: f"c{int(j[1:]) % 10}", lambda c: "root", RankParams())
    kw = dict(k=100, popularity=pop, now=1_700_002_000.0, profile_params=ProfileParams())
    assert ranker.recommend(None, category="missing", **kw).items == []
    by_root = ranker.recommend(None, category="root", **kw).items
    assert len(by_root) == 50 and by_root[0] == "i1999"  # the root's items among the shop's pool
