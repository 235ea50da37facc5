"""The factor model's items laid out for ranking, and the vocabulary of categories and roots.

The items are sorted by (root, category), so each category and each root is one contiguous
column range of the transposed factor matrix: the domain term is a handful of slice adds and a
category filter scans only its range.  Items outside the model are resolved (and memoised) on
first sight.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Mapping

import numpy as np

from strata.models.catalog import ROOT_UNKNOWN

_MEMO_CAP = 1 << 20


class ItemIndex:
    """Dense positions, categories and roots of items, for one factor model and catalog state.

    `perm` takes a dense position to its model row and `inv` back; `Yt` is the k × n factor
    matrix in dense order, `Y` the model's rows as float32.  The vocabulary grows as new
    categories are seen; rebuild when the catalog moves known items to another category.
    `resolve` updates a memo, so one thread at a time.
    """

    def __init__(self, model: Any | None, category_of: Callable[[str], str | None], root_of: Callable[[str], str]) -> None:
        self._category_of = category_of
        self._root_of = root_of
        self.cat_index: dict[str | None, int] = {}
        self.cat_ids: list[str | None] = []
        self.cat_root: list[int] = []
        self.cat_range: list[tuple[int, int]] = []
        self.root_index: dict[str, int] = {}
        self.root_ids: list[str] = []
        self.root_range: list[tuple[int, int]] = []
        self._memo: dict[str, tuple[int, int, int]] = {}
        if model is None:
            self.n = self.dims = 0
            self.Yt = self.Y = np.zeros((0, 0), np.float32)
            self.perm = self.inv = self.item_cat = self.item_root = self.dense_cat = np.zeros(0, np.int64)
            self.index: Mapping[str, int] = {}
            self.ids: tuple[str, ...] = ()
            return
        ids = tuple(model.item_ids)
        n = len(ids)
        Y = np.asarray(model.Y, dtype=np.float32)
        if Y.ndim != 2 or Y.shape[0] != n:
            raise ValueError(f"model.Y has shape {Y.shape}, expected ({n}, k)")
        self.n, self.dims = n, Y.shape[1]
        self.ids, self.Y, self.index = ids, Y, model.index
        cis = np.fromiter((self.cat(category_of(i)) for i in ids), dtype=np.int64, count=n)
        ris = np.asarray(self.cat_root, dtype=np.int64)[cis] if n else np.zeros(0, np.int64)
        perm = np.lexsort((np.arange(n), cis, ris))  # by root, then category, then model row
        inv = np.empty(n, np.int64)
        inv[perm] = np.arange(n)
        self.perm, self.inv = perm, inv
        self.Yt = np.ascontiguousarray(Y[perm].T)  # k × n, columns in (root, category) order
        self.cat_range = [(0, 0)] * len(self.cat_ids)
        self.root_range = [(0, 0)] * len(self.root_ids)
        for keys, ranges in ((cis[perm], self.cat_range), (ris[perm], self.root_range)):
            if n == 0:
                continue
            cuts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
            starts = np.concatenate(([0], cuts))
            ends = np.concatenate((cuts, [n]))
            for s, e in zip(starts.tolist(), ends.tolist()):
                ranges[int(keys[s])] = (s, e)
        self.item_cat = cis
        self.item_root = ris
        self.dense_cat = cis[perm]  # category index by dense position

    def cat(self, cat: str | None) -> int:
        """The index of a category, added with its root on first sight."""
        ci = self.cat_index.get(cat)
        if ci is None:
            root = ROOT_UNKNOWN if cat is None else self._root_of(cat)
            ri = self.root_index.get(root)
            if ri is None:
                ri = self.root_index[root] = len(self.root_ids)
                self.root_ids.append(root)
                self.root_range.append((0, 0))
            ci = self.cat_index[cat] = len(self.cat_ids)
            self.cat_ids.append(cat)
            self.cat_root.append(ri)
            self.cat_range.append((0, 0))
        return ci

    def resolve(self, item: str) -> tuple[int, int, int]:
        """(dense position or −1, category index, root index) of an item."""
        info = self._memo.get(item)
        if info is None:
            row = self.index.get(item)
            if row is not None:
                info = (int(self.inv[row]), int(self.item_cat[row]), int(self.item_root[row]))
            else:
                ci = self.cat(self._category_of(item))
                info = (-1, ci, self.cat_root[ci])
            if len(self._memo) >= _MEMO_CAP:
                self._memo.clear()
            self._memo[item] = info
        return info

    def rows(self, items) -> np.ndarray:
        """The model row of each item, −1 for those outside the model."""
        n = len(items)
        return np.fromiter(map(self.index.get, items, itertools.repeat(-1, n)), np.int64, n)

    def locate(self, items: list[str], rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
        """(dense position or −1, category index, root index) of each item as three arrays, and
        the indices of the items outside the model; vectorised for the model's items (whose
        `rows` may be given)."""
        n = len(items)
        if rows is None:
            rows = self.rows(items)
        if self.n:
            safe = np.maximum(rows, 0)
            pos = np.where(rows >= 0, self.inv[safe], -1)
            ci = self.item_cat[safe]
            ri = self.item_root[safe]
        else:
            pos = np.full(n, -1, np.int64)
            ci = np.zeros(n, np.int64)
            ri = np.zeros(n, np.int64)
        outside = np.flatnonzero(pos < 0).tolist()
        for t in outside:
            _, ci[t], ri[t] = self.resolve(items[t])
        return pos, ci, ri, outside

    def rows_at(self, pos: np.ndarray) -> np.ndarray:
        """The factor rows of dense positions, as one contiguous array (zeros for −1)."""
        Y = self.Y[self.perm[np.maximum(pos, 0)]] if self.n else np.zeros((pos.shape[0], self.dims), np.float32)
        Y[pos < 0] = 0.0
        return Y

    def filter(self, category: str | None) -> tuple[int, int]:
        """The dense range of the items of `category` (a category or a root); all without one."""
        if category is None:
            return 0, self.n
        ri = self.root_index.get(category)
        if ri is not None:
            return self.root_range[ri]
        ci = self.cat_index.get(category)
        if ci is not None:
            return self.cat_range[ci]
        return 0, 0

    def matches(self, ci: int, ri: int, category: str | None) -> bool:
        """Whether an item of category ci under root ri is in `category` (a category or a root)."""
        return category is None or self.cat_ids[ci] == category or self.root_ids[ri] == category

    def positions(self, items: Mapping[str, Any], lo: int, hi: int) -> np.ndarray:
        """Dense positions, within lo..hi, of those of `items` in the model."""
        if not items:
            return np.zeros(0, np.int64)
        rows = self.rows(list(items))
        pos = self.inv[rows[rows >= 0]]
        return pos[(pos >= lo) & (pos < hi)]
