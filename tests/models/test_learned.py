"""The served ranker: θ·f over the candidates, filters, cold start, explanations, batching, feedback."""
from __future__ import annotations

import numpy as np
import pytest

from strata.models.covisit import CoVisits
from strata.models.events import Event
from strata.models.factors import FactorModel
from strata.models.learned import LAYER_TERMS, LearnedRanker, feedback, user_state
from strata.models.popularity import Popularity
from strata.models.profile import Profile, ProfileParams
from strata.models.ranking import RankParams, RankRequest
from strata.models.terms import TERMS, T, TermWeights

T0 = 1_700_000_000.0
PP = ProfileParams()
CATS = {"v": "shoes", "a": "shoes", "b": "hats", "n": "hats", "p": "socks", "q": "socks"}
ROOTS = {"shoes": "wear", "hats": "wear", "socks": "feet"}


def _shop(model: FactorModel | None = None, theta: np.ndarray | None = None):
    """u viewed b, a, then v (in view) and bought b; another shopper went from a to n; p and q are popular."""
    profile = Profile()
    for n, (item, kind, ts) in enumerate((("b", "view", T0), ("b", "purchase", T0 + 30), ("a", "view", T0 + 60),
                                          ("v", "view", T0 + 120))):
        profile.learn(Event(f"e{n}", "u", item, kind, ts, CATS[item]), CATS[item], ROOTS[CATS[item]], PP)
    pop = Popularity(half_life_s=86_400.0)
    for item, w in (("p", 5.0), ("q", 4.0), ("a", 2.0), ("n", 1.0), ("b", 1.0), ("v", 1.0)):
        pop.learn(item, CATS[item], w, T0)
    cv = CoVisits(window=20, neighbours=10)
    cv.learn("a", ["b"], T0 + 60)
    cv.learn("v", ["a", "b"], T0 + 120)
    cv.learn("n", ["a"], T0 + 20)
    ranker = LearnedRanker(model, CATS.get, lambda c: ROOTS.get(c, "*"), cv, pop, TermWeights(theta=theta), PP)
    return ranker, profile, pop


def _request(profile, pop, **kw) -> RankRequest:
    return RankRequest(profile=profile, k=kw.pop("k", 10), popularity=pop, now=T0 + 120, profile_params=PP,
                       user_id="u", **kw)


def test_the_score_is_theta_dot_the_terms_and_the_layers_add_up_to_it():
    theta = np.zeros(len(TERMS))
    theta[T["rec_0"]], theta[T["cv_short"]], theta[T["same_cat"]], theta[T["pop"]] = 2.0, 1.0, 0.5, 0.25
    ranker, profile, pop = _shop(theta=theta)
    recs = ranker.recommend_many([_request(profile, pop, exclude_purchased=False, explain=True)])[0]
    by_item = dict(zip(recs.items, recs.scores))
    # Pairs (all ≈ 1: 60 s of a 14-day half-life): a–b, v–a, v–b, n–a, so n_a = 3, n_b = n_v = 2,
    # n_n = 1.  The short window is v, a, b with weights 1, ½, ¼: cv_short(a) = 1/√6 + ¼/√6 and
    # cv_short(b) = 1/2 + ½/√6, the largest, which normalises.  a: just before v (rec_0 = 1), the
    # same category as v, popularity 2/5 of the top item's.
    cv_a = (1 / 6 ** 0.5 + 0.25 / 6 ** 0.5) / (0.5 + 0.5 / 6 ** 0.5)
    assert by_item["a"] == pytest.approx(2.0 + cv_a + 0.5 + 0.25 * 2 / 5, rel=1e-4)
    assert recs.items[0] == "a"
    for score, layers in zip(recs.scores, recs.layers):
        assert sum(layers.values()) == pytest.approx(score, rel=1e-9, abs=1e-12)
    first = recs.layers[0]
    assert first["item"] == pytest.approx(2.0 + cv_a, rel=1e-4) and first["domain"] == pytest.approx(0.5, rel=1e-6)
    # each term's share, largest first, one line per kind of evidence
    share = 2.0 / by_item["a"]
    assert recs.because[0][0] == f"{share:.0%} you looked at it just before this one"
    assert recs.because[0][1] == f"{cv_a / by_item['a']:.0%} often visited with v"
    assert recs.because[0][2] == f"{0.5 / by_item['a']:.0%} same category (shoes) as the item in view"
    assert "v" not in recs.items  # the item in view is never recommended


def test_filters_purchased_seen_and_category():
    ranker, profile, pop = _shop()
    default = ranker.recommend_many([_request(profile, pop)])[0]
    assert "b" not in default.items  # bought
    seen = ranker.recommend_many([_request(profile, pop, exclude_seen=True)])[0]
    assert not {"a", "b", "v"} & set(seen.items)
    socks = ranker.recommend_many([_request(profile, pop, category="socks")])[0]
    assert socks.items and all(CATS[j] == "socks" for j in socks.items)
    wear = ranker.recommend_many([_request(profile, pop, category="wear")])[0]  # a root: every category under it
    assert set(wear.items) <= {"a", "n"} and wear.items


def test_a_user_with_no_profile_gets_popular_items_scored_by_theta():
    ranker, _, pop = _shop()
    recs = ranker.recommend_many([_request(None, pop, k=3)])[0]
    assert recs.cold_start
    assert recs.items == ["p", "q", "a"]  # by popularity: θ's popularity terms are all that apply
    assert all(layers["item"] == 0.0 for layers in recs.layers)  # no own items, co-visits or vector


def test_k_is_reached_beyond_the_candidate_pools():
    ranker, profile, pop = _shop()
    for n in range(200):
        pop.learn(f"x{n}", "socks", 0.5, T0)
        CATS[f"x{n}"] = "socks"
    try:
        recs = ranker.recommend_many([_request(profile, pop, k=120)])[0]
        assert len(recs.items) == 120 and len(set(recs.items)) == 120
    finally:
        for n in range(200):
            del CATS[f"x{n}"]


def _model(seed: int = 0) -> FactorModel:
    rng = np.random.default_rng(seed)
    items = tuple(CATS)
    return FactorModel(1, items, rng.standard_normal((len(items), 4)).astype(np.float32),
                       {"als": {"alpha": 10.0, "regularization": 0.05}})


def test_requests_ranked_together_get_the_answers_they_get_alone():
    ranker, profile, pop = _shop(model=_model())
    other = Profile()
    other.learn(Event("o1", "w", "n", "view", T0, "hats"), "hats", "wear", PP)
    requests = [_request(profile, pop, explain=True), _request(other, pop), _request(None, pop)]
    together = ranker.recommend_many(requests)
    alone = [ranker.recommend_many([r])[0] for r in requests]
    assert [(r.items, r.scores, r.because) for r in together] == [(r.items, r.scores, r.because) for r in alone]


def test_the_user_vector_leans_on_the_batch_vector_when_fresh_evidence_is_thin():
    model = _model()
    _, profile, _ = _shop()
    long_term = np.ones(4, np.float32)
    rp = RankParams()
    user = user_state(profile, model, long_term, T0 + 120, PP, rp)
    live = model.fold_in(profile.weights("item", PP, T0 + 120), 10.0, 0.05)
    e = sum(profile.weights("item", PP, T0 + 120).values())
    w = e / (e + rp.blend_k0)
    assert np.allclose(user.x, w * live + (1 - w) * long_term, atol=1e-6)
    assert user.recent == ["v", "a", "b"]


def test_feedback_is_a_step_towards_what_the_user_did_next():
    ranker, profile, pop = _shop()
    before = ranker.weights.theta.copy()
    step = feedback(ranker, profile, "n", T0 + 180, None)  # n: co-visited with a, never touched by u
    assert step is not None and step.shape == before.shape
    assert np.array_equal(ranker.weights.theta, before)  # a step is returned, not applied
    assert feedback(ranker, profile, "v", T0 + 180, None) is None  # the item in view: no feedback
    request = _request(profile, pop, exclude_purchased=False)
    assert ranker.recommend_many([request])[0].items[0] != "n"
    for _ in range(200):  # a shop whose shoppers always go on to n: θ learns to put it first
        ranker.weights.theta += feedback(ranker, profile, "n", T0 + 180, None)
    assert ranker.recommend_many([request])[0].items[0] == "n"


def test_every_term_belongs_to_one_layer():
    assert sorted(t for terms in LAYER_TERMS.values() for t in terms) == sorted(TERMS)


def test_an_event_pairs_with_the_last_few_distinct_items():
    cv = CoVisits(window=4, neighbours=100)
    assert cv.partners("x", ["x", "a", "b", "c", "d", "e"]) == ["a", "b", "c", "d"]
    assert cv.partners("b", ["a", "b", "c"]) == ["a", "c"]  # a revisit of b: never paired with itself


def test_a_served_list_teaches_theta_the_item_acted_on_over_those_passed_over():
    """list_feedback: the item acted on is the positive, the items shown and not touched since the
    list was served are the negatives, weighted by β(type) / β(click); an item touched since is no
    negative."""
    from strata.models.learned import list_feedback

    ranker, profile, _ = _shop()
    theta = ranker.weights.theta.copy()
    step = list_feedback(ranker, profile, ("p", "n", "a"), T0 + 100, "n", "click", T0 + 130, None)
    ids, F, _ = ranker.score(user_state(profile, None, None, T0 + 130, PP, ranker.rank_params), T0 + 130, extra=("n", "p", "a"))
    rows = {j: i for i, j in enumerate(ids)}
    # a was touched (viewed at T0 + 60) before the list was served at T0 + 100: a negative; p too
    expected = ranker.weights.step_pairs(F, rows["n"], [rows["p"], rows["a"]])
    assert np.allclose(step, expected)
    assert (step @ (F[rows["n"]] - F[rows["p"]])) > 0  # the positive moves up against a negative
    touched_since = list_feedback(ranker, profile, ("p", "n", "a"), T0 + 30, "n", "click", T0 + 130, None)
    assert np.allclose(touched_since, ranker.weights.step_pairs(F, rows["n"], [rows["p"]]))  # a touched after T0 + 30
    cart = list_feedback(ranker, profile, ("p", "n", "a"), T0 + 100, "n", "cart", T0 + 130, None)
    assert np.allclose(cart, 2.0 * step)  # β(cart) / β(click) = 4 / 2
    assert list_feedback(ranker, profile, ("p",), T0 + 100, "v", "click", T0 + 130, None) is None  # the item in view
    assert np.array_equal(ranker.weights.theta, theta)  # a step is returned, not applied


def test_only_the_top_of_a_long_list_is_explained():
    from strata.models.learned import EXPLAIN_TOP

    ranker, profile, pop = _shop()
    for n in range(EXPLAIN_TOP + 20):
        pop.learn(f"x{n}", "socks", 0.5, T0)
    recs = ranker.recommend_many([_request(profile, pop, k=EXPLAIN_TOP + 10, explain=True)])[0]
    assert len(recs.items) == EXPLAIN_TOP + 10 and len(recs.terms) == EXPLAIN_TOP
    assert all(recs.because[:EXPLAIN_TOP]) and not any(recs.because[EXPLAIN_TOP:])
    body = recs.to_dict()["items"]
    assert "terms" in body[EXPLAIN_TOP - 1] and "terms" not in body[EXPLAIN_TOP]
    for score, layers in zip(recs.scores, recs.layers):  # every item still has its layers
        assert sum(layers.values()) == pytest.approx(score, rel=1e-9, abs=1e-12)
