"""The textbook baselines of models.evaluation.baselines: hand-computed cases and the shared contract.

Every expected ranking and score below is worked out by hand in the comments,
not by re-running the model's formula.
"""
from __future__ import annotations

import math
import random

import pytest

from strata.models.catalog import Catalog
from strata.models.events import Event
from strata.models.popularity import DAY
from strata.models.evaluation.recommenders import Recommender, World
from strata.models.evaluation.baselines import (
    BASELINE_MAKERS, EXTRA_MAKERS, CovisitModel, DecayedRepeatModel, RecentModel, SKNNModel, Unseen, unseen_name, with_unseen,
)

T0 = 1_600_000_000.0
ITEMS = {f"i{n}": f"c{n % 4}" for n in range(30)}
CATALOG = Catalog({**ITEMS, **{x: "c0" for x in "abcdefgxyz"}}, {"r": None, "c0": "r", "c1": "r", "c2": "r", "c3": "r"})


def world() -> World:
    return World(CATALOG)


def feed(model: Recommender, rows: list[tuple]) -> None:
    """rows: (user, item) or (user, item, type) or (user, item, type, ts); default ts = T0 + row number."""
    for n, row in enumerate(rows):
        user, item = row[0], row[1]
        etype = row[2] if len(row) > 2 else "view"
        ts = row[3] if len(row) > 3 else T0 + n
        model.learn_one(Event(f"e{n}-{user}-{item}", user, item, etype, ts, CATALOG.category_of(item)))


# -- recent --------------------------------------------------------------------------------
def test_recent_orders_by_latest_touch_then_fills_with_popular_items():
    m = RecentModel(world())
    # u: a b c a  → latest touches a@T0+3, c@T0+2, b@T0+1; v views d three times (d is the most popular)
    feed(m, [("u", "a"), ("u", "b"), ("u", "c"), ("u", "a"), ("v", "d"), ("v", "d"), ("v", "d")])
    ids, scores = m.rank("u", 4, T0 + 10)
    assert ids == ["a", "c", "b", "d"]
    assert scores == [T0 + 3, T0 + 2, T0 + 1, T0 + 1 - 1.0]  # the fill scores below the last own item
    assert m.rank("u", 2, T0 + 10) == (["a", "c"], [T0 + 3, T0 + 2])


def test_recent_same_second_and_late_events():
    m = RecentModel(world())
    # x and y at the same second: the later arrival first; z arrives late (older than y) and goes
    # where its time says; an older event on y changes nothing
    feed(m, [("u", "x", "view", T0 + 5), ("u", "y", "view", T0 + 5), ("u", "z", "view", T0 + 1),
             ("u", "y", "view", T0)])
    assert m.rank("u", 3, T0 + 9) == (["y", "x", "z"], [T0 + 5, T0 + 5, T0 + 1])


# -- repeat / repeat-β -----------------------------------------------------------------------
H = 3 * DAY  # the item half-life of ProfileParams


def test_repeat_beta_flips_the_order():
    rows = [("u", "x", "view", T0), ("u", "x", "view", T0), ("u", "y", "purchase", T0)]
    now = T0 + H  # one half-life later: every event counts ½
    plain, weighted = DecayedRepeatModel(world(), beta_weighted=False), DecayedRepeatModel(world(), beta_weighted=True)
    feed(plain, rows)
    feed(weighted, rows)
    # repeat:   x = 2 views · 1 · ½ = 1.0;  y = 1 purchase · 1 · ½ = 0.5
    ids, scores = plain.rank("u", 2, now)
    assert ids == ["x", "y"] and scores == pytest.approx([1.0, 0.5])
    # repeat-β: x = 2 · β_view 1 · ½ = 1.0;  y = β_purchase 6 · ½ = 3.0
    ids, scores = weighted.rank("u", 2, now)
    assert ids == ["y", "x"] and scores == pytest.approx([3.0, 1.0])


def test_repeat_decays_exactly_whatever_the_arrival_order():
    m = DecayedRepeatModel(world(), beta_weighted=False)
    # p: views at T0+3d and (arriving late) T0;  q: one view at T0+5d;  now = T0+6d
    # p = 2^(−6d/3d) + 2^(−3d/3d) = 0.25 + 0.5 = 0.75;  q = 2^(−1d/3d) = 2^(−1/3) = 0.793700526
    feed(m, [("u", "p", "view", T0 + DAY * 3), ("u", "q", "view", T0 + DAY * 5), ("u", "p", "view", T0)])
    ids, scores = m.rank("u", 2, T0 + 6 * DAY)
    assert ids == ["q", "p"]
    assert scores == pytest.approx([0.793700526, 0.75])


def test_repeat_ties_go_to_the_most_recent_item_then_popular_fill():
    m = DecayedRepeatModel(world(), beta_weighted=False)
    # a and b: one view each at the same second (b arrives later); c: one view a second earlier
    feed(m, [("u", "c", "view", T0 - 1), ("u", "a", "view", T0), ("u", "b", "view", T0),
             ("v", "d", "view", T0), ("v", "d", "view", T0)])
    ids, scores = m.rank("u", 4, T0)
    assert ids == ["b", "a", "c", "d"]  # d: the popular fill
    assert scores[:2] == [1.0, 1.0] and scores[2] == pytest.approx(2 ** (-1 / H))
    assert scores[3] < scores[2]


# -- cooc ----------------------------------------------------------------------------------
COOC_LOG = [
    ("u1", "a"), ("u1", "b"), ("u1", "c"),  # pairs: b–a; c–a, c–b
    ("u2", "b"), ("u2", "a"), ("u2", "b"),  # pairs: a–b; b–a again (a revisit still pairs)
    ("u3", "c"), ("u3", "d"),  # pairs: d–c
]
# C(a,b) = 1 + 1 + 1 = 3, C(a,c) = 1, C(b,c) = 1, C(c,d) = 1
# n (events per item): a 2, b 3, c 2, d 1


def test_cooc_cosine_scores_by_hand():
    m = CovisitModel(world())  # n_i = events on i
    feed(m, COOC_LOG)
    # u1's window {a, b, c}:
    #   a: C(b,a)/√(3·2) + C(c,a)/√(2·2) = 3/√6 + 1/2 = 1.224745 + 0.5      = 1.724745
    #   b: C(a,b)/√(2·3) + C(c,b)/√(2·3) = 3/√6 + 1/√6 = 4/√6               = 1.632993
    #   c: C(a,c)/√(2·2) + C(b,c)/√(3·2) = 0.5 + 0.408248                   = 0.908248
    #   d: C(c,d)/√(2·1) = 1/√2                                             = 0.707107
    ids, scores = m.rank("u1", 4, T0 + 10)
    assert ids == ["a", "b", "c", "d"]
    assert scores == pytest.approx([1.724745, 1.632993, 0.908248, 0.707107], abs=1e-6)
    # u3's window {c, d}:
    #   a: C(c,a)/√(2·2) = 0.5;  b: C(c,b)/√(2·3) = 0.408248
    #   c: C(d,c)/√(1·2) = 0.707107;  d: C(c,d)/√(2·1) = 0.707107 (a tie: c, 2 events, is the more popular)
    ids, scores = m.rank("u3", 4, T0 + 10)
    assert ids == ["c", "d", "a", "b"]
    assert scores == pytest.approx([0.707107, 0.707107, 0.5, 0.408248], abs=1e-6)


def test_cooc_normalised_by_pairings():
    m = CovisitModel(world(), n_count="pairings")
    feed(m, COOC_LOG)
    # n_i = Σ_j C(i, j): a = 3 + 1 = 4, b = 3 + 1 = 4, c = 1 + 1 + 1 = 3, d = 1
    # u1's window {a, b, c}:
    #   a: C(b,a)/√(4·4) + C(c,a)/√(3·4) = 3/4 + 1/√12 = 0.75 + 0.288675 = 1.038675
    #   b: C(a,b)/√(4·4) + C(c,b)/√(3·4) = the same                      = 1.038675
    #      a tie: b (events at T0+1, +3, +5) is more popular than a (T0, T0+4)
    #   c: C(a,c)/√(4·3) + C(b,c)/√(4·3) = 2/√12 = 0.577350
    #   d: C(c,d)/√(3·1) = 1/√3           = 0.577350   (a tie: c, 2 events, before d, 1)
    ids, scores = m.rank("u1", 4, T0 + 10)
    assert ids == ["b", "a", "c", "d"]
    assert scores == pytest.approx([1.038675, 1.038675, 0.577350, 0.577350], abs=1e-6)
    with pytest.raises(ValueError):
        CovisitModel(world(), n_count="users")


def test_cooc_pairs_only_within_the_last_window_distinct_items():
    m = CovisitModel(world(), window=2)
    # x: a b c d with a window of 2 distinct items
    #   b pairs with a; c with a, b (then a leaves the window); d with b, c only
    #   C(a,b)=1 C(a,c)=1 C(b,c)=1 C(b,d)=1 C(c,d)=1; every n = 1; window {c, d}
    #   a: C(c,a) + C(d,a) = 1 + 0 = 1   (2 with a window holding a)
    #   b: C(c,b) + C(d,b) = 2;   c: C(d,c) = 1;   d: C(c,d) = 1
    #   ties a, c, d: one event each, the later the more popular (1-day half-life): d, c, a
    feed(m, [("x", "a"), ("x", "b"), ("x", "c"), ("x", "d")])
    assert m.rank("x", 4, T0 + 10) == (["b", "d", "c", "a"], pytest.approx([2.0, 1.0, 1.0, 1.0]))
    assert m.rank("x", 2, T0 + 10) == (["b", "d"], pytest.approx([2.0, 1.0]))  # the tie at the cut too


# -- sknn ----------------------------------------------------------------------------------
SKNN_LOG = [
    ("u1", "a"), ("u1", "b"), ("u1", "c"),
    ("u2", "a"), ("u2", "b"), ("u2", "d"),
    ("u4", "x"),
    ("u3", "c"), ("u3", "e"),
    ("u0", "a"), ("u0", "c"),
]
# sessions: u1 {a,b,c}, u2 {a,b,d}, u3 {c,e}, u4 {x}; u0 {a,c}
# sim(u0, u1) = |{a,c}| / √(2·3) = 2/√6 = 0.816497
# sim(u0, u2) = |{a}|   / √(2·3) = 1/√6 = 0.408248
# sim(u0, u3) = |{c}|   / √(2·2) = 1/2  = 0.5
# u4 shares nothing: not a candidate


def test_sknn_neighbours_and_scores_by_hand():
    m = SKNNModel(world())
    feed(m, SKNN_LOG)
    nb = m.neighbours("u0")
    assert [v for v, _ in nb] == ["u1", "u3", "u2"]
    assert [s for _, s in nb] == pytest.approx([0.816497, 0.5, 0.408248], abs=1e-6)
    # c: u1 + u3 = 1.316497;  a, b: u1 + u2 = 1.224745 (tie: the best neighbour's latest item, b, first)
    # e: u3 = 0.5;  d: u2 = 0.408248;  then x, the popular fill
    ids, scores = m.rank("u0", 6, T0 + 20)
    assert ids == ["c", "b", "a", "e", "d", "x"]
    assert scores[:5] == pytest.approx([1.316497, 1.224745, 1.224745, 0.5, 0.408248], abs=1e-6)


def test_sknn_keeps_the_k_nearest_of_the_most_recent_candidates():
    # k_neighbours = 2: u1 and u3 only → c 1.316497, a = b = 0.816497, e 0.5 (d is not scored)
    m = SKNNModel(world(), k_neighbours=2)
    feed(m, SKNN_LOG)
    ids, scores = m.rank("u0", 4, T0 + 20)
    assert ids == ["c", "b", "a", "e"]
    assert scores == pytest.approx([1.316497, 0.816497, 0.816497, 0.5], abs=1e-6)
    # sample_size = 1: only the most recently active candidate, u3 → e and c at 0.5 (u3's latest first)
    m = SKNNModel(world(), sample_size=1)
    feed(m, SKNN_LOG)
    assert m.neighbours("u0") == [("u3", 0.5)]
    assert m.rank("u0", 2, T0 + 20) == (["e", "c"], [0.5, 0.5])


def test_sknn_uses_the_neighbours_current_sessions():
    m = SKNNModel(world(), window=2)
    # u1: a b c → its session is now {b, c}; u0 {a} has no neighbour left: popular items only
    feed(m, [("u1", "a"), ("u1", "b"), ("u1", "c"), ("u0", "a")])
    assert m.neighbours("u0") == []
    feed(m, [("u0", "b", "view", T0 + 10)])  # u0 {a, b}: u1 {b, c} shares b → sim 1/√(2·2) = 0.5
    assert m.neighbours("u0") == [("u1", 0.5)]
    assert m.rank("u0", 2, T0 + 11) == (["c", "b"], [0.5, 0.5])


# -- unseen ----------------------------------------------------------------------------------
def test_unseen_leaves_out_every_touched_item_and_still_fills():
    m = Unseen(CovisitModel(world()))
    feed(m, COOC_LOG + [("u5", "e"), ("u5", "e"), ("u5", "f")])
    # u1 touched a, b, c: cooc's list is a b c d → d (0.707107); then the popular untouched: e (2 views), f
    ids, scores = m.rank("u1", 3, T0 + 20)
    assert ids == ["d", "e", "f"]
    assert scores[0] == pytest.approx(1 / math.sqrt(2)) and scores[0] > scores[1] > scores[2]
    # nothing else untouched in the catalogue: a short list, never a touched item
    assert m.rank("u1", 10, T0 + 20)[0] == ["d", "e", "f"]

    r = Unseen(RecentModel(world()))
    feed(r, COOC_LOG + [("u5", "e"), ("u5", "e"), ("u5", "f")])
    # recent's own items are all touched: popular untouched only — e (2 events), then d and f (1 each)
    ids, _ = r.rank("u1", 3, T0 + 20)
    assert not {"a", "b", "c"} & set(ids) and len(ids) == 3 and ids[0] == "e"


def test_unseen_forwards_to_the_inner_model():
    class Batch(Recommender):
        uses_batch_fit = True

        def __init__(self, w):
            super().__init__(w)
            self.learned = []

        def learn_one(self, event):
            self.learned.append(event.item_id)

        def rank(self, user_id, k, now):
            return ["a", "b", "c"][:k], [3.0, 2.0, 1.0][:k]

        def describe(self):
            return {"x": 1}

    inner = Batch(world())
    m = Unseen(inner)
    assert m.uses_batch_fit is True and Unseen(RecentModel(world())).uses_batch_fit is False
    calls = []
    inner.refit = calls.append
    m.refit(T0 + 1)
    assert calls == [T0 + 1]
    feed(m, [("u", "a")])
    assert inner.learned == ["a"]
    assert m.rank("u", 2, T0) == (["b", "c"], [2.0, 1.0])
    assert m.describe() == {"x": 1, "unseen": True}


def test_registry_names():
    assert set(BASELINE_MAKERS) == {"recent", "repeat", "repeat-β", "cooc", "sknn"}
    assert isinstance(EXTRA_MAKERS["cooc-pairs"](world(), None), CovisitModel)
    assert set(with_unseen()) == set(BASELINE_MAKERS) | {unseen_name(n) for n in BASELINE_MAKERS}
    assert unseen_name("cooc") == "cooc-unseen"


# -- the contract every baseline keeps -----------------------------------------------------------
def small_log(n_events: int = 300, users: int = 12, seed: int = 0) -> list[Event]:
    rng = random.Random(seed)
    types = ["view"] * 6 + ["cart", "purchase", "fav"]
    events, seen = [], {f"u{u}": [] for u in range(users)}
    for n in range(n_events):
        u = f"u{rng.randrange(users)}"
        item = rng.choice(seen[u]) if seen[u] and rng.random() < 0.4 else f"i{rng.randrange(30)}"
        seen[u].append(item)
        events.append(Event(f"e{n}", u, item, rng.choice(types), T0 + n * 600.0, ITEMS[item]))
    return events


ALL_MAKERS = with_unseen({**BASELINE_MAKERS, **EXTRA_MAKERS})


@pytest.mark.parametrize("name", sorted(ALL_MAKERS))
def test_contract(name):
    model = ALL_MAKERS[name](world(), None)
    assert model.rank("nobody", 5, T0) == ([], [])  # an empty model answers, with nothing
    events = small_log()
    for e in events[:150]:
        model.learn_one(e)
    now = events[150].ts
    answers = {}
    for user in ("u0", "u3", "u7", "nobody"):
        for k in (1, 5, 10):
            ids, scores = model.rank(user, k, now)
            assert isinstance(ids, list) and isinstance(scores, list)
            assert len(ids) == len(scores) == k  # 30 items seen: always full (unseen: ≥ 10 untouched)
            assert len(set(ids)) == len(ids)
            assert all(isinstance(j, str) for j in ids) and all(isinstance(s, float) for s in scores)
            assert all(a >= b for a, b in zip(scores, scores[1:])), scores
            answers[user, k] = (ids, scores, (list(ids), list(scores)))
    assert model.rank("u0", 10, now) == answers["u0", 10][2]  # asking changes nothing
    for e in events[150:]:
        model.learn_one(e)
    for ids, scores, copy in answers.values():  # learning never touches an answer already given
        assert (ids, scores) == copy
    model.refit(events[-1].ts)
    assert isinstance(model.describe(), dict)
    if name.endswith("-unseen"):
        touched = {e.item_id for e in events if e.user_id == "u0"}
        assert not touched & set(model.rank("u0", 10, events[-1].ts)[0])
