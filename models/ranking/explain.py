"""What an answer says about each of its items: the finalists' exact terms (each layer's
contribution, summing to the score) and short reasons; and the answer for a user without a
profile, scored by the same definition (`Score.terms`).

The reasons are the largest terms of an item's score, in words, so they name what ranked it.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from strata.models.popularity import Popularity
from strata.models.ranking.items import ItemIndex
from strata.models.ranking.params import RankParams
from strata.models.ranking.plan import Plan
from strata.models.ranking.request import Recommendations
from strata.models.ranking.score import Score, Terms


# One finalist, exactly scored: (s(j), j, its terms, category index, root index); a plain tuple,
# made for every finalist of every request.
Scored = tuple[float, str, Terms, int, int]


def exact(plan: Plan, x: np.ndarray | None, finalists: Iterable[tuple[str, int, int, int]], Y: np.ndarray) -> list[Scored]:
    """The plan's top k of its finalists (item, model row or −1, category index, root index), each
    scored exactly from user vector x and the model's rows Y, best first (ties by item)."""
    score, own_of, dom_w, root_w = plan.score, plan.own, plan.by_category, plan.by_root
    in_pool, in_more, pop = plan.candidates.in_pool, plan.candidates.in_more, plan.candidates.pop
    rows: list[Scored] = []
    for j, row, ci, ri in finalists:
        t = in_pool.get(j)
        if t is None:
            t = in_more.get(j)
        terms = score.terms(own_of.get(j, 0.0), j in own_of, float(np.dot(x, Y[row])) if x is not None and row >= 0 else 0.0,
                            dom_w.get(ci, 0.0), root_w.get(ri, 0.0), float(pop[t]) if t is not None else 0.0)
        rows.append((terms.total, j, terms, ci, ri))
    rows.sort(key=lambda r: (-r[0], r[1]))
    return rows[: plan.request.k]


def reasons(rows: list[Scored], iw: dict[str, float], dw: dict[str, float], rw: dict[str, float],
            x: np.ndarray | None, items: ItemIndex, n: int) -> list[list[str]]:
    """At most n reasons per item, the largest terms first, from the user's item, domain and
    overall weights (iw, dw, rw) at the request's time."""
    user_rows: list[int] = []
    user_items: list[str] = []
    if x is not None:
        for i in iw:
            row = items.index.get(i)
            if row is not None:
                user_rows.append(row)
                user_items.append(i)
    Yu = items.Y[user_rows] if user_rows else None
    wu = np.asarray([iw[i] for i in user_items], np.float64)
    out = []
    for _, j, terms, ci, ri in rows:
        said: list[tuple[float, str]] = []
        if terms.own > 0:
            said.append((terms.own, f"your item {j} (w {iw[j]:.1f})"))
        if terms.factor > 0:
            text = "your long-term taste"
            pos = items.resolve(j)[0]
            if Yu is not None and pos >= 0:
                sims = (Yu @ items.Y[items.perm[pos]]).astype(np.float64) * wu
                for idx in np.argsort(-sims, kind="stable")[:3].tolist():
                    if sims[idx] > 0 and user_items[idx] != j:
                        i = user_items[idx]
                        text = f"like {i} (w {iw[i]:.1f})"
                        break
            said.append((terms.factor, text))
        if terms.domain > 0:
            c = items.cat_ids[ci]
            said.append((terms.domain, f"your category {c} (w {dw.get(c, 0.0):.1f})"))
        if terms.overall > 0:
            r = items.root_ids[ri]
            said.append((terms.overall, f"popular in {r}" if rw.get(r, 0.0) > 0 else "popular now"))
        said.sort(key=lambda t: -t[0])
        out.append([t for _, t in said[:n]])
    return out


def cold(k: int, popularity: Popularity, category: str | None, explain: bool, user_id: str | None,
         items: ItemIndex, params: RankParams, version: Any) -> Recommendations:
    """Recent popular items (global or within `category`): the score of a user with no layer but
    the overall one and no root preferred, s(j) = π(j)."""
    picked = _popular(k, popularity, category, items, params.popular_pool)
    r_top = popularity.max_rank()
    score = Score.cold(params)
    terms = [score.terms(root=1.0, pop=2.0 ** (r - r_top)) for _, r in picked]
    reason = "popular now" if category is None else f"popular in {category}"
    return Recommendations(
        user_id=user_id,
        items=[j for j, _ in picked],
        scores=[t.total for t in terms],
        layers=[t.layers() for t in terms],
        because=[[reason] if explain else [] for _ in picked],
        cold_start=True,
        layer_weights={"item": 0.0, "domain": 0.0, "overall": 1.0},
        model_version=version,
    )


def _popular(k: int, popularity: Popularity, category: str | None, items: ItemIndex, pool: int) -> list[tuple[str, float]]:
    """The k most popular items (global or within `category`) with their global ranks."""
    if category is None:
        return list(zip(*popularity.top_ranked(k)))
    # the category's own pool, then (e.g. for a root) the shop's popular pool filtered by the
    # catalog — bounded, so that a category nobody has costs one pass over that pool, not over
    # every item ever seen; every score is the item's global popularity
    picked = []
    seen: set[str] = set()
    for j in popularity.top_ranked(max(k, pool), category)[0]:
        _, ci, ri = items.resolve(j)
        if items.matches(ci, ri, category):
            seen.add(j)
            picked.append((j, popularity.rank(j)))
    found = 0
    if len(picked) < k:
        for j, r in zip(*popularity.top_ranked(popularity.pool_size)):
            if j in seen:
                continue
            _, ci, ri = items.resolve(j)
            if items.matches(ci, ri, category):
                seen.add(j)
                picked.append((j, r))
                found += 1
                if found >= k:
                    break
    picked.sort(key=lambda t: (-t[1], t[0]))
    return picked[:k]
