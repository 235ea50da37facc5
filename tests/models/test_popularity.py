"""Recent popularity (models/popularity.py): decay identity, order independence, exact pools."""
from __future__ import annotations

import json
import math

from hypothesis import given, settings, strategies as st

from strata.models.catalog import Catalog
from strata.models.events import Event
from strata.models.popularity import DAY, Popularity, popular_items
from strata.models.profile import ProfileParams

T0 = 1_600_000_000.0
H = DAY

learn_st = st.tuples(
    st.integers(0, 25).map(lambda i: f"i{i}"),
    st.sampled_from([None, "c0", "c1", "c2"]),
    st.sampled_from([1.0, 2.0, 3.0, 4.0, 6.0]),
    st.floats(0, 10 * DAY, allow_nan=False).map(lambda dt: T0 + dt),
)
learns_st = st.lists(learn_st, min_size=1, max_size=80)


def _build(learns, pool_size=1000, half_life=H) -> Popularity:
    pop = Popularity(half_life, pool_size=pool_size)
    for item, cat, beta, ts in learns:
        pop.learn(item, cat, beta, ts)
    return pop


def _closed_form(learns, T, category=None, half_life=H) -> dict[str, float]:
    out: dict[str, float] = {}
    for item, cat, beta, ts in learns:
        if category is None or cat == category:
            out[item] = out.get(item, 0.0) + beta * 2 ** (-(T - ts) / half_life)
    return out


def _check_top(pop: Popularity, expected: dict[str, float], k: int, T: float, category=None) -> None:
    top = pop.top(k, T, category)
    assert len(top) == min(k, len(expected))
    scores = [s for _, s in top]
    assert all(a >= b * (1 - 1e-9) for a, b in zip(scores, scores[1:])), "not sorted"
    best = sorted(expected.values(), reverse=True)
    for (item, s), want in zip(top, best):
        assert math.isclose(s, expected[item], rel_tol=1e-9)
        assert math.isclose(s, want, rel_tol=1e-9)  # the k-th listed is as good as the k-th best


@settings(deadline=None)
@given(learns_st, st.floats(0, 30 * DAY, allow_nan=False))
def test_scores_are_the_closed_form_decayed_counts(learns, later):
    pop = _build(learns)
    T = max(ts for *_, ts in learns) + later
    for category in (None, "c0", "c1"):
        expected = _closed_form(learns, T, category)
        for item, want in expected.items():
            assert math.isclose(pop.score(item, T, category), want, rel_tol=1e-9)
    assert pop.score("never-seen", T) == 0.0


@settings(deadline=None)
@given(learns_st, st.randoms(use_true_random=False), st.integers(1, 6))
def test_any_order_gives_the_same_popularity_and_tops(learns, rnd, pool):
    shuffled = list(learns)
    rnd.shuffle(shuffled)
    a, b = _build(learns, pool), _build(shuffled, pool)
    T = max(ts for *_, ts in learns)
    for category in (None, "c0", "c2"):
        expected = _closed_form(learns, T, category)
        for item in expected:
            assert math.isclose(a.score(item, T, category), b.score(item, T, category), rel_tol=1e-9)
        for k in (1, pool, pool + 3):  # inside the incremental pool and beyond it
            _check_top(a, expected, k, T, category)
            _check_top(b, expected, k, T, category)


def test_decay_identity_half_life():
    pop = Popularity(H)
    pop.learn("a", "c", 4.0, T0)
    assert pop.score("a", T0) == 4.0
    assert math.isclose(pop.score("a", T0 + H), 2.0)
    assert math.isclose(pop.score("a", T0 + 3 * H), 0.5)
    # a later event folds the old weight in; an older one adds its decayed weight
    pop.learn("a", "c", 1.0, T0 + H)
    assert math.isclose(pop.score("a", T0 + H), 3.0)
    pop.learn("a", "c", 2.0, T0)
    assert math.isclose(pop.score("a", T0 + H), 4.0)
    assert math.isclose(pop.score("a", T0 + 2 * H, "c"), 2.0)
    # the rank is clock-free: pop(T) = 2^(rank − T/H)
    assert math.isclose(2 ** (pop.rank("a") - (T0 + 5 * H) / H), pop.score("a", T0 + 5 * H))


def test_recent_events_beat_older_bigger_counts():
    pop = Popularity(H)
    for n in range(8):
        pop.learn("old", None, 1.0, T0)
    for n in range(3):
        pop.learn("new", None, 1.0, T0 + 4 * H)
    assert [i for i, _ in pop.top(2, T0 + 4 * H)] == ["new", "old"]
    # at T0 + H the old item was ahead; the order is the same at every T (same decay)
    assert [i for i, _ in pop.top(2, T0 + 10 * H)] == ["new", "old"]


def test_top_per_category_only_lists_that_category():
    pop = Popularity(H, pool_size=3)
    for n in range(10):
        pop.learn(f"a{n}", "A", 1.0 + n, T0)
        pop.learn(f"b{n}", "B", 10.0 - n, T0)
    top_a = pop.top(5, T0, "A")
    assert [i for i, _ in top_a] == ["a9", "a8", "a7", "a6", "a5"]
    assert [i for i, _ in pop.top(3, T0, "B")] == ["b0", "b1", "b2"]
    assert [i for i, _ in pop.top(2, T0)] == ["a9", "b0"]  # both 10: ties go to the smaller id
    assert pop.top(3, T0, "nope") == []
    assert sorted(pop.categories()) == ["A", "B"]
    items, ranks = pop.top_ranked(3)
    assert items == ["a9", "b0", "a8"] and ranks == sorted(ranks, reverse=True)


def test_ties_are_broken_by_item_id():
    pop = Popularity(H, pool_size=2)
    for item in ("z", "m", "a", "q"):
        pop.learn(item, None, 1.0, T0)
    assert [i for i, _ in pop.top(4, T0)] == ["a", "m", "q", "z"]
    assert pop.top_ranked(2)[0] == ["a", "m"]


@settings(deadline=None)
@given(learns_st, st.integers(1, 5))
def test_dict_round_trip_and_merge(learns, pool):
    whole = _build(learns, pool)
    restored = Popularity.from_dict(json.loads(json.dumps(whole.to_dict())))
    T = max(ts for *_, ts in learns)
    half = len(learns) // 2
    merged = _build(learns[:half], pool)
    merged.merge(_build(learns[half:], pool))
    for other in (restored, merged):
        assert len(other) == len(whole) and other.events == whole.events and other.last_ts == whole.last_ts
        for category in (None, "c1"):
            expected = _closed_form(learns, T, category)
            for item, want in expected.items():
                assert math.isclose(other.score(item, T, category), want, rel_tol=1e-9)
            _check_top(other, expected, pool + 2, T, category)


@settings(deadline=None)
@given(learns_st, st.integers(1, 5))
def test_ranks_are_kept_as_the_closed_form_after_learning_merging_and_reloading(learns, pool):
    """`ranks` reads ranks kept on every change; they are rank_of(w, t) exactly, for every
    way a popularity comes to be (learned, merged, reloaded), and −inf for unseen items."""
    whole = _build(learns, pool)
    half = len(learns) // 2
    merged = _build(learns[:half], pool)
    merged.merge(_build(learns[half:], pool))
    restored = Popularity.from_dict(json.loads(json.dumps(whole.to_dict())))
    items = [f"i{i}" for i in range(27)]  # i26 is never learned
    for pop in (whole, merged, restored):
        assert pop.ranks(items) == [pop.rank(i) for i in items]
        assert pop.ranks(["i26"]) == [-math.inf]
    assert whole.ranks(items) == restored.ranks(items)


@settings(deadline=None)
@given(learns_st, st.integers(1, 30))
def test_ranks_within_categories_and_their_tops_are_the_ranks_one_by_one(learns, pool):
    """`ranks_within` (read from a category's pool, or computed past it), `max_ranks` and
    `top_items` are `rank(j, c)`, `max_rank(c)` and `top_ranked(n, c)`'s items exactly, for items in and out of the pools, learned, merged or
    reloaded; −inf for no category or an unknown one."""
    whole = _build(learns, pool_size=pool)
    half = len(learns) // 2
    merged = _build(learns[:half], pool_size=pool)
    merged.merge(_build(learns[half:], pool_size=pool))
    restored = Popularity.from_dict(json.loads(json.dumps(whole.to_dict())))
    items = [f"i{i}" for i in range(27)] * 2
    cats = [None, "c0", "c1", "c2", "c9"] * 10 + ["c0"] * 4
    for pop in (whole, merged, restored):
        assert pop.ranks_within(items, cats) == [pop.rank(j, c) if c is not None else -math.inf for j, c in zip(items, cats)]
        assert pop.max_ranks(cats) == [pop.max_rank(c) for c in cats]
        for n in (0, 1, pool, pool + 5, 40):  # from the pool, and past it from the full view
            for c in (None, "c0", "c9"):
                assert pop.top_items(n, c) == pop.top_ranked(n, c)[0]


def test_popular_items_from_events():
    params = ProfileParams()
    catalog = Catalog({"i1": "c1", "i2": "c2", "i3": "c1"}, {"c1": None, "c2": None})
    events = [
        Event("e1", "u1", "i1", "view", T0),
        Event("e2", "u2", "i2", "purchase", T0),
        Event("e3", "u3", "i3", "view", T0 + 60),
        Event("e4", "u3", "i3", "click", T0 + 120),
    ]
    top = popular_items(events, 3, T0 + 120, beta=params.beta, catalog=catalog)
    assert [i for i, _ in top] == ["i2", "i3", "i1"]
    assert [i for i, _ in popular_items(events, 5, T0, beta=params.beta, catalog=catalog, category="c1")] == ["i3", "i1"]


def test_bad_arguments_are_refused():
    import pytest

    with pytest.raises(ValueError):
        Popularity(0)
    with pytest.raises(ValueError):
        Popularity(H, pool_size=0)
    with pytest.raises(ValueError):
        Popularity(H).learn("a", None, -1.0, T0)
    other = Popularity(2 * H)
    with pytest.raises(ValueError):
        Popularity(H).merge(other)
