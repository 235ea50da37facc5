"""The bounded top-k search: a request's dense finalists from its candidates and the few items
whose bound reaches them, without scoring every item.

An item j that is no candidate scores s(j) = a_fac·x·y_j + λ_domain·ŵ_domain(c(j)) ≤
a_fac·‖x‖·‖y_j‖ + λ_domain·ŵ_domain(c(j)) (Cauchy–Schwarz).  Let L be the (k + margin)-th best
candidate's score: an item whose bound is below L cannot be a finalist, and within each category
those are the items under a norm threshold — the tail of the category in norm order.  On a shop
where a user's own items and the popular pools lead (the item layer's own-item term is large),
that leaves a few hundred items to score instead of the whole catalogue.
"""
from __future__ import annotations

import numpy as np

from strata.models.ranking.items import ItemIndex
from strata.models.ranking.plan import Plan

MARGIN = 8  # finalists beyond k: the dense scores' float32 rounding must not change the top k
_GROUPS = 64
_GROUP_ROWS = np.arange(_GROUPS)


class NormIndex:
    """Each category's dense positions by descending factor norm, and a sorted key that counts,
    in one `searchsorted`, a category's items above a norm.

    Category segment g (the g-th category range in dense order) holds keys g + 1 − ‖y‖/D, in
    (g, g + 1] with D just above the largest norm, ascending within the segment as the norms
    descend."""

    def __init__(self, items: ItemIndex) -> None:
        self._items = items
        n = items.n
        if n == 0:
            self._seg_start = self._seg_cat = self._by_norm = np.zeros(0, np.int64)
            self._marked = np.zeros(0, bool)
            self._norm_key = np.zeros(0)
            self._norm_max, self._norm_scale = 0.0, 1.0
            return
        dense_cat = items.dense_cat
        norms = np.sqrt(np.einsum("ij,ij->j", items.Yt, items.Yt, dtype=np.float64))
        seg = np.zeros(n, np.int64)
        seg[1:] = np.cumsum(dense_cat[1:] != dense_cat[:-1])
        order = np.lexsort((-norms, seg))
        self._seg_start = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
        self._seg_cat = dense_cat[self._seg_start]
        self._norm_max = float(norms.max())
        self._norm_scale = self._norm_max * 1.001 + 1e-30
        self._by_norm = order
        self._marked = np.zeros(n, bool)  # scratch of `finalists`, all False between its calls
        self._norm_key = seg[order] + 1.0 - norms[order] / self._norm_scale

    def finalists(self, plan: Plan, x: np.ndarray, xf: np.ndarray, lo: int, hi: int, share: float) -> np.ndarray | None:
        """The plan's dense finalists (model rows) for user vector x (xf: its factor term, as
        the dense pass's row), or None when the bound leaves more than `share` of the range lo..hi
        to score (then the dense pass scores every item)."""
        n_final = plan.request.k + MARGIN
        cand = plan.candidates
        if lo >= hi or cand.pos.shape[0] < n_final:
            return None
        items = self._items
        dom_of_cat = np.zeros(len(items.cat_ids))
        cis, terms = plan.score.domain_terms(plan.by_category)
        dom_of_cat[cis] = terms
        scored = self._candidates(plan, xf, dom_of_cat, lo, hi, n_final)
        if scored is None:
            return None
        cpos, s_c, excluded = scored
        finite = s_c[np.isfinite(s_c)]
        if finite.shape[0] < n_final:
            return None
        L = float(np.partition(finite, finite.shape[0] - n_final)[finite.shape[0] - n_final])
        extra = self._reaching(L, plan.score.terms(xy=float(np.sqrt(x @ x))).factor, plan.score.domain, dom_of_cat,
                               lo, hi, share)
        if extra is None:
            return None
        if extra.shape[0]:
            marked = self._marked
            marked[cpos] = True
            marked[excluded] = True
            extra = extra[~marked[extra]]
            marked[cpos] = False
            marked[excluded] = False
            s_e = items.Y[items.perm[extra]] @ xf + dom_of_cat[items.dense_cat[extra]]
            pos = np.concatenate((cpos, extra))
            score = np.concatenate((s_c, s_e))
        else:
            pos, score = cpos, s_c
        return items.perm[pos[top_indices(score, n_final)]]

    def _candidates(self, plan: Plan, xf: np.ndarray, dom_of_cat: np.ndarray, lo: int, hi: int,
                    n_final: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The dense positions and scores of the candidates within lo..hi (−inf for the items the
        request leaves out, whose positions come third), or None with fewer than n_final."""
        cand = plan.candidates
        # the pools' rows are kept contiguous, the own items' gathered (all of them, for pools
        # located while the bound was not tried)
        fac = [Y @ xf for Y in cand.ys] if all(Y is not None for Y in cand.ys) else []
        pooled = sum(f.shape[0] for f in fac)
        if pooled < cand.pos.shape[0]:
            fac.append(self._items.rows_at(cand.pos[pooled:]) @ xf)
        inside = (cand.pos >= lo) & (cand.pos < hi)
        cpos = cand.pos[inside]
        if cpos.shape[0] < n_final:
            return None
        s_c = np.concatenate(fac)[inside] + dom_of_cat[cand.ci[inside]] + cand.add[inside]
        excluded = self._items.positions(plan.purchased, lo, hi)
        if excluded.shape[0]:
            marked = self._marked
            marked[excluded] = True
            s_c[marked[cpos]] = -np.inf
            marked[excluded] = False
        return cpos, s_c, excluded

    def _reaching(self, L: float, a: float, l_dom: float, dom_of_cat: np.ndarray, lo: int, hi: int,
                  share: float) -> np.ndarray | None:
        """The dense positions within lo..hi whose bound a·‖y_j‖ + λ_domain·ŵ_domain(c(j))
        reaches L, by category and norm, or None when they are more than `share` of the range."""
        # generous by 1e-6 of the scores' scale for the rounding of float32 factors and of the products
        if lo == 0 and hi == self._items.n:
            g_lo, g_hi = 0, self._seg_start.shape[0]
        else:
            g_lo, g_hi = np.searchsorted(self._seg_start, (lo, hi - 1), side="right").tolist()
            g_lo -= 1
        dom_of_seg = dom_of_cat[self._seg_cat[g_lo:g_hi]]
        slack = 1e-6 * (abs(L) + l_dom + a * self._norm_max + 1.0)
        g = np.arange(g_lo, g_hi)
        need = (L - slack - dom_of_seg) / (a * (1.0 + 1e-6)) if a > 0 else np.where(dom_of_seg >= L - slack, 0.0, np.inf)
        q = g + 1.0 - np.clip(need / self._norm_scale, 0.0, 1.0)
        ends = np.searchsorted(self._norm_key, q, side="right")
        starts = self._seg_start[g_lo:g_hi]
        counts = np.maximum(ends - starts, 0)
        total = int(counts.sum())
        if total > share * (hi - lo):
            return None
        offsets = np.repeat(starts - np.cumsum(counts) + counts, counts)
        return self._by_norm[offsets + np.arange(total)]


def top_indices(s: np.ndarray, n: int) -> np.ndarray:
    """Indices of the n largest finite values of s (fewer if s has fewer), exactly, in no order.

    Long arrays are cut by group maxima first.  Split the first `_GROUPS`·g values into g
    groups of `_GROUPS` (group j: indices j, j + g, j + 2g, …, so that the maxima are one
    vectorised pass) and let t be the n-th largest group maximum: at least n values are ≥ t,
    so every one of the n largest is ≥ t and lies in a group whose maximum is ≥ t, or in the
    short tail after the last whole row — a few groups instead of a scan of every index.
    Whenever that saves nothing (ties, −inf rows) it falls back to a full argpartition.
    """
    m = s.shape[0]
    if m <= n:
        top = np.arange(m)
    else:
        top = None
        g = m // _GROUPS
        if g >= 64 and g > n:
            maxes = np.fmax.reduce(s[: g * _GROUPS].reshape(_GROUPS, g), axis=0)  # NaN-blind
            t = np.partition(maxes, g - n)[g - n]
            if np.isfinite(t):
                groups = np.flatnonzero(maxes >= t)
                if groups.shape[0] <= g // 8:
                    idx = (_GROUP_ROWS[:, None] * g + groups).ravel()
                    if g * _GROUPS < m:
                        idx = np.concatenate((idx, np.arange(g * _GROUPS, m)))
                    idx = idx[s[idx] >= t]
                    if idx.shape[0] >= n:
                        top = idx[np.argpartition(s[idx], idx.shape[0] - n)[idx.shape[0] - n :]]
        if top is None:  # NaN (which argpartition takes for the largest) as −inf
            top = np.argpartition(np.fmax(s, -np.inf), m - n)[m - n :]
    return top[np.isfinite(s[top])]


