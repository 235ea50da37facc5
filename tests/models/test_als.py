"""Implicit ALS on profile confidences (docs/design.md §3, "Matrix factorisation")."""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings, strategies as st

from strata.models.als import (
    ALSParams,
    EventColumns,
    confidence_matrix,
    encode_events,
    fit,
    fold_in,
    gram,
    implicit_model,
    item_weights_from_events,
    merge_encoded,
)
from strata.models.catalog import Catalog
from strata.models.events import EVENT_TYPES, Event
from strata.models.profile import ProfileParams, build_profiles

T0 = 1_500_000_000.0
NO_CAP = ProfileParams(caps={"item": 10**6, "domain": 10**6, "overall": 10**6}, dedup_horizon_s=365 * 86_400.0)  # events in any order


# -- parameters ----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"factors": 0},
        {"factors": 2.5},
        {"factors": True},
        {"regularization": 0.0},
        {"regularization": float("nan")},
        {"alpha": -1.0},
        {"alpha": float("inf")},
        {"iterations": 0},
        {"seed": -1},
    ],
)
def test_params_reject_nonsense(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        ALSParams(**kwargs)


def test_params_as_dict_round_trip():
    p = ALSParams(factors=8, regularization=0.1, alpha=4, iterations=3, seed=7)
    assert ALSParams(**p.as_dict()) == p
    assert isinstance(p.alpha, float)


# -- confidence ----------------------------------------------------------------

event_st = st.builds(
    lambda i, user, item, etype, dt: Event(f"e{i}", f"u{user}", f"i{item}", etype, T0 + dt),
    st.integers(0, 10**9),
    st.integers(0, 4),
    st.integers(0, 12),
    st.sampled_from(EVENT_TYPES),
    st.floats(0, 20 * 86_400, allow_nan=False),
)
events_st = st.lists(event_st, min_size=1, max_size=80, unique_by=lambda e: e.event_id)


@settings(max_examples=60, deadline=None)
@given(events_st, st.floats(0, 10 * 86_400), st.floats(0, 50))
def test_confidence_is_one_plus_alpha_times_the_uncapped_profile_weight(events, lag, alpha):
    as_of = max(e.ts for e in events) + lag
    profiles = build_profiles(events, Catalog(), NO_CAP)
    expected = {u: p.weights("item", NO_CAP, as_of) for u, p in profiles.items()}

    got = item_weights_from_events(events, NO_CAP, as_of)
    # profiles keep weights to float32 (each update rounds, ≤ 2^-24 relative); the batch path is float64
    rel = len(events) * 2.0**-23
    assert got.keys() == expected.keys()
    for u in expected:
        assert got[u].keys() == expected[u].keys()
        for i, w in expected[u].items():
            assert math.isclose(got[u][i], w, rel_tol=rel, abs_tol=1e-12)

    enc = encode_events(events)
    C = confidence_matrix(
        enc.user_codes, enc.item_codes, enc.type_codes, enc.ts,
        params=NO_CAP, as_of=as_of, alpha=alpha, shape=(len(enc.user_ids), len(enc.item_ids)),
    )
    assert C.nnz == sum(len(v) for v in expected.values())
    dense = C.toarray()
    for u, weights in expected.items():
        for i, w in weights.items():
            c = dense[enc.user_ids.index(u), enc.item_ids.index(i)]
            assert math.isclose(c, 1 + alpha * w, rel_tol=rel, abs_tol=1e-9)


@given(
    st.lists(
        st.tuples(st.sampled_from(["u1", "u2", "u3", "forget"]), st.integers(0, 4), st.integers(0, 6), st.sampled_from(["u1", "u2", "u3"])),
        max_size=40,
    )
)
def test_forget_drops_exactly_the_users_earlier_events(ops):
    """The snapshot reader's columns: a forgotten user's events before the forget are gone,
    later ones count (even a redelivered id), and ids left without events are not listed."""
    columns, kept = EventColumns(), []
    for n, (who, item, eid, target) in enumerate(ops):
        if who == "forget":
            columns.forget(target)
            kept = [e for e in kept if e.user_id != target]
            continue
        e = Event(f"e{eid}", who, f"i{item}", "view", T0 + n)
        columns.add(e)
        kept.append(e)
    assert _same(columns.encoded(), encode_events(kept))


@settings(max_examples=60, deadline=None)
@given(events_st, st.integers(1, 4))
def test_parts_read_by_user_merge_into_the_same_matrix(events, readers):
    """The snapshot readers: each encodes the users of its partitions; merged, the confidence
    matrix is the one of encoding every event in one place, up to the order of ids."""
    parts = [encode_events([e for e in events if int(e.user_id[1:]) % readers == r]) for r in range(readers)]
    merged, whole = merge_encoded(parts), encode_events(events)
    assert sorted(merged.user_ids) == sorted(whole.user_ids) and sorted(merged.item_ids) == sorted(whole.item_ids)
    as_of = T0 + 30 * 86_400

    def dense(enc):
        C = confidence_matrix(enc.user_codes, enc.item_codes, enc.type_codes, enc.ts, params=ProfileParams(), as_of=as_of, alpha=2.0,
                              shape=(len(enc.user_ids), len(enc.item_ids))).toarray()
        users, items = np.argsort(enc.user_ids), np.argsort(enc.item_ids)
        return C[users][:, items]

    assert np.allclose(dense(merged), dense(whole), rtol=1e-12, atol=0)


def test_merge_refuses_parts_that_share_a_user():
    a = encode_events([Event("e1", "u1", "i1", "view", T0)])
    b = encode_events([Event("e2", "u1", "i2", "view", T0)])
    with pytest.raises(ValueError, match="share users"):
        merge_encoded([a, b])
    assert merge_encoded([]).user_ids == [] and len(merge_encoded([]).ts) == 0


def _same(a, b) -> bool:
    return (
        a.user_ids == b.user_ids and a.item_ids == b.item_ids
        and all(np.array_equal(x, y) for x, y in zip(a[2:], b[2:]))
    )


def test_duplicate_event_ids_count_once_like_the_profile():
    e = Event("e1", "u", "i", "cart", T0)
    events = [e, Event("e2", "u", "i", "view", T0 + 10), e]
    profile = build_profiles(events, Catalog(), NO_CAP)["u"]
    got = item_weights_from_events(events, NO_CAP, T0 + 10)
    assert got.keys() == {"u"}
    assert got["u"] == pytest.approx(profile.weights("item", NO_CAP, T0 + 10), rel=2 * 2.0**-23)  # float32 profile weights
    assert got["u"]["i"] == pytest.approx(4.0 * 2 ** (-10 / NO_CAP.half_life_s["item"]) + 1.0, rel=1e-12)


def test_zero_weight_pairs_are_no_evidence():
    params = ProfileParams(beta={"view": 0.0, "click": 2.0, "fav": 3.0, "cart": 4.0, "purchase": 6.0})
    C = confidence_matrix(
        np.array([0, 0]), np.array([0, 1]), np.array([0, 1], dtype=np.int8), np.array([T0, T0]),
        params=params, as_of=T0, alpha=2.0,
    )
    assert C.shape == (1, 2) and C.nnz == 1 and C[0, 1] == pytest.approx(1 + 2 * 2.0)


# -- fold-in -------------------------------------------------------------------


@st.composite
def fold_case(draw):
    n = draw(st.integers(2, 30))
    k = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    Y = rng.normal(0, 1, (n, k)).astype(np.float32)
    m = draw(st.integers(1, n))
    idx = rng.choice(n, size=m, replace=False)
    c = 1 + draw(st.floats(0, 20)) * rng.random(m)
    lam = draw(st.floats(0.01, 5))
    return Y, idx, c, lam


def _naive(Y, idx, c, lam):
    """The normal equations written out with a dense C_u over all items."""
    Y = Y.astype(np.float64)
    n, k = Y.shape
    Cu = np.ones(n)
    Cu[idx] = c
    p = np.zeros(n)
    p[idx] = 1.0
    A = Y.T @ np.diag(Cu) @ Y + lam * np.eye(k)
    return np.linalg.solve(A, Y.T @ (Cu * p))


@settings(max_examples=80, deadline=None)
@given(fold_case())
def test_fold_in_solves_the_normal_equations(case):
    Y, idx, c, lam = case
    x = fold_in(Y, gram(Y), idx, c, lam)
    np.testing.assert_allclose(x, _naive(Y, idx, c, lam), rtol=1e-7, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(fold_case())
def test_fold_in_equals_implicit_recalculate_user(case):
    Y, idx, c, lam = case
    model = implicit_model(ALSParams(factors=Y.shape[1], regularization=lam), num_threads=1)
    model.item_factors = Y
    row = sp.csr_matrix((c.astype(np.float32), (np.zeros(len(idx), dtype=np.int32), idx)), shape=(1, Y.shape[0]))
    theirs = model.recalculate_user(0, row).astype(np.float64)
    # implicit solves in float32: compare against our float64 solve on the same float32 c.
    ours = fold_in(Y, gram(Y), idx, c.astype(np.float32), lam)
    scale = max(1.0, float(np.abs(ours).max()))
    # a float32 solve is good to about κ(A)·ε₃₂ of its system A = YᵀY + Y_uᵀ(C_u − I)Y_u + λI
    Yd = Y.astype(np.float64)
    A = Yd.T @ Yd + (Yd[idx].T * (c - 1.0)) @ Yd[idx] + lam * np.eye(Y.shape[1])
    tolerance = max(2e-4, 20 * np.linalg.cond(A) * np.finfo(np.float32).eps)
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=tolerance * scale)


def test_implicit_alpha_means_c_equals_alpha_times_w():
    """Why we keep implicit's alpha at 1: with alpha=α it takes c = α·w, not 1 + α·w."""
    rng = np.random.default_rng(3)
    Y = rng.normal(0, 1, (12, 4)).astype(np.float32)
    idx, w, alpha, lam = np.array([1, 5, 7]), np.array([0.5, 2.0, 3.0]), 4.0, 0.3
    import implicit.cpu.als

    model = implicit_model(ALSParams(factors=4, regularization=lam), num_threads=1)
    model.alpha = alpha
    model.item_factors = Y
    row = sp.csr_matrix((w.astype(np.float32), (np.zeros(3, dtype=np.int32), idx)), shape=(1, 12))
    theirs = model.recalculate_user(0, row)
    assert isinstance(model, implicit.cpu.als.AlternatingLeastSquares)
    np.testing.assert_allclose(theirs, fold_in(Y, gram(Y), idx, alpha * w, lam), atol=1e-4)
    assert not np.allclose(theirs, fold_in(Y, gram(Y), idx, 1 + alpha * w, lam), atol=1e-2)


def test_fold_in_edges():
    Y = np.eye(3, dtype=np.float32)
    assert np.array_equal(fold_in(Y, gram(Y), [], [], 0.1), np.zeros(3))
    with pytest.raises(ValueError, match="distinct"):
        fold_in(Y, gram(Y), [1, 1], [2.0, 2.0], 0.1)
    with pytest.raises(ValueError, match="range"):
        fold_in(Y, gram(Y), [3], [2.0], 0.1)
    with pytest.raises(ValueError, match="confidences"):
        fold_in(Y, gram(Y), [0, 1], [2.0], 0.1)


# -- fitting -------------------------------------------------------------------

def _planted(seed=0):
    """Users 0-19 use items 0-9, users 20-39 items 10-19; each sees 5 of its group's 10."""
    rng = np.random.default_rng(seed)
    users, items, w = [], [], []
    for u in range(40):
        group = 0 if u < 20 else 10
        for i in rng.choice(10, size=5, replace=False):
            users.append(u)
            items.append(group + i)
            w.append(rng.uniform(0.5, 3.0))
    W = sp.csr_matrix((w, (users, items)), shape=(40, 20))
    C = W.copy()
    C.data = 1 + 10.0 * C.data
    return C


# Two factors for two groups: more would fit each user's own 5 items (checked over
# 20 data sets × 5 seeds: no failure at this setting, ~40% with 4 factors, λ = 0.1).
PLANTED_PARAMS = ALSParams(factors=2, regularization=1.0, alpha=10.0, iterations=10, seed=1)


def test_fit_shapes_and_determinism():
    C = _planted()
    X, Y = fit(C, PLANTED_PARAMS)
    assert X.shape == (40, 2) and Y.shape == (20, 2)
    assert X.dtype == Y.dtype == np.float32
    X2, Y2 = fit(C, PLANTED_PARAMS)
    assert np.array_equal(X, X2) and np.array_equal(Y, Y2)
    X3, _ = fit(C, ALSParams(**{**PLANTED_PARAMS.as_dict(), "seed": 2}))
    assert not np.array_equal(X, X3)


def test_fit_recovers_planted_groups():
    C = _planted()
    X, Y = fit(C, PLANTED_PARAMS)
    scores = X @ Y.T
    scores[C.nonzero()] = -np.inf  # rank the unseen items only
    for u in range(40):
        group = set(range(10)) if u < 20 else set(range(10, 20))
        top = np.argsort(-scores[u])[:5]  # = all 5 unseen items of its own group
        assert set(top.tolist()) == group - set(C[u].indices.tolist()), (u, top)
    # A newcomer folded in from two group-B items gets group-B recommendations.
    x = fold_in(Y, gram(Y), [12, 15], [11.0, 21.0], PLANTED_PARAMS.regularization)
    s = Y @ x
    s[[12, 15]] = -np.inf
    assert set(np.argsort(-s)[:5].tolist()) <= set(range(10, 20))


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="no entries"):
        fit(sp.csr_matrix((3, 3)), PLANTED_PARAMS)
    with pytest.raises(ValueError, match="≥ 1"):
        fit(sp.csr_matrix(np.array([[0.5, 0], [0, 2]])), PLANTED_PARAMS)


def test_fit_does_not_warn_about_blas_threads(recwarn, monkeypatch):
    import implicit.utils

    monkeypatch.setattr(implicit.utils, "_checked_blas_config", False)  # implicit checks once per process
    fit(_planted(), ALSParams(factors=2, iterations=1))
    assert not [w for w in recwarn if "BLAS" in str(w.message) or "OpenBLAS" in str(w.message)]
