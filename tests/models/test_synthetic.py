"""The synthetic log: deterministic per seed, a valid tree, realistic skew, funnel and drift."""
from __future__ import annotations

from collections import Counter, defaultdict
from itertools import islice

import numpy as np
import pytest

from strata.models.events import parse_event
from strata.models.logs.synthetic import TYPES, SyntheticConfig, generate, iter_chunks

SMALL = SyntheticConfig(users=300, items=3_000, roots=4, categories_per_root=6, events=60_000, seed=7)


@pytest.fixture(scope="module")
def small():
    catalog, events = generate(SMALL)
    return catalog, list(events)


def test_same_seed_same_output_other_seed_differs(small):
    catalog, events = small
    catalog2, events2 = generate(SMALL)
    assert catalog2 == catalog
    assert list(events2) == events
    other_catalog, other_events = generate(SyntheticConfig(**{**SMALL.__dict__, "seed": 8}))
    assert other_catalog != catalog
    other = list(islice(other_events, 1000))
    assert [(e["user_id"], e["item_id"]) for e in other] != [(e["user_id"], e["item_id"]) for e in events[:1000]]
    assert other[0]["event_id"] == "syn:8:0"


def test_events_are_valid_ordered_and_unique(small):
    catalog, events = small
    assert len(events) == SMALL.events
    for e in events[:5000]:
        parse_event(e, now=2e9)
    ts = [e["ts"] for e in events]
    assert all(a <= b for a, b in zip(ts, ts[1:]))
    assert SMALL.start_ts <= ts[0] and ts[-1] < SMALL.start_ts + SMALL.duration_s
    assert len({e["event_id"] for e in events}) == len(events)
    assert events[0]["event_id"] == "syn:7:0" and events[-1]["event_id"] == f"syn:7:{SMALL.events - 1}"
    item_cat = {r["item_id"]: r["category_id"] for r in catalog if "item_id" in r}
    assert all(item_cat[e["item_id"]] == e["category_id"] for e in events)


def test_catalog_tree(small):
    catalog, _ = small
    cats = [r for r in catalog if "item_id" not in r]
    items = [r for r in catalog if "item_id" in r]
    assert catalog == cats + items  # categories first
    parents = {r["category_id"]: r["parent_id"] for r in cats}
    roots = [c for c, p in parents.items() if p is None]
    assert len(roots) == SMALL.roots
    assert len(parents) == SMALL.roots * (1 + SMALL.categories_per_root)
    assert all(p is None or parents[p] is None for p in parents.values())  # two levels
    assert len(items) == SMALL.items
    per_leaf = Counter(r["category_id"] for r in items)
    assert set(per_leaf) == {c for c, p in parents.items() if p is not None}  # no empty leaf, no item on a root


def test_limit_is_a_prefix():
    catalog, events = generate(SMALL)
    head = list(islice(events, 777))
    _, full = generate(SMALL)
    assert head == list(islice(full, 777))
    short = SyntheticConfig(**{**SMALL.__dict__, "events": 5})
    assert len(list(generate(short)[1])) == 5


def test_popularity_skew(small):
    _, events = small
    counts = np.array(sorted(Counter(e["item_id"] for e in events).values(), reverse=True))
    top = counts[: SMALL.items // 100].sum() / len(events)  # the top 1% of the catalog
    assert top > 0.10  # ≥ 10× its uniform share
    flat = SyntheticConfig(**{**SMALL.__dict__, "popularity_skew": 0.0, "category_skew": 0.0, "repeat": 0.0})
    flat_counts = np.array(sorted(Counter(e["item_id"] for e in generate(flat)[1]).values(), reverse=True))
    assert flat_counts[: SMALL.items // 100].sum() / SMALL.events < top / 3


def test_funnel(small):
    _, events = small
    share = Counter(e["type"] for e in events)
    assert set(share) == set(TYPES)
    assert share["view"] > 5 * share["click"]
    assert share["click"] > share["cart"] > share["purchase"]
    assert share["click"] > share["fav"] > share["purchase"]
    # purchases lean to items the user had already seen
    seen: set = set()
    back = Counter()
    for e in events:
        key = (e["user_id"], e["item_id"])
        back[e["type"], key in seen] += 1
        seen.add(key)
    rate = {t: back[t, True] / (back[t, True] + back[t, False]) for t in ("view", "purchase")}
    assert rate["purchase"] > rate["view"]


def _top_category_kept(config: SyntheticConfig) -> float:
    events = list(generate(config)[1])
    half = len(events) // 2

    def tops(part):
        per_user = defaultdict(Counter)
        for e in part:
            per_user[e["user_id"]][e["category_id"]] += 1
        return {u: c.most_common(1)[0][0] for u, c in per_user.items() if sum(c.values()) >= 20}

    first, second = tops(events[:half]), tops(events[half:])
    return float(np.mean([first[u] == second[u] for u in first if u in second]))


def test_drift_moves_interests():
    base = SyntheticConfig(users=200, items=2_000, roots=4, categories_per_root=5, events=40_000, seed=3)
    stable = _top_category_kept(SyntheticConfig(**{**base.__dict__, "drift_prob": 0.0}))
    drifting = _top_category_kept(SyntheticConfig(**{**base.__dict__, "drift_prob": 0.02}))
    assert stable > 0.5
    assert drifting < stable - 0.25


def test_users_prefer_few_categories(small):
    _, events = small
    per_user = defaultdict(Counter)
    for e in events:
        per_user[e["user_id"]][e["category_id"]] += 1
    top3 = [sum(n for _, n in c.most_common(3)) / sum(c.values()) for c in per_user.values() if sum(c.values()) >= 50]
    leaves = SMALL.roots * SMALL.categories_per_root
    assert np.median(top3) > 0.6 > 3 / leaves  # far from spread over all 24 leaves


def test_chunks_match_dicts(small):
    _, events = small
    chunk = next(iter_chunks(SMALL))
    n = min(len(chunk), 2000)
    assert [f"u{u}" for u in chunk.user[:n].tolist()] == [e["user_id"] for e in events[:n]]
    assert [TYPES[t] for t in chunk.type[:n].tolist()] == [e["type"] for e in events[:n]]


@pytest.mark.parametrize("bad", [
    {"users": 0}, {"items": 5, "roots": 2, "categories_per_root": 3}, {"drift_prob": 1.5},
    {"events": -1}, {"duration_s": 0.0}, {"popularity_skew": -1.0}, {"seed": -2},
])
def test_config_is_checked(bad):
    with pytest.raises(ValueError):
        SyntheticConfig(**bad)
