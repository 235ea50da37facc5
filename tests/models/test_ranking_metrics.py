"""HR, NDCG, MRR and coverage on cases small enough to compute by hand."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, strategies as st

from strata.models.evaluation.metrics import RankingScore, coverage, hit_rank, hr_at_k, mrr_at_k, ndcg_at_k


@pytest.mark.parametrize(
    "ranking, target, k, rank, hr, ndcg, mrr",
    [
        (["a", "b", "c"], "a", 10, 1, 1.0, 1.0, 1.0),
        (["a", "b", "c"], "b", 10, 2, 1.0, 1 / math.log2(3), 0.5),  # 0.6309…
        (["a", "b", "c", "d"], "d", 10, 4, 1.0, 1 / math.log2(5), 0.25),  # 0.4307…
        (["a", "b", "c"], "c", 2, None, 0.0, 0.0, 0.0),  # ranked 3rd, cut at K = 2
        (["a", "b", "c"], "z", 10, None, 0.0, 0.0, 0.0),
        ([], "a", 10, None, 0.0, 0.0, 0.0),
    ],
)
def test_single_list(ranking, target, k, rank, hr, ndcg, mrr):
    r = hit_rank(ranking, target, k)
    assert r == rank
    assert hr_at_k(r) == hr
    assert ndcg_at_k(r) == pytest.approx(ndcg)
    assert mrr_at_k(r) == pytest.approx(mrr)


def test_known_values():
    assert ndcg_at_k(2) == pytest.approx(0.6309297535714575)
    assert ndcg_at_k(10) == pytest.approx(1 / math.log2(11))


def test_running_score_averages_over_targets():
    s = RankingScore(k=3)
    assert s.add(["a", "b", "c"], "a") == 1  # hit at 1
    assert s.add(["b", "c", "d"], "c") == 2  # hit at 2
    assert s.add(["x", "y", "z", "w"], "w") is None  # 4th: beyond K
    assert s.targets == 3
    assert s.hr == pytest.approx(2 / 3)
    assert s.ndcg == pytest.approx((1 + 1 / math.log2(3)) / 3)
    assert s.mrr == pytest.approx((1 + 0.5) / 3)
    # only the first K of each list count towards coverage: a b c d x y z
    assert s.coverage(14) == pytest.approx(7 / 14)


def test_empty_score_is_zero():
    s = RankingScore(k=5)
    assert (s.hr, s.ndcg, s.mrr, s.coverage(10)) == (0.0, 0.0, 0.0, 0.0)


def test_coverage():
    assert coverage([["a", "b"], ["b", "c"]], 6) == pytest.approx(0.5)
    assert coverage([], 6) == 0.0
    assert coverage([["a"]], 0) == 0.0


@given(st.lists(st.text(min_size=1, max_size=2), unique=True, max_size=15), st.text(min_size=1, max_size=2), st.integers(1, 12))
def test_metric_bounds_and_order(ranking, target, k):
    r = hit_rank(ranking, target, k)
    hr, ndcg, mrr = hr_at_k(r), ndcg_at_k(r), mrr_at_k(r)
    assert 0.0 <= mrr <= ndcg <= hr <= 1.0  # 1/r ≤ 1/log2(r+1) for r ≥ 1
    assert (r is not None) == (target in ranking[:k])
    if r is not None:
        assert ranking[r - 1] == target


def test_paired_bootstrap_brackets_the_mean_difference():
    from strata.models.evaluation.metrics import paired_bootstrap

    same = paired_bootstrap([0.5] * 50, [0.25] * 50)
    assert same["delta"] == 0.25 and same["ci95"] == [0.25, 0.25] and same["targets"] == 50
    # a wins 30 targets by 1, loses 20 by 1: +0.2 on average, and the interval holds it, not 0 … 
    a, b = [1.0] * 30 + [0.0] * 20, [0.0] * 30 + [1.0] * 20
    r = paired_bootstrap(a, b)
    assert r["delta"] == pytest.approx(0.2) and r["ci95"][0] < 0.2 < r["ci95"][1]
    # … while a coin flip's interval holds 0; and the same inputs give the same interval
    coin = paired_bootstrap([1.0, 0.0] * 25, [0.0, 1.0] * 25)
    assert coin["ci95"][0] < 0.0 < coin["ci95"][1]
    assert paired_bootstrap(a, b) == r
    assert paired_bootstrap([], [])["delta"] is None
