"""The summary table of docs/RESULTS.md's quality section, from `strata evaluate --json` files.

    python docs/tools/quality_summary.py docs/eval/*.json

One row per log: targets, Strata's NDCG@10, the best baseline of every form and its NDCG@10,
the difference with its 95 % interval (paired bootstrap over users), and the new-item slice
against the best baseline there.
"""
from __future__ import annotations

import json
import sys


def _best(models: dict, slice_name: str | None = None, value: str | None = None) -> tuple[str, float]:
    def ndcg(m: dict) -> float:
        if slice_name is None:
            return m["ndcg"]
        return m.get(slice_name, {}).get(value, {}).get("ndcg", 0.0)

    name = max((n for n in models if not n.startswith("strata")), key=lambda n: ndcg(models[n]))
    return name, ndcg(models[name])


def row(result: dict) -> str:
    models = result["models"]
    strata = models["strata"]
    vs = strata["vs_best_baseline"]
    low, high = vs["ci95"]
    verdict = "**yes**" if low > 0 else ("no" if high < 0 else "ahead, not shown" if vs["delta"] > 0 else "behind, not shown")
    new = strata.get("by_target", {}).get("new", {})
    nb, nv = _best(models, "by_target", "new")
    cooc = max((models[n].get("by_target", {}).get("new", {}).get("ndcg", 0.0) for n in models if n.startswith("cooc")),
               default=0.0)
    return (f"| {result['dataset']} | {strata['targets']:,} | **{strata['ndcg']:.4f}** | {models.get('strata-prior', {}).get('ndcg', float('nan')):.4f} "
            f"| {models.get('strata-fixed', {}).get('ndcg', float('nan')):.4f} | {vs['model']} {models[vs['model']]['ndcg']:.4f} "
            f"| {vs['delta']:+.4f} ({low:+.4f} … {high:+.4f}) | {verdict} "
            f"| {new.get('ndcg', 0.0):.4f} / {new.get('targets', 0):,} | {cooc:.4f} | {nb} {nv:.4f} |")


def main(paths: list[str]) -> None:
    print("| log | targets | **Strata** | Strata, prior θ (no learning) | strata-fixed (hand weights) "
          "| best baseline (of every form) | Δ Strata − best, 95 % CI over users | Strata better? "
          "| Strata on new-item targets (NDCG / targets) | best cooc form there | best baseline there |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        if "strata" in result.get("models", {}):
            print(row(result))


if __name__ == "__main__":
    main(sys.argv[1:])
