"""`strata bench serve --in-process`: the ranking latency of docs/design.md §7 (p99 ≤ 5 ms a request for
250,000 items × 64 factors), on random factors, without a broker or a worker."""
from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np

from strata.models.covisit import CoVisits
from strata.models.events import EVENT_TYPES, Event
from strata.models.factors import FactorModel
from strata.models.learned import LearnedRanker
from strata.models.popularity import DAY, Popularity
from strata.models.profile import Profile, ProfileParams
from strata.models.ranking import DEFAULT_ALPHA, DEFAULT_REGULARIZATION, RankParams, RankRequest, Ranker
from strata.models.terms import TermWeights

N_CATEGORIES = 1000  # under 20 roots
T0 = 1_700_000_000.0  # the synthetic week's start


def bench_ranking(
    n_items: int = 250_000,
    dims: int = 64,
    requests: int = 500,
    seed: int = 0,
    k: int = 10,
    explain: bool = False,
    popularity_events: int = 50_000,
    blas_threads: int | None = 1,
    batch: int = 16,
    ranker_kind: str = "learned",
) -> dict:
    """Latency of a ranker in-process on random factors (docs/design.md §7): the served one
    (`ranker_kind="learned"`, models.learned.LearnedRanker, with co-visitation learned from the
    popularity events taken as one shopper's walk) or the hand-weighted `Ranker` ("fixed").

    A catalogue of `n_items` items in 1000 categories under 20 roots, popularity
    from `popularity_events` Zipf-distributed events, and `requests` profiles of 20–200 events each; returns
    {"requests", "model", "n_items", "dims", "blas_threads", "build_s",
    "latency_ms": {"p50", "p95", "p99", "max"}, "batched"}.  "batched" is the same requests
    ranked `batch` at a time with `recommend_many`, as a worker ranks concurrent requests:
    {"batch", "batch_ms": {…}, "per_request_ms", "requests_per_s"} (absent for batch ≤ 1).  `blas_threads` (default 1, through
    threadpoolctl; None leaves BLAS alone) bounds the BLAS threads of the matvec:
    it is memory-bound, and a second thread mostly fights the rest of the worker.
    """

    rng = np.random.default_rng(seed)
    ids = tuple(f"i{n}" for n in range(n_items))
    cat_of_item = {i: f"c{c}" for i, c in zip(ids, rng.integers(0, N_CATEGORIES, n_items).tolist())}
    root_of_cat = {f"c{c}": f"r{c % 20}" for c in range(N_CATEGORIES)}
    Y = (rng.standard_normal((n_items, dims), dtype=np.float32) * 0.1).astype(np.float32)
    model = FactorModel(1, ids, Y, {"als": {"alpha": DEFAULT_ALPHA, "regularization": DEFAULT_REGULARIZATION}})
    pp = ProfileParams()
    t0 = time.perf_counter()
    if ranker_kind == "fixed":
        ranker: Any = Ranker(model, cat_of_item, root_of_cat.__getitem__, RankParams())
    elif ranker_kind == "learned":
        ranker = LearnedRanker(model, cat_of_item.get, root_of_cat.__getitem__, CoVisits(), None, TermWeights(), pp)
    else:
        raise ValueError(f"ranker_kind must be 'learned' or 'fixed', got {ranker_kind!r}")
    build_s = time.perf_counter() - t0

    popularity = _shop_history(rng, ids, cat_of_item, pp, popularity_events, ranker.terms.covisits if ranker_kind == "learned" else None)
    if ranker_kind == "learned":
        ranker.terms.popularity = popularity
    profiles = _profiles(rng, ids, cat_of_item, root_of_cat, pp, min(requests, 200))
    now = T0 + 7 * DAY
    requests_of = [RankRequest(profiles[r % len(profiles)], k, popularity, now, pp, explain=explain) for r in range(requests)]
    limits: Any = contextlib.nullcontext()
    if blas_threads:
        try:
            from threadpoolctl import threadpool_limits

            limits = threadpool_limits(limits=blas_threads, user_api="blas")
        except ImportError:
            blas_threads = None
    with limits:
        for request in requests_of[:5]:  # warm-up
            ranker.recommend_many([request])
        ms = _timed(ranker, [[r] for r in requests_of]) * 1e3
        batched = _batched(ranker, requests_of, batch) if batch > 1 else None
    return {
        "requests": requests,
        "model": type(model).__name__,
        "ranker": type(ranker).__name__,
        "n_items": n_items,
        "dims": dims,
        "blas_threads": blas_threads,
        "build_s": round(build_s, 3),
        "latency_ms": {**_percentiles(ms), "max": round(float(ms.max()), 3)},
        **({"batched": batched} if batched else {}),
    }


def _shop_history(rng, ids, cat_of_item, pp: ProfileParams, events: int, covisits: CoVisits | None) -> Popularity:
    """A week of Zipf-distributed events as the shop's popularity, and, for the learned ranker,
    its co-visitation, the events taken as one shopper's walk."""
    betas = [pp.beta[t] for t in EVENT_TYPES]
    popularity = Popularity(RankParams().popularity_half_life_s)
    zipf = np.minimum(rng.zipf(1.3, events) - 1, len(ids) - 1)
    walk: list[str] = []
    for n, (j, dt) in enumerate(zip(zipf.tolist(), np.sort(rng.uniform(0, 7 * DAY, events)).tolist())):
        item = ids[j]
        popularity.learn(item, cat_of_item[item], betas[n % len(betas)], T0 + dt)
        if covisits is not None:
            covisits.learn(item, walk[::-1][:20], T0 + dt)
            walk = [i for i in walk[-20:] if i != item] + [item]
    return popularity


def _profiles(rng, ids, cat_of_item, root_of_cat, pp: ProfileParams, n: int) -> list[Profile]:
    """`n` shoppers of 20–200 events over a week, half of them in three home categories."""
    profiles = []
    for u in range(n):
        prof = Profile()
        home = rng.integers(0, N_CATEGORIES, 3)
        n_ev = int(rng.integers(20, 201))
        items = rng.integers(0, len(ids), n_ev)
        for e, (j, dt, t) in enumerate(zip(items.tolist(), rng.uniform(0, 7 * DAY, n_ev).tolist(), rng.integers(0, 5, n_ev).tolist())):
            item = ids[j]
            cat = f"c{int(home[e % 3])}" if e % 2 else cat_of_item[item]
            prof.learn(Event(f"{u}-{e}", f"u{u}", item, EVENT_TYPES[t], T0 + dt, cat), cat, root_of_cat[cat], pp)
        profiles.append(prof)
    return profiles


def _timed(ranker, groups: list[list[RankRequest]]) -> np.ndarray:
    """Seconds each group of requests took, ranked together."""
    took = np.empty(len(groups))
    for g, group in enumerate(groups):
        t = time.perf_counter()
        ranker.recommend_many(group)
        took[g] = time.perf_counter() - t
    return took


def _percentiles(ms: np.ndarray) -> dict[str, float]:
    return {q: round(float(np.percentile(ms, v)), 3) for q, v in (("p50", 50), ("p95", 95), ("p99", 99))}


def _batched(ranker, requests: list[RankRequest], batch: int) -> dict:
    """The same requests ranked `batch` at a time, as a worker ranks concurrent ones."""
    ranker.recommend_many(requests[:batch])  # warm-up
    took = _timed(ranker, [requests[a : a + batch] for a in range(0, len(requests), batch)])
    return {
        "batch": batch,
        "batch_ms": _percentiles(took * 1e3),
        "per_request_ms": round(float(took.sum()) * 1e3 / len(requests), 3),
        "requests_per_s": round(len(requests) / float(took.sum()), 1),
    }
