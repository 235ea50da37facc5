"""Co-visitation kept by the stream: pairs, cosine, decay, bounds."""
from __future__ import annotations

import math

import pytest

from strata.models.covisit import CoVisits

H = 14 * 86_400.0


def test_a_revisit_pairs_too():
    cv = CoVisits(window=20, neighbours=10, half_life_s=H)
    cv.learn("b", ["a"], 0.0)
    cv.learn("a", ["b", "a"], 1.0)  # back to a: pairs with b again, never with itself
    assert cv.row("a")["b"] == pytest.approx(2.0, rel=1e-6)
    assert "a" not in cv.row("a")


def test_the_window_counts_distinct_recent_items():
    cv = CoVisits(window=2, neighbours=10, half_life_s=H)
    cv.learn("x", ["c", "b", "a"], 0.0)
    assert sorted(cv.row("x")) == ["b", "c"]


def test_a_pair_one_half_life_later_weighs_twice():
    cv = CoVisits(window=20, neighbours=10, half_life_s=H)
    cv.learn("b", ["a"], 0.0)
    cv.learn("c", ["a"], H)
    assert cv.row("a")["c"] / cv.row("a")["b"] == pytest.approx(2.0, rel=1e-9)


def test_rebasing_keeps_every_similarity():
    far = CoVisits(window=20, neighbours=10, half_life_s=1.0)
    far.learn("b", ["a"], 0.0)
    far.learn("c", ["a"], 1.0)
    before = (far.similarity("a", "b"), far.similarity("a", "c"))
    far.learn("d", ["e"], 900.0)  # past 2^512 the reference time moves and every weight is rescaled
    assert (far.similarity("a", "b"), far.similarity("a", "c")) == pytest.approx(before, rel=1e-9)
    assert math.isfinite(far.row("e")["d"])


def test_rows_stay_bounded_and_keep_the_heaviest():
    cv = CoVisits(window=1, neighbours=5, half_life_s=H)
    for n in range(100):
        cv.learn(f"j{n}", ["hub"], float(n))  # later pairs weigh more
    row = cv.row("hub")
    assert len(row) < 10
    assert "j99" in row and "j0" not in row


def test_scores_weight_each_recent_item():
    cv = CoVisits(window=20, neighbours=10, half_life_s=H)
    cv.learn("b", ["a"], 0.0)
    cv.learn("c", ["b"], 0.0)
    # n_a = 1, n_b = 2, n_c = 1: sim(a,b) = 1/√2, sim(b,c) = 1/√2, sim(b,a) = 1/√2
    short, flat = cv.scores(["b", "a"], ((1.0, 0.5), (1.0, 1.0)))
    assert short == pytest.approx({"c": 1 / math.sqrt(2), "a": 1 / math.sqrt(2), "b": 0.5 / math.sqrt(2)})
    assert flat["b"] == pytest.approx(1 / math.sqrt(2))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="window"):
        CoVisits(window=0)
    with pytest.raises(ValueError, match="half_life_s"):
        CoVisits(half_life_s=float("inf"))
