"""Paired comparison of the served ranker (`models.learned.LearnedRanker`) of two checkouts, in one process.

    python docs/tools/compare_learned.py /path/to/old/checkout [--requests 1200] [--rounds 6] [--live]

The old checkout's `models` package is copied and renamed (`compare_ranking.load_old`); each package
builds the same world as `strata bench serve --in-process` (250k items × 64 factors, 1,000
categories, popularity and co-visitation from 50,000 Zipf events), with shoppers who visit the
popular, co-visited items too, and the same requests: plain, explained, of a category, without the
items seen, with an A/B variant's θ.  It checks that both answer every request alike (the same items
in the same order, scores and layers equal to 1e-9 relative, the same terms and because) and that
`score` gives the same candidates, features and θ·f; then it times them in alternation (the
machine's speed drifts too much for two separate runs): single requests (p50, p99) and batches of
16 (the cost a request).  `--live` lets one popularity event in before each batch and each single
request, as a busy stream does, so that nothing derived from the shop's popularity outlives one.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

HERE = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_ranking import load_old  # noqa: E402

N_ITEMS, DIMS, N_CATS, T0, DAY = 250_000, 64, 1000, 1_700_000_000.0, 86_400.0


def build(pkg: str, n_requests: int, seed: int = 0):
    """A world of `strata bench serve --in-process` made with package `pkg`: its ranker and requests."""
    mod = lambda name: __import__(f"{pkg}.{name}", fromlist=["_"])  # noqa: E731
    R, P, F, Pop, E, C, L, Te = (mod(n) for n in ("ranking", "profile", "factors", "popularity", "events", "covisit",
                                                   "learned", "terms"))
    rng = np.random.default_rng(seed)
    ids = tuple(f"i{n}" for n in range(N_ITEMS))
    cat_of_item = {i: f"c{c}" for i, c in zip(ids, rng.integers(0, N_CATS, N_ITEMS).tolist())}
    root_of_cat = {f"c{c}": f"r{c % 20}" for c in range(N_CATS)}
    Y = (rng.standard_normal((N_ITEMS, DIMS), dtype=np.float32) * 0.1).astype(np.float32)
    model = F.FactorModel(1, ids, Y, {"als": {"alpha": R.DEFAULT_ALPHA, "regularization": R.DEFAULT_REGULARIZATION}})
    pp = P.ProfileParams()
    covisits, popularity = C.CoVisits(), Pop.Popularity(R.RankParams().popularity_half_life_s)
    walk: list[str] = []
    zipf = np.minimum(rng.zipf(1.3, 50_000) - 1, N_ITEMS - 1)
    for n, (j, dt) in enumerate(zip(zipf.tolist(), np.sort(rng.uniform(0, 7 * DAY, 50_000)).tolist())):
        item = ids[j]
        popularity.learn(item, cat_of_item[item], pp.beta[E.EVENT_TYPES[n % 5]], T0 + dt)
        covisits.learn(item, walk[::-1][:20], T0 + dt)
        walk = [i for i in walk[-20:] if i != item] + [item]
    ranker = L.LearnedRanker(model, cat_of_item.get, root_of_cat.__getitem__, covisits, popularity, Te.TermWeights(), pp)
    profiles = []
    for u in range(200):
        profile = P.Profile()
        home = rng.integers(0, N_CATS, 3)
        n_ev = int(rng.integers(1, 201))
        items = np.where(rng.random(n_ev) < (u % 3) / 2, np.minimum(rng.zipf(1.3, n_ev) - 1, 300), rng.integers(0, N_ITEMS, n_ev))
        for e, (j, dt, t) in enumerate(zip(items.tolist(), rng.uniform(0, 7 * DAY, n_ev).tolist(), rng.integers(0, 5, n_ev).tolist())):
            cat = f"c{int(home[e % 3])}" if e % 2 else cat_of_item[ids[j]]
            profile.learn(E.Event(f"{u}-{e}", f"u{u}", ids[j], E.EVENT_TYPES[t], T0 + dt, cat), cat, root_of_cat[cat], pp)
        profiles.append(profile)
    theta_b = Te.theta0() * np.linspace(0.5, 1.5, len(Te.TERMS))
    requests = []
    for r in range(n_requests):
        kind = r % 10
        requests.append(R.RankRequest(
            None if r % 97 == 0 else profiles[r % len(profiles)], 1000 if r % 101 == 0 else 10 + 5 * (r % 3), popularity,
            T0 + 7 * DAY, pp, category=f"c{r % N_CATS}" if kind == 3 else f"r{r % 20}" if kind == 4 else None,
            long_term=Y[r] if kind == 5 else None, explain=kind in (1, 3, 6), user_id=f"u{r % len(profiles)}",
            exclude_seen=kind == 7, exclude_purchased=kind != 8, theta=theta_b if kind == 9 else None))
    return ranker, requests, (ids, cat_of_item, pp)


def _close(a: float, b: float) -> bool:
    return a == b or (math.isfinite(a) and abs(a - b) <= 1e-9 * max(abs(a), abs(b)))


def same_answer(a: dict, b: dict) -> str | None:
    """What differs between two answers (`Recommendations.to_dict`), or None."""
    if [i["item_id"] for i in a["items"]] != [i["item_id"] for i in b["items"]]:
        return "items"
    if {k: v for k, v in a.items() if k not in ("items", "layer_weights")} != \
       {k: v for k, v in b.items() if k not in ("items", "layer_weights")}:
        return "header"
    if a["layer_weights"].keys() != b["layer_weights"].keys() or not all(
            _close(a["layer_weights"][k], b["layer_weights"][k]) for k in a["layer_weights"]):
        return "layer_weights"
    for x, y in zip(a["items"], b["items"]):
        if not _close(x["score"], y["score"]):
            return f"score of {x['item_id']}"
        if x["layers"].keys() != y["layers"].keys() or not all(_close(x["layers"][k], y["layers"][k]) for k in x["layers"]):
            return f"layers of {x['item_id']}"
        if x["because"] != y["because"] or x.get("terms") != y.get("terms"):
            return f"explanation of {x['item_id']}"
    return None


def check(worlds: dict) -> tuple[int, int]:
    """Answers and `score`s compared request by request: (requests, scorings) found identical; exits on a difference."""
    (old, old_requests, _), (new, new_requests, _) = worlds["old"], worlds["new"]
    answers = scorings = 0
    for n, (a, b) in enumerate(zip(old_requests, new_requests)):
        diff = same_answer(old.recommend_many([a])[0].to_dict(), new.recommend_many([b])[0].to_dict())
        if diff:
            sys.exit(f"request {n}: the answers differ ({diff})")
        answers += 1
        if n % 5 == 0:
            ua, ub = old.plan([a]).planned[0][1], new.plan([b]).planned[0][1]
            (ia, fa, sa), (ib, fb, sb) = old.score(ua, a.now), new.score(ub, b.now)
            if ia != ib or not np.allclose(fa, fb, rtol=1e-9, atol=0) or not np.allclose(sa, sb, rtol=1e-9, atol=0):
                sys.exit(f"request {n}: score() differs")
            scorings += 1
    return answers, scorings


def _event(world: tuple, ranker, n: int) -> None:
    """One event of a busy stream, on the shop's popularity."""
    ids, cat_of_item, pp = world
    item = ids[n % 997]
    ranker.terms.popularity.learn(item, cat_of_item[item], pp.beta["click"], T0 + 7 * DAY)


def timed(worlds: dict, rounds: int, live: bool) -> dict:
    """Seconds of single requests and of batches of 16, old and new in alternation (the first round a warm-up)."""
    single: dict[str, list[float]] = {"old": [], "new": []}
    batched = {"old": 0.0, "new": 0.0}
    n = len(worlds["old"][1])
    for r in range(rounds):
        for b in range(0, n - 15, 16):
            for name in ("new", "old") if (r + b // 16) % 2 else ("old", "new"):
                ranker, requests, world = worlds[name]
                batch = requests[b : b + 16]
                if live:
                    _event(world, ranker, r * n + b)
                t = time.perf_counter()
                ranker.recommend_many(batch)
                d = time.perf_counter() - t
                took = []
                for m, request in enumerate(batch[:4]):
                    if live:
                        _event(world, ranker, r * n + b + m)
                    t = time.perf_counter()
                    ranker.recommend_many([request])
                    took.append(time.perf_counter() - t)
                if r:
                    batched[name] += d
                    single[name] += took
    out = {}
    for name in ("old", "new"):
        ms = np.array(single[name]) * 1e3
        out[name] = {"p50": np.percentile(ms, 50), "p99": np.percentile(ms, 99),
                     "batch16": batched[name] * 1e3 / ((rounds - 1) * (n // 16) * 16)}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="a checkout of the older code")
    parser.add_argument("--requests", type=int, default=1200)
    parser.add_argument("--rounds", type=int, default=6, help="timed passes over the requests (the first is a warm-up)")
    parser.add_argument("--live", action="store_true", help="a popularity event before each batch and single request")
    parser.add_argument("--no-check", action="store_true", help="time only")
    args = parser.parse_args()
    threadpool_limits(1, user_api="blas")  # as a worker runs
    sys.path.insert(0, str(HERE))
    with tempfile.TemporaryDirectory() as tmp:
        worlds = {"old": build(load_old(args.old, Path(tmp)), args.requests), "new": build("strata.models", args.requests)}
        if not args.no_check:
            answers, scorings = check(worlds)
            print(f"identical: {answers} answers, {scorings} scorings (candidates, features, θ·f)")
        t = timed(worlds, args.rounds, args.live)
    for name in ("old", "new"):
        print(f"{name}: single p50 {t[name]['p50']:.3f} ms, p99 {t[name]['p99']:.3f} ms; "
              f"16 at a time {t[name]['batch16']:.3f} ms a request")
    print(f"new/old: p50 {t['new']['p50'] / t['old']['p50']:.3f}, p99 {t['new']['p99'] / t['old']['p99']:.3f}, "
          f"16 at a time {t['new']['batch16'] / t['old']['batch16']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
