"""Revisit propensity, the seen penalty and own-item recency in the layered scorer."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from strata.models.events import Event
from strata.models.profile import Profile, ProfileParams
from strata.models.ranking import RankParams, repeat_propensity
from tests.models.test_ranking import CATALOG, ITEMS, T0, _recommend, _ranker

PP = ProfileParams()


def profile_of(items: list[str], gap: float = 60.0, user: str = "u") -> Profile:
    p = Profile()
    for n, item in enumerate(items):
        domain, overall = CATALOG.layers_for(item, None)
        p.learn(Event(f"{user}-{n}", user, item, "view", T0 + n * gap), domain, overall, PP)
    return p


def test_repeat_propensity():
    explorer = profile_of(["a1-0", "a1-1", "a2-0", "b1-0", "b2-0"])  # 5 events, 5 items
    returner = profile_of(["a1-0", "a1-0", "a1-1", "a1-0", "a1-1"])  # 5 events, 2 items
    assert repeat_propensity(explorer, RankParams(repeat_prior=None), PP) == 1.0  # propensity off
    rp = RankParams(repeat_prior=0.5, repeat_strength=5.0)
    assert repeat_propensity(explorer, rp, PP) == pytest.approx(2.5 / 9)  # (0 + 5·½) / (4 + 5)
    assert repeat_propensity(returner, rp, PP) == pytest.approx(5.5 / 9)  # (3 + 2.5) / 9
    assert repeat_propensity(explorer, rp, PP, prior=0.0) == 0.0  # a learned population rate wins
    capped = ProfileParams(caps={"item": 3, "domain": 50, "overall": 20})
    full = Profile()
    for n, item in enumerate(["a1-0", "a1-1", "a2-0", "b1-0"]):
        d, o = CATALOG.layers_for(item, None)
        full.learn(Event(str(n), "u", item, "view", T0 + n), d, o, capped)
    assert repeat_propensity(full, rp, capped) == 0.5  # pruned keys: only the prior is trustworthy


@given(st.lists(st.sampled_from(sorted(ITEMS)[:8]), min_size=1, max_size=30), st.floats(0, 1), st.floats(0, 1))
def test_propensity_is_a_probability(items, prior, learned):
    p = profile_of(items)
    rho = repeat_propensity(p, RankParams(repeat_prior=prior), PP, prior=learned)
    assert 0.0 <= rho <= 1.0


def test_a_user_who_never_revisits_is_shown_new_items():
    ranker = _ranker()
    explorer = profile_of(["a1-0", "a1-1", "a1-2", "a1-3", "a1-4", "a1-5"])
    own = set(explorer.w["item"])
    recs = _recommend(ranker, explorer, k=4, revisit_rate=0.0)
    assert recs.items[0] not in own and len(own & set(recs.items)) <= 1  # the penalty is soft
    hard = _ranker(params=RankParams(seen_penalty=10.0))
    assert not own & set(_recommend(hard, explorer, k=4, revisit_rate=0.0).items)
    # the same history, from a population that comes back to items, keeps them first
    recs = _recommend(ranker, explorer, k=4, revisit_rate=1.0)
    assert set(recs.items) <= set(explorer.w["item"])


def test_the_item_just_looked_at_comes_first():
    ranker = _ranker()
    p = profile_of(["b1-3", "a2-1", "a1-4"], gap=5.0)  # a session: nearly equal decayed weights
    assert _recommend(ranker, p, k=3, revisit_rate=1.0).items[0] == "a1-4"
    by_time = _ranker(params=RankParams(recency_rank=False, recency_half_life_s=10.0))
    assert _recommend(by_time, p, k=3, revisit_rate=1.0).items[0] == "a1-4"


def test_layer_ablation_keeps_one_layer():
    only = _ranker(params=RankParams(layers=("domain",)))
    recs = _recommend(only, profile_of(["a1-0", "a1-1", "b2-0"]), k=5)
    assert recs.layer_weights == {"item": 0.0, "domain": 1.0, "overall": 0.0}
    assert all(l["item"] == 0.0 and l["overall"] == 0.0 for l in recs.layers)
    with pytest.raises(ValueError, match="layers"):
        RankParams(layers=("items",))
