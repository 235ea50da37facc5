"""Implicit-feedback ALS on the profile's item weights (docs/design.md §3, "Matrix factorisation").

The confidence of user u in item i is

    c_ui = 1 + α · w_ui,    w_ui = Σ_e β(type_e) · 2^(−(T − ts_e) / H_item)

i.e. w is the item-layer weight of u's profile as of the snapshot time T, with
the same β and half-life but *without* the item cap.  Pairs without events have
c = 1 and preference 0; pairs with w > 0 have preference 1.  Pairs whose weight
is exactly 0 (a β = 0 type, or underflow of very old events) are no evidence
and are left out, here and in `fold_in` alike.

A user's live vector is folded in from their current item layer:

    x_u = (YᵀY + Y_uᵀ (C_u − I) Y_u + λI)⁻¹ Y_uᵀ C_u 1

with YᵀY computed once per model version (`gram`).

The `implicit` library's convention (checked against implicit 0.7.3,
`implicit/cpu/_als.pyx`): the values of the matrix passed to `fit` /
`recalculate_user` ARE the confidences c — its solver builds
b = Σ c·y_i and A = YᵀY + λI + Σ (c − 1)·y_i y_iᵀ — after multiplying the
matrix by its own `alpha` when alpha ≠ 1.  So `AlternatingLeastSquares(alpha=α)`
on raw weights means c = α·w (not 1 + α·w, and a weight below 1/α even lowers
A).  We therefore hand it c = 1 + α·w ourselves and keep its alpha at 1.0.

`implicit` is imported lazily: a worker that only folds users in needs numpy
alone.
"""
from __future__ import annotations

import math
from array import array
from typing import Iterable, NamedTuple, Sequence

import numpy as np
import scipy.sparse as sp

from strata.models.als_params import ALSParams
from strata.models.events import EVENT_TYPES, Event
from strata.models.profile import ProfileParams

TYPE_CODE = {t: i for i, t in enumerate(EVENT_TYPES)}


# -- confidence ----------------------------------------------------------------


class EncodedEvents(NamedTuple):
    """Events as parallel arrays; `user_codes[j]` indexes `user_ids`, likewise items."""

    user_ids: list[str]
    item_ids: list[str]
    user_codes: np.ndarray  # int32
    item_codes: np.ndarray  # int32
    type_codes: np.ndarray  # int8, index into EVENT_TYPES
    ts: np.ndarray  # float64


class EventColumns:
    """Builds `EncodedEvents` one event at a time, without keeping the events.

    Ids are numbered in order of first appearance.  With `dedupe`, a repeated
    (user, event_id) counts once, as the profile's duplicate filter would have it
    (the profile only remembers a user's last few ids, so a duplicate arriving much
    later is counted there twice).  `forget(user)` drops the user's events added so
    far (a privacy control record): the user continues under a fresh code, and the
    old code's rows go at `encoded()`.
    """

    def __init__(self, dedupe: bool = True) -> None:
        self.dedupe = dedupe
        self._users: dict[str, int] = {}  # user → current code
        self._user_of: list[str] = []  # code → user (forgotten codes included)
        self._items: dict[str, int] = {}
        self._seen: set[tuple[int, str]] = set()  # (user code, event id)
        self._forgotten: list[int] = []
        # arrays, not lists: compact, and nothing in them for the garbage collector to visit
        self._u = array("i")
        self._i = array("i")
        self._t = array("b")
        self._ts = array("d")

    def add(self, event: Event) -> bool:
        """Append one event; False for a duplicate (with `dedupe`)."""
        u = self._users.get(event.user_id)
        if u is None:
            u = self._users[event.user_id] = len(self._user_of)
            self._user_of.append(event.user_id)
        if self.dedupe:
            key = (u, event.event_id)
            if key in self._seen:
                return False
            self._seen.add(key)
        i = self._items.get(event.item_id)
        if i is None:
            i = self._items[event.item_id] = len(self._items)
        self._u.append(u)
        self._i.append(i)
        self._t.append(TYPE_CODE[event.type])
        self._ts.append(event.ts)
        return True

    def forget(self, user_id: str) -> None:
        u = self._users.pop(user_id, None)
        if u is not None:
            self._forgotten.append(u)

    def encoded(self) -> EncodedEvents:
        u = np.array(self._u, dtype=np.int32)
        i = np.array(self._i, dtype=np.int32)
        t = np.array(self._t, dtype=np.int8)
        ts = np.array(self._ts, dtype=np.float64)
        user_ids, item_ids = list(self._user_of), list(self._items)
        if self._forgotten:
            keep = ~np.isin(u, np.asarray(self._forgotten, dtype=np.int32))
            u, i, t, ts = u[keep], i[keep], t[keep], ts[keep]
            u, user_ids = _renumber(u, user_ids)
            i, item_ids = _renumber(i, item_ids)
        return EncodedEvents(user_ids, item_ids, u, i, t, ts)


def _renumber(codes: np.ndarray, ids: list[str]) -> tuple[np.ndarray, list[str]]:
    """Codes 0..k−1 for the ids still in use, in order of first appearance in `codes`."""
    used, first = np.unique(codes, return_index=True)
    order = used[np.argsort(first, kind="stable")]
    remap = np.full(len(ids), -1, np.int32)
    remap[order] = np.arange(len(order), dtype=np.int32)
    return remap[codes], [ids[c] for c in order.tolist()]


def merge_encoded(parts: Sequence[EncodedEvents]) -> EncodedEvents:
    """One encoding from encodings of disjoint sets of users (e.g. read from different
    partitions of the user-keyed events topic): users keep their order part after part,
    items are numbered in order of first appearance.  ValueError if a user is in two parts."""
    user_ids: list[str] = []
    item_code: dict[str, int] = {}
    users, items = [], []
    for part in parts:
        users.append(part.user_codes + np.int32(len(user_ids)))
        user_ids.extend(part.user_ids)
        remap = np.fromiter((item_code.setdefault(i, len(item_code)) for i in part.item_ids), np.int32, len(part.item_ids))
        items.append(remap[part.item_codes])
    if len(set(user_ids)) != len(user_ids):
        raise ValueError("the parts share users: a user's events must all be in one part")

    def cat(arrays, dtype):
        return np.concatenate(arrays).astype(dtype, copy=False) if arrays else np.zeros(0, dtype)

    return EncodedEvents(
        user_ids, list(item_code), cat(users, np.int32), cat(items, np.int32),
        cat([p.type_codes for p in parts], np.int8), cat([p.ts for p in parts], np.float64),
    )


def encode_events(events: Iterable[Event], dedupe: bool = True) -> EncodedEvents:
    """Turn events into code arrays (see `EventColumns`)."""
    columns = EventColumns(dedupe)
    for e in events:
        columns.add(e)
    return columns.encoded()


def event_weights(type_codes: np.ndarray, ts: np.ndarray, params: ProfileParams, as_of: float) -> np.ndarray:
    """β(type) · 2^(−(as_of − ts) / H_item) per event (float64).

    `type_codes` index EVENT_TYPES.  Events after `as_of` weigh more than β, as
    in `Profile.weights`; pick `as_of` ≥ the snapshot's last event time.
    """
    type_codes = np.asarray(type_codes)
    ts = np.asarray(ts, dtype=np.float64)
    if type_codes.shape != ts.shape:
        raise ValueError(f"type_codes and ts differ in shape: {type_codes.shape} vs {ts.shape}")
    if type_codes.size and (type_codes.min() < 0 or type_codes.max() >= len(EVENT_TYPES)):
        raise ValueError(f"type codes must be in 0..{len(EVENT_TYPES) - 1}")
    beta = np.array([params.beta[t] for t in EVENT_TYPES], dtype=np.float64)
    return beta[type_codes] * np.exp2(-(float(as_of) - ts) / params.half_life_s["item"])


def weight_matrix(
    user_codes: np.ndarray,
    item_codes: np.ndarray,
    weights: np.ndarray,
    shape: tuple[int, int] | None = None,
) -> sp.csr_matrix:
    """W (users × items, float64 CSR): per-event weights summed per pair; zero sums dropped."""
    u = np.asarray(user_codes)
    i = np.asarray(item_codes)
    w = np.asarray(weights, dtype=np.float64)
    if not (u.shape == i.shape == w.shape) or u.ndim != 1:
        raise ValueError(f"user_codes, item_codes and weights must be 1-d of one length, got {u.shape}, {i.shape}, {w.shape}")
    if w.size and not np.isfinite(w).all():
        raise ValueError("weights must be finite")
    if shape is None:
        shape = (int(u.max()) + 1 if u.size else 0, int(i.max()) + 1 if i.size else 0)
    if u.size and (u.min() < 0 or u.max() >= shape[0] or i.min() < 0 or i.max() >= shape[1]):
        raise ValueError(f"codes out of range for shape {shape}")
    index_dtype = np.int32 if max(shape) < 2**31 - 1 else np.int64
    W = sp.coo_matrix((w, (u.astype(index_dtype), i.astype(index_dtype))), shape=shape).tocsr()
    W.sum_duplicates()  # also sorts the indices
    W.eliminate_zeros()
    return W


def confidence_from_weights(W: sp.csr_matrix, alpha: float) -> sp.csr_matrix:
    """C with c = 1 + α·w on W's stored entries (float64)."""
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number ≥ 0, got {alpha!r}")
    C = sp.csr_matrix(W, dtype=np.float64, copy=True)
    C.data = 1.0 + float(alpha) * C.data
    return C


def confidence_matrix(
    user_codes: np.ndarray,
    item_codes: np.ndarray,
    type_codes: np.ndarray,
    ts: np.ndarray,
    *,
    params: ProfileParams,
    as_of: float,
    alpha: float,
    shape: tuple[int, int] | None = None,
) -> sp.csr_matrix:
    """The training matrix Cui (users × items, float64 CSR) from event code arrays.

    One row per event in the inputs (dedupe them first, see `encode_events`).
    """
    w = event_weights(type_codes, ts, params, as_of)
    return confidence_from_weights(weight_matrix(user_codes, item_codes, w, shape), alpha)


def item_weights_from_events(
    events: Iterable[Event], params: ProfileParams, as_of: float
) -> dict[str, dict[str, float]]:
    """user → item → decayed item-layer weight as of `as_of`, without the cap."""
    enc = encode_events(events)
    W = weight_matrix(
        enc.user_codes,
        enc.item_codes,
        event_weights(enc.type_codes, enc.ts, params, as_of),
        (len(enc.user_ids), len(enc.item_ids)),
    )
    out: dict[str, dict[str, float]] = {}
    for u, user in enumerate(enc.user_ids):
        lo, hi = W.indptr[u], W.indptr[u + 1]
        if hi > lo:
            out[user] = {enc.item_ids[j]: float(x) for j, x in zip(W.indices[lo:hi], W.data[lo:hi])}
    return out


# -- training ------------------------------------------------------------------


def implicit_model(params: ALSParams, *, num_threads: int = 0):
    """An unfitted `implicit` CPU ALS model set up for our convention (its alpha = 1)."""
    from threadpoolctl import threadpool_limits

    import implicit.cpu.als  # loads scipy's BLAS too, so the limit below reaches it

    with threadpool_limits(limits=1, user_api="blas"):  # else implicit warns about BLAS threads
        return implicit.cpu.als.AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=1.0,
            dtype=np.float32,
            iterations=params.iterations,
            calculate_training_loss=False,
            num_threads=num_threads,
            random_state=params.seed,
        )


def fit(Cui: sp.csr_matrix, params: ALSParams, *, num_threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Factorise a confidence matrix (values c ≥ 1, see `confidence_matrix`).

    Returns (X, Y): user factors (users × k) and item factors (items × k),
    float32.  Deterministic for a given seed.  Users or items without entries
    get zero vectors.
    """
    if not sp.issparse(Cui) or Cui.ndim != 2:
        raise ValueError("Cui must be a 2-d scipy sparse matrix (users × items)")
    C = sp.csr_matrix(Cui, dtype=np.float32, copy=True)
    C.sum_duplicates()
    if C.nnz == 0:
        raise ValueError("Cui has no entries: nothing to train on")
    if not np.isfinite(C.data).all():
        raise ValueError("Cui holds non-finite confidences")
    if C.data.min() < 1.0:
        raise ValueError(f"confidences must be ≥ 1 (c = 1 + α·w), found {C.data.min()!r}")

    from threadpoolctl import threadpool_limits

    model = implicit_model(params, num_threads=num_threads)
    with threadpool_limits(limits=1, user_api="blas"):
        model.fit(C, show_progress=False)
    X = np.ascontiguousarray(model.user_factors, dtype=np.float32)
    Y = np.ascontiguousarray(model.item_factors, dtype=np.float32)
    if not (np.isfinite(X).all() and np.isfinite(Y).all()):  # implicit checks too; be sure
        raise ValueError("ALS diverged (non-finite factors); try a larger regularization")
    return X, Y


# -- folding in ----------------------------------------------------------------


def gram(Y: np.ndarray) -> np.ndarray:
    """YᵀY in float64 (k × k)."""
    Y64 = np.asarray(Y, dtype=np.float64)
    return Y64.T @ Y64


def fold_in(
    Y: np.ndarray,
    YtY: np.ndarray,
    item_idx: Sequence[int] | np.ndarray,
    confidence: Sequence[float] | np.ndarray,
    regularization: float,
) -> np.ndarray:
    """x_u = (YᵀY + Y_uᵀ(C_u − I)Y_u + λI)⁻¹ Y_uᵀ C_u 1, solved in float64.

    `item_idx` are distinct rows of Y, `confidence` their c (= 1 + α·w).
    No items gives the zero vector.
    """
    k = Y.shape[1]
    idx = np.asarray(item_idx, dtype=np.intp).reshape(-1)
    c = np.asarray(confidence, dtype=np.float64).reshape(-1)
    if idx.shape != c.shape:
        raise ValueError(f"{idx.size} items but {c.size} confidences")
    if idx.size == 0:
        return np.zeros(k, dtype=np.float64)
    if idx.min() < 0 or idx.max() >= Y.shape[0]:
        raise ValueError(f"item index out of range 0..{Y.shape[0] - 1}")
    if np.unique(idx).size != idx.size:
        raise ValueError("item indices must be distinct (sum the weights of an item first)")
    if not np.isfinite(c).all():
        raise ValueError("confidences must be finite")
    return solve_fold_in(Y, YtY, idx, c, regularization)


def fold_in_weights(
    Y: np.ndarray, YtY: np.ndarray, rows: np.ndarray, weights: np.ndarray, alpha: float, regularization: float
) -> np.ndarray | None:
    """The user vector (float32, ready to score against Y) from the rows of Y of a user's items
    and their decayed weights: c = 1 + α·w for every row with w > 0; None when there is none.
    Rows must be distinct and in range (one per key of a profile layer, looked up in the
    model's index); the weights' order is the order of the solve's sums."""
    rows = np.asarray(rows, dtype=np.intp)
    weights = np.asarray(weights, dtype=np.float64)
    keep = weights > 0
    if not keep.all():
        rows, weights = rows[keep], weights[keep]
    if rows.shape[0] == 0:
        return None
    c = 1.0 + float(alpha) * weights
    if not np.isfinite(c).all():
        raise ValueError("item weights must be finite")
    return solve_fold_in(Y, YtY, rows, c, float(regularization)).astype(np.float32)


def solve_fold_in(Y: np.ndarray, YtY: np.ndarray, idx: np.ndarray, c: np.ndarray, regularization: float) -> np.ndarray:
    """`fold_in` for arguments known to be right (distinct in-range rows, finite float64
    confidences, at least one item): the solve alone, for callers that build them so."""
    k = Y.shape[1]
    Yu = Y[idx].astype(np.float64)
    A = YtY + (Yu.T * (c - 1.0)) @ Yu
    A.flat[:: k + 1] += regularization
    b = Yu.T @ c
    return np.linalg.solve(A, b)
