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
    n_cats = 1000
    cat_of_item = {i: f"c{c}" for i, c in zip(ids, rng.integers(0, n_cats, n_items).tolist())}
    root_of_cat = {f"c{c}": f"r{c % 20}" for c in range(n_cats)}
    Y = (rng.standard_normal((n_items, dims), dtype=np.float32) * 0.1).astype(np.float32)
    model = FactorModel(1, ids, Y, {"als": {"alpha": DEFAULT_ALPHA, "regularization": DEFAULT_REGULARIZATION}})
    pp = ProfileParams()
    t0 = time.perf_counter()
    if ranker_kind == "fixed":
        ranker: Any = Ranker(model, cat_of_item, root_of_cat.__getitem__, RankParams())
    elif ranker_kind == "learned":

        covisits = CoVisits()
        ranker = LearnedRanker(model, cat_of_item.get, root_of_cat.__getitem__, covisits, None, TermWeights(), pp)
    else:
        raise ValueError(f"ranker_kind must be 'learned' or 'fixed', got {ranker_kind!r}")
    build_s = time.perf_counter() - t0

    types = EVENT_TYPES
    betas = np.asarray([pp.beta[t] for t in types])
    T0 = 1_700_000_000.0
    popularity = Popularity(RankParams().popularity_half_life_s)
    zipf = np.minimum(rng.zipf(1.3, popularity_events) - 1, n_items - 1)
    walk: list[str] = []
    for n, (j, dt) in enumerate(zip(zipf.tolist(), np.sort(rng.uniform(0, 7 * DAY, popularity_events)).tolist())):
        item = ids[j]
        popularity.learn(item, cat_of_item[item], float(betas[n % 5]), T0 + dt)
        if ranker_kind == "learned":
            ranker.terms.covisits.learn(item, walk[::-1][:20], T0 + dt)
            walk = [i for i in walk[-20:] if i != item] + [item]
    if ranker_kind == "learned":
        ranker.terms.popularity = popularity

    profiles = []
    for u in range(min(requests, 200)):
        prof = Profile()
        home = rng.integers(0, n_cats, 3)
        n_ev = int(rng.integers(20, 201))
        items = rng.integers(0, n_items, n_ev)
        for e, (j, dt, t) in enumerate(zip(items.tolist(), rng.uniform(0, 7 * DAY, n_ev).tolist(), rng.integers(0, 5, n_ev).tolist())):
            item = ids[j]
            cat = f"c{int(home[e % 3])}" if e % 2 else cat_of_item[item]
            prof.learn(Event(f"{u}-{e}", f"u{u}", item, types[t], T0 + dt, cat), cat, root_of_cat[cat], pp)
        profiles.append(prof)

    now = T0 + 7 * DAY
    limits: Any = contextlib.nullcontext()
    if blas_threads:
        try:
            from threadpoolctl import threadpool_limits

            limits = threadpool_limits(limits=blas_threads, user_api="blas")
        except ImportError:
            blas_threads = None
    lat = np.empty(requests)
    with limits:
        for prof in profiles[:5]:  # warm-up
            ranker.recommend_many([RankRequest(prof, k, popularity, now, pp, explain=explain)])
        for r in range(requests):
            request = RankRequest(profiles[r % len(profiles)], k, popularity, now, pp, explain=explain)
            t = time.perf_counter()
            ranker.recommend_many([request])
            lat[r] = time.perf_counter() - t
        batched = None
        if batch > 1:
            reqs = [RankRequest(profiles[r % len(profiles)], k, popularity, now, pp, explain=explain) for r in range(requests)]
            ranker.recommend_many(reqs[:batch])  # warm-up
            groups = [reqs[a : a + batch] for a in range(0, requests, batch)]
            took = np.empty(len(groups))
            for g, group in enumerate(groups):
                t = time.perf_counter()
                ranker.recommend_many(group)
                took[g] = time.perf_counter() - t
            batched = {
                "batch": batch,
                "batch_ms": {q: round(float(np.percentile(took * 1e3, v)), 3) for q, v in (("p50", 50), ("p95", 95), ("p99", 99))},
                "per_request_ms": round(float(took.sum()) * 1e3 / requests, 3),
                "requests_per_s": round(requests / float(took.sum()), 1),
            }
    ms = lat * 1e3
    return {
        "requests": requests,
        "model": type(model).__name__,
        "ranker": type(ranker).__name__,
        "n_items": n_items,
        "dims": dims,
        "blas_threads": blas_threads,
        "build_s": round(build_s, 3),
        "latency_ms": {
            "p50": round(float(np.percentile(ms, 50)), 3),
            "p95": round(float(np.percentile(ms, 95)), 3),
            "p99": round(float(np.percentile(ms, 99)), 3),
            "max": round(float(ms.max()), 3),
        },
        **({"batched": batched} if batched else {}),
    }
