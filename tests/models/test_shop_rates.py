"""The shop's rates, learned online from every event (models.ranking.ShopRates): the revisit
rate ρ0 and the domain share μ that splits what the item layer leaves between the domain and
the overall layer."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from strata.models.events import Event
from strata.models.popularity import Popularity
from strata.models.profile import Profile, ProfileParams
from strata.models.ranking import SHARE_BUCKETS, RankParams, ShopRates, layer_weights, share_bucket
from tests.models.test_ranking import CATALOG, ITEMS, T0, _profile, profile_events_st

PP = ProfileParams()
RP = RankParams()
#: pools of two: the domain pool is the 2 most popular items of the user's top category,
#: the overall pool the shop's 2 most popular items
SMALL = RankParams(category_pool=2, pool_categories=1)


class Shop:
    """Profiles, popularity and shop rates learned in event order, as the evaluator does."""

    def __init__(self, params: RankParams = SMALL) -> None:
        self.params = params
        self.profiles: dict[str, Profile] = {}
        self.popularity = Popularity()
        self.rates = ShopRates()
        self.n = 0

    def event(self, user: str, item: str, etype: str = "view") -> tuple[int, int, int, int, int]:
        profile = self.profiles.setdefault(user, Profile())
        domain, overall = CATALOG.layers_for(item, None)
        seen = ShopRates.observe(profile, item, domain, self.popularity, self.params, PP)
        self.rates.add(seen)
        ts = T0 + self.n
        self.n += 1
        if profile.learn(Event(f"e{self.n}", user, item, etype, ts), domain, overall, PP):
            self.popularity.learn(item, domain, PP.beta[etype], ts)
        return seen


def test_revisit_rate_counts_returns_to_the_item_layer():
    shop = Shop()
    assert shop.rates.revisit_rate == 0.5  # Laplace: no evidence yet
    for item in ["a1-0", "a1-1", "a1-0", "a1-0"]:
        shop.event("u", item)
    assert (shop.rates.returns, shop.rates.chances) == (2, 3)  # the first event is no chance to return
    assert shop.rates.revisit_rate == pytest.approx(3 / 5)


def test_a_domain_hit_is_a_popular_item_of_one_of_the_users_top_categories():
    shop = Shop()
    for n in range(5):  # a1-0, a1-1 lead category a1; b2-0, b2-1 lead the shop
        shop.event(f"crowd{n}", "a1-0")
        shop.event(f"crowd{n}", "a1-1")
    for n in range(8):
        shop.event(f"crowd{n}", "b2-0")
        shop.event(f"crowd{n}", "b2-1")
    shop.rates = ShopRates()  # count u's and v's events only
    shop.event("u", "a1-7")  # u's top category: a1
    _, _, bucket, domain, overall = shop.event("u", "a1-0")
    assert (bucket, domain, overall) == (0, 1, 0)  # one earlier event: bucket 0
    assert shop.event("u", "a1-6")[3:] == (0, 0)  # a1, but not among its 2 most popular
    assert shop.event("u", "b2-0")[3:] == (0, 1)  # the shop's favourite, outside u's top category
    assert shop.event("v", "b1-0")[3:] == (0, 0)  # a user's first event counts for nothing
    assert shop.event("v", "a1-1")[3:] == (0, 0)  # v's top category is b1
    assert shop.rates.chances == 4


def test_the_domain_share_follows_the_pool_that_predicts_the_next_item():
    # In both shops b2-0 and b2-1 are the shop's favourites and each user buys one item first.
    def shop_where(next_items) -> ShopRates:
        shop = Shop()
        for n in range(40):  # more than the first purchases below add up to
            shop.event(f"crowd{n}", "b2-0")
            shop.event(f"crowd{n}", "b2-1")
        shop.rates = ShopRates()  # count the users below only
        for n, first in enumerate(["a1-5", "a2-5", "b1-5"] * 4):
            user = f"u{n}"
            shop.event(user, first, "purchase")
            for item in next_items(first[:2]):
                shop.event(user, item)
        return shop.rates

    # users stay in their category and look at its popular items
    stay = shop_where(lambda cat: [f"{cat}-0", f"{cat}-1", f"{cat}-0"])
    # users follow the shop's favourites out of their category
    follow = shop_where(lambda cat: ["b2-0", "b2-1", "b2-0"])
    for earlier_events in (1, 2, 3):  # what the users had seen when they were counted
        profile = _profile([("a1-0", "view", T0)] * earlier_events)
        assert stay.domain_share(SMALL, profile) > 0.5 > follow.domain_share(SMALL, profile)
    heavy = _profile([("a1-0", "view", T0)] * 20)
    assert stay.domain_share(SMALL, heavy) == follow.domain_share(SMALL, heavy) == 0.5  # no such users yet
    assert follow.domain_hits == [0] * SHARE_BUCKETS and sum(follow.overall_hits) == 36


def test_the_domain_share_is_the_base_weights_split_until_the_shop_says_otherwise():
    rates = ShopRates()
    assert rates.domain_share(RP, None) == pytest.approx(0.5)  # 0.2 : 0.2
    assert rates.domain_share(RankParams(base_weights=(0.6, 0.3, 0.1)), None) == pytest.approx(0.75)
    rates.domain_hits[share_bucket(1)] = 8
    one, many = _profile([("a1-0", "view", T0)]), _profile([("a1-0", "view", T0)] * 20)
    assert rates.domain_share(RP, one) == pytest.approx((8 + 2 * 0.5) / (8 + 2))
    assert rates.domain_share(RP, many) == pytest.approx(0.5)  # another bucket: no evidence there


def test_share_buckets_double():
    assert [share_bucket(n) for n in (0, 1, 2, 3, 4, 7, 8, 15, 16, 10_000)] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


users_st = st.lists(st.lists(st.sampled_from(sorted(ITEMS)), max_size=8), max_size=6)


@settings(max_examples=60, deadline=None)
@given(users_st)
def test_counts_merge_across_batches(users):
    """Workers count a batch each and the activity feed adds the counts up (through the
    record's plain data): the same rates as learning every event in one place."""
    whole, merged = Shop(), ShopRates()
    for u, items in enumerate(users):
        batch = ShopRates()
        for item in items:
            batch.add(whole.event(str(u), item))
        merged.merge(ShopRates.from_dict(batch.to_dict()))
    assert merged.to_dict() == whole.rates.to_dict()


@pytest.mark.parametrize("data", [
    {"returns": 3, "chances": 2},
    {"domain_hits": [1, 2, 3]},
    {"overall_hits": [0, 0, 0, -1, 0]},
])
def test_impossible_counts_are_refused(data):
    with pytest.raises(ValueError):
        ShopRates.from_dict(data)


@settings(max_examples=60, deadline=None)
@given(profile_events_st, st.floats(0, 30 * 86_400.0, allow_nan=False), st.floats(0, 1), st.floats(0, 1))
def test_the_domain_share_only_moves_weight_between_domain_and_overall(events, later, mu1, mu2):
    profile = _profile([(i, t, T0 + dt) for i, t, dt in events])
    now = profile.last_ts + later
    low, high = sorted((mu1, mu2))
    a = layer_weights(profile, RP, now, PP, domain_share=low)
    b = layer_weights(profile, RP, now, PP, domain_share=high)
    assert a["item"] == b["item"]
    assert a["domain"] <= b["domain"] and a["overall"] >= b["overall"]
    assert math.isclose(sum(b.values()), 1.0, rel_tol=1e-12)
    assert layer_weights(profile, RP, now, PP, domain_share=0.0)["domain"] == 0.0
