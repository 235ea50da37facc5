"""The terms of the score, pinned by hand-computed values, and the online learner of their weights."""
from __future__ import annotations

import math

import numpy as np
import pytest

from strata.models.blend import TermRanker, UserState, factor_rows, first_n, n_smallest
from strata.models.factors import FactorModel
from strata.models.covisit import CoVisits
from strata.models.events import Event
from strata.models.popularity import Popularity
from strata.models.profile import Profile, ProfileParams
from strata.models.terms import TERMS, LearnParams, T, TermWeights, recency_onehot, theta0

T0 = 1_700_000_000.0
PP = ProfileParams()
CATS = {"v": "shoes", "a": "shoes", "b": "hats", "n": "hats", "p": "socks"}
ROOTS = {"shoes": "wear", "hats": "wear", "socks": "feet"}


def _state():
    """u viewed b (t0), a (t0 + 60 s) and is looking at v (t0 + 120 s); another shopper saw a then n."""
    profile = Profile()
    pop = Popularity(half_life_s=86_400.0)
    cv = CoVisits(window=20, neighbours=10)
    for n, (item, ts) in enumerate((("b", T0), ("a", T0 + 60), ("v", T0 + 120))):
        profile.learn(Event(f"e{n}", "u", item, "view", ts, CATS[item]), CATS[item], ROOTS[CATS[item]], PP)
    for item, ts in (("b", T0), ("a", T0 + 60), ("v", T0 + 120), ("a", T0 + 10), ("n", T0 + 20), ("p", T0 + 30), ("p", T0 + 40)):
        pop.learn(item, CATS[item], 1.0, ts)
    cv.learn("a", ["b"], T0 + 60)    # u: b then a
    cv.learn("v", ["a", "b"], T0 + 120)  # u: then v
    cv.learn("n", ["a"], T0 + 20)    # the other shopper: a then n
    ranker = TermRanker(CATS.get, ROOTS.get, cv, pop, PP)
    return ranker, UserState(["v", "a", "b"], profile), cv, pop


def test_candidates_leave_out_the_item_in_view_and_reach_covisited_items():
    ranker, user, _, _ = _state()
    ids, _ = ranker.candidates(user, T0 + 120, None)
    assert "v" not in ids
    assert {"a", "b", "n", "p"} <= set(ids)  # own, co-visited (n via a) and popular (p)


def test_every_term_by_hand():
    ranker, user, cv, pop = _state()
    now = T0 + 120
    ids, src = ranker.candidates(user, now, None)
    F = ranker.features(ids, src, user, now, None)
    f = {j: dict(zip(TERMS, F[n])) for n, j in enumerate(ids)}
    # own items: a has recency rank 0 (just before v), b rank 1; n, p are not the user's
    assert (f["a"]["own"], f["a"]["rec_0"], f["a"]["rec_1"]) == (1.0, 1.0, 0.0)
    assert (f["b"]["own"], f["b"]["rec_0"], f["b"]["rec_1"]) == (1.0, 0.0, 1.0)
    assert f["n"]["own"] == f["p"]["own"] == 0.0
    # own_w: views weigh 1, H_item = 3 d; a is 60 s younger than b, v (in view) is the maximum
    h = 3 * 86_400.0
    assert f["a"]["own_w"] == pytest.approx(2 ** (-60 / h), rel=1e-6)
    assert f["b"]["own_w"] == pytest.approx(2 ** (-120 / h), rel=1e-6)
    # fresh: 2^(−age / 1 h)
    assert f["a"]["fresh"] == pytest.approx(2 ** (-60 / 3600), rel=1e-6)
    assert f["b"]["fresh"] == pytest.approx(2 ** (-120 / 3600), rel=1e-6)
    # co-visitation, pair weights 2^((t − t0)/14 d) ≈ 1 here: C(a,b) = 1, C(v,a) = C(v,b) = 1, C(a,n) = 1
    # n_a = 3 (b, v, n), n_b = 2 (a, v), n_v = 2, n_n = 1; sim = C / √(n_i n_j)
    sim = {("v", "a"): 1 / math.sqrt(2 * 3), ("v", "b"): 1 / math.sqrt(2 * 2), ("a", "b"): 1 / math.sqrt(3 * 2),
           ("a", "n"): 1 / math.sqrt(3 * 1), ("b", "a"): 1 / math.sqrt(2 * 3)}
    for (i, j), s in sim.items():
        assert cv.similarity(i, j) == pytest.approx(s, rel=1e-4)
    # short window: v (a=1), a (a=½), b (a=¼); long window: every recent item with a = 1
    short = {"a": sim["v", "a"] + 0.25 * sim["b", "a"], "b": sim["v", "b"] + 0.5 * sim["a", "b"], "n": 0.5 * sim["a", "n"]}
    long = {"a": sim["v", "a"] + sim["b", "a"], "b": sim["v", "b"] + sim["a", "b"], "n": sim["a", "n"]}
    for j in ("a", "b", "n"):
        assert f[j]["cv_short"] == pytest.approx(short[j] / max(short.values()), rel=1e-4)
        assert f[j]["cv_long"] == pytest.approx(long[j] / max(long.values()), rel=1e-4)
    # domain: shoes holds v and a (two views), hats b (one, older): ŵ_hats ≈ ½; same_cat: shoes as v
    assert f["a"]["domain"] == pytest.approx(1.0, rel=1e-3)
    assert f["b"]["domain"] == pytest.approx(0.5, rel=1e-3)
    assert (f["a"]["same_cat"], f["b"]["same_cat"], f["n"]["same_cat"]) == (1.0, 0.0, 0.0)
    # popularity (H = 1 d): p has two events (t0 + 30, t0 + 40), the most → π(p) = 1;
    # n one event at t0 + 20: π(n) = 2^(−20/H) / (2^(−10/H) + 1) ≈ ½, both as of t0 + 40
    H = 86_400.0
    assert f["p"]["pop"] == pytest.approx(1.0)
    assert f["n"]["pop"] == pytest.approx(2 ** (-20 / H) / (2 ** (-10 / H) + 1), rel=1e-6)
    assert f["n"]["log_pop"] == pytest.approx(1 + math.log2(f["n"]["pop"]) / 16, rel=1e-6)
    # within hats, b (t0) is below n (t0 + 20): cat_pop(b) = 2^((0 − 20)/H); n leads its category
    assert f["n"]["cat_pop"] == pytest.approx(1.0)
    assert f["b"]["cat_pop"] == pytest.approx(2 ** (-20 / 86_400.0), rel=1e-6)
    # overall × pop: u's roots are all 'wear' (socks → feet is not u's): p gets 0
    assert f["p"]["overall_pop"] == 0.0
    assert f["n"]["overall_pop"] == pytest.approx(f["n"]["pop"], rel=1e-6)


def test_the_prior_weights_rank_the_user_s_latest_items_first():
    ranker, user, _, _ = _state()
    ids, src = ranker.candidates(user, T0 + 120, None)
    F = ranker.features(ids, src, user, T0 + 120, None)
    order = [ids[n] for n in np.argsort(-(F @ theta0()), kind="stable")]
    assert order[:2] == ["a", "b"]


def test_recency_buckets():
    assert [recency_onehot(r) for r in (0, 1, 2, 3, 4, 7, 8, 100)] == [
        "rec_0", "rec_1", "rec_2_3", "rec_2_3", "rec_4_7", "rec_4_7", "rec_8p", "rec_8p"]


def test_learned_weights_approach_a_known_mix():
    """A synthetic shop: the next item is drawn by softmax(θ*·f) over random candidates; the learner,
    started from zero, ends pointing where θ* points."""
    rng = np.random.default_rng(7)
    d = len(TERMS)
    true = np.zeros(d)
    true[[T["rec_0"], T["cv_short"], T["same_cat"], T["pop"]]] = [3.0, 2.0, 1.0, -1.0]
    learner = TermWeights(LearnParams(rate=0.05, l2=0.0), theta=np.zeros(d), seed=1)
    for _ in range(6000):
        F = rng.random((40, d))
        p = np.exp(F @ true)
        positive = int(rng.choice(40, p=p / p.sum()))
        learner.learn(F, positive, F @ learner.theta)
    got = learner.theta
    cosine = got @ true / (np.linalg.norm(got) * np.linalg.norm(true))
    assert cosine > 0.95, dict(zip(TERMS, got.round(2)))
    assert np.argmax(got) == T["rec_0"] and np.argmin(got) == T["pop"]


def test_a_miss_teaches_nothing():
    learner = TermWeights()
    before = learner.theta.copy()
    learner.learn(np.ones((5, len(TERMS))), None, np.zeros(5))
    assert learner.misses == 1 and learner.updates == 0
    assert np.array_equal(learner.theta, before)


@pytest.mark.parametrize("seed", range(20))
def test_first_n_is_the_head_of_a_stable_argsort(seed):
    """Ties (few distinct values) keep their index order, as in a stable sort of everything."""
    rng = np.random.default_rng(seed)
    v = rng.integers(0, 1 + seed % 7, int(rng.integers(0, 60))).astype(np.float64)
    for n in (1, 2, 5, 30, 100):
        assert first_n(v, n).tolist() == np.argsort(v, kind="stable")[:n].tolist()
        head = set(np.argsort(v, kind="stable")[:n].tolist())
        assert head <= set(n_smallest(v, n).tolist())


def factor_top(model: FactorModel, x: np.ndarray, items: list[str], n: int) -> list[str]:
    """The factor source by its definition: the n of `items` with factors that score best by x·y_j
    (ties: the earlier in `items`), one full stable sort."""
    rows = np.array([model.index.get(j, -1) for j in items])
    at = np.flatnonzero(rows >= 0)
    order = np.argsort(-(model.Y[rows[at]] @ x), kind="stable")[:n]
    return [items[i] for i in at[order].tolist()]


def test_the_factor_pool_is_shared_until_the_popularity_changes():
    """The factor source's pool is built once per state of the popularity (and model): the same
    between changes, built again after one; its top is `factor_top` over the popular items."""
    ranker, _, _, pop = _state()
    rng = np.random.default_rng(0)
    model = FactorModel(1, ("a", "b", "n", "p", "q"), rng.standard_normal((5, 4)).astype(np.float32), {})
    x = rng.standard_normal(4).astype(np.float32)
    pool = ranker.factor_pool(model)
    assert ranker.factor_pool(model) is pool
    assert pool.top(x, 3) == factor_top(model, x, pop.top_ranked(1000)[0], 3)
    pop.learn("q", "hats", 5.0, T0 + 200)
    again = ranker.factor_pool(model)
    assert again is not pool and "q" in again.items and "q" not in pool.items
    assert again.top(x, 5) == factor_top(model, x, pop.top_ranked(1000)[0], 5)
    other = FactorModel(2, model.item_ids, model.Y, {})
    assert ranker.factor_pool(other) is not again
    memo: dict[str, int] = {"a": 0}
    items = ["a", "zz", "p", "a", "q"]
    for _ in range(2):  # the rows as the index has them, looked up or kept
        assert factor_rows(model, items, memo).tolist() == factor_rows(model, items).tolist() == [0, -1, 3, 0, 4]
    assert memo == {"a": 0, "zz": -1, "p": 3, "q": 4}
