"""Paired comparison of the ranking code of two checkouts, in one process.

    python docs/tools/compare_ranking.py /path/to/old/checkout [--rounds 8]

The machine this project is measured on changes speed by ±20 % within minutes, which hides a
10 % change between two runs.  Here the old checkout's `models` package (copied and renamed) and
this checkout's are loaded side by side, each builds the same world (250k items × 64 factors,
1,000 categories, 400 users of 5-300 events) and they rank the same batches of 16 requests in
alternation.  It prints the CPU time per request of the event loop's side of ranking (`plan` and
`finish`; the matrix products run on a thread in a worker and are left out) and whether the two
give identical answers.  Old checkouts must have the plan/products/finish split (2026-11-29 on).
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

HERE = Path(__file__).resolve().parents[2]


def load_old(checkout: Path, into: Path):
    package = into / "oldmodels"
    shutil.copytree(checkout / "models", package)
    for path in package.rglob("*.py"):
        text = re.sub(r"\b(from|import) (strata\.)?models(\.| )", r"\1 oldmodels\3", path.read_text())
        path.write_text(text)
    sys.path.insert(0, str(into))
    import oldmodels  # noqa: F401

    return "oldmodels"


def build(pkg: str, seed: int = 0):
    mod = lambda name: __import__(f"{pkg}.{name}", fromlist=["_"])  # noqa: E731
    R, P, F, Pop, E = (mod(n) for n in ("ranking", "profile", "factors", "popularity", "events"))
    rng = np.random.default_rng(seed)
    n_items, dims, n_cats = 250_000, 64, 1000
    ids = tuple(f"i{n}" for n in range(n_items))
    cat_of_item = {i: f"c{c}" for i, c in zip(ids, rng.integers(0, n_cats, n_items).tolist())}
    root_of_cat = {f"c{c}": f"r{c % 20}" for c in range(n_cats)}
    Y = (rng.standard_normal((n_items, dims), dtype=np.float32) * 0.1).astype(np.float32)
    model = F.FactorModel(1, ids, Y, {"als": {"alpha": R.DEFAULT_ALPHA, "regularization": R.DEFAULT_REGULARIZATION}})
    ranker = R.Ranker(model, cat_of_item, root_of_cat.__getitem__, R.RankParams())
    pp = P.ProfileParams()
    types = E.EVENT_TYPES
    T0, day = 1_700_000_000.0, 86_400.0
    popularity = Pop.Popularity(R.RankParams().popularity_half_life_s)
    rng = np.random.default_rng(seed + 1)
    for n, (j, dt) in enumerate(zip(np.minimum(rng.zipf(1.3, 50_000) - 1, n_items - 1).tolist(),
                                    rng.uniform(0, 7 * day, 50_000).tolist())):
        popularity.learn(ids[j], cat_of_item[ids[j]], pp.beta[types[n % 5]], T0 + dt)
    requests = []
    for u in range(400):
        profile = P.Profile()
        home = rng.integers(0, n_cats, 3)
        n_ev = int(rng.integers(5, 301))
        for e, (j, dt, t) in enumerate(zip(rng.integers(0, n_items, n_ev).tolist(), rng.uniform(0, 7 * day, n_ev).tolist(),
                                           rng.integers(0, 5, n_ev).tolist())):
            cat = f"c{int(home[e % 3])}" if e % 2 else cat_of_item[ids[j]]
            profile.learn(E.Event(f"{u}-{e}", f"u{u}", ids[j], types[t], T0 + dt, cat), cat, root_of_cat[cat], pp)
        requests.append(R.RankRequest(P.Profile.from_bytes(profile.to_bytes()), 10, popularity, T0 + 7 * day, pp))
    return ranker, requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="a checkout of the older code")
    parser.add_argument("--rounds", type=int, default=8, help="passes over the 400 requests (the first is a warm-up)")
    args = parser.parse_args()
    if not ((args.old / "models" / "ranking.py").is_file() or (args.old / "models" / "ranking").is_dir()):
        parser.error(f"{args.old} is not a checkout of this project (no models/ranking)")
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the first is a warm-up)")
    threadpool_limits(1)  # as a worker runs
    sys.path.insert(0, str(HERE))
    with tempfile.TemporaryDirectory() as tmp:
        worlds = {"old": build(load_old(args.old, Path(tmp))), "new": build("strata.models")}
        spent = {"old": 0.0, "new": 0.0}
        for r in range(args.rounds):
            for b in range(0, 400, 16):
                for name in ("new", "old") if (r + b // 16) % 2 else ("old", "new"):
                    ranker, requests = worlds[name]
                    t = time.thread_time()
                    batch = ranker.plan(requests[b : b + 16])
                    d = time.thread_time() - t
                    ranker.products(batch)
                    t = time.thread_time()
                    ranker.finish(batch)
                    d += time.thread_time() - t
                    if r:
                        spent[name] += d
        n = (args.rounds - 1) * 400
        same = [a.to_dict() for a in worlds["old"][0].recommend_many(worlds["old"][1][:64])] == \
               [a.to_dict() for a in worlds["new"][0].recommend_many(worlds["new"][1][:64])]
    old, new = spent["old"] / n * 1e6, spent["new"] / n * 1e6
    print(f"plan + finish CPU per request: old {old:.0f} µs, new {new:.0f} µs, new/old {new / old:.3f}; "
          f"identical answers on 64 requests: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
