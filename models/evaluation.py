"""Prequential (test-then-train) evaluation of SPEC §6, in-process.

Events are replayed in event-time order (stable: ties keep their file
order).  The first `warmup` share of the events (in that order, so a cut in
time) only trains.  After it,
for each target event (types in `targets`) of a user with at least one
earlier event, every model is asked for its top-K *before* the event is
applied; the list is filtered by the protocol's candidate filter (the same
for all models), scored against the event's item, and only then is the event
given to every model (`learn_one`) and to the shared batch trainer.  Batch
models are re-fitted at the end of the warm-up and then every
`refit_every_s` of event time, on the events seen so far.

Evaluation stops after the `until` share of the events; tuning uses the
first half (warm-up ¼, tests on the second quarter) and the report tests the
second half, so tuned parameters are never picked on the events they are
reported on.  The cuts are by event count rather than by clock time because
some logs are very uneven in time (the REES46 head has 6 % of its events in
the first half of its time span).
"""
from __future__ import annotations

import math
import time
import zlib
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

from models.catalog import Catalog
from models.events import EVENT_TYPES, Event, InvalidEvent, parse_event
from models.popularity import DAY
from models.profile import ProfileParams
from models.ranking import RankParams
from models.ranking_metrics import RankingScore, ndcg_at_k, paired_bootstrap
from models.recommenders import BatchTrainer, Recommender, World, build_models
from models import als

EXCLUDE = ("none", "purchased", "seen")
ACTIVITY_BUCKETS: tuple[tuple[int, int | None], ...] = ((1, 4), (5, 19), (20, 99), (100, None))


@dataclass(frozen=True)
class Protocol:
    """Everything the numbers depend on besides the data and the models' own parameters."""

    k: int = 10
    targets: tuple[str, ...] = ("cart", "purchase")
    warmup: float = 0.5
    until: float = 1.0
    refit_every_s: float = DAY
    exclude: str = "none"
    timeline_buckets: int = 20
    target_sample: float = 1.0

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be ≥ 1, got {self.k}")
        bad = [t for t in self.targets if t not in EVENT_TYPES]
        if not self.targets or bad:
            raise ValueError(f"targets must be event types among {', '.join(EVENT_TYPES)}, got {list(self.targets)}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup must be a fraction in [0, 1), got {self.warmup}")
        if not self.warmup < self.until <= 1.0:
            raise ValueError(f"until must be in (warmup, 1], got {self.until}")
        if not (self.refit_every_s > 0 and math.isfinite(self.refit_every_s)):
            raise ValueError(f"refit_every_s must be a positive number of seconds, got {self.refit_every_s}")
        if not 0.0 < self.target_sample <= 1.0:
            raise ValueError(f"target_sample must be in (0, 1], got {self.target_sample}")
        if self.exclude not in EXCLUDE:
            raise ValueError(f"exclude must be one of {EXCLUDE}, got {self.exclude!r}")

    def describe(self) -> dict:
        return {
            "order": "event time (stable), test-then-train",
            "k": self.k,
            "targets": list(self.targets),
            "warmup_share_of_events": self.warmup,
            "until_share_of_events": self.until,
            "refit_every_s": self.refit_every_s,
            "candidate_filter": self.exclude,
            "target_users": "users with ≥ 1 earlier event",
            "coverage": "distinct recommended items / distinct items in the evaluated log",
            "target_sample": self.target_sample,
        }


@dataclass
class Dataset:
    name: str
    events: list[Event]
    catalog: Catalog
    invalid: int = 0

    @property
    def items(self) -> int:
        return len({e.item_id for e in self.events})


def load_dataset(source) -> Dataset:
    """Read a `models.loaders.LogSource` whole: valid events sorted by time, and its catalog."""
    catalog = Catalog.from_records(source.catalog())
    now = time.time()
    events: list[Event] = []
    invalid = 0
    for raw in source.events():
        try:
            events.append(parse_event(raw, now))
        except InvalidEvent:
            invalid += 1
    events.sort(key=lambda e: e.ts)  # stable: same-second events keep their file order
    return Dataset(source.name, events, catalog, invalid)


@dataclass
class ModelResult:
    score: RankingScore
    seconds: float = 0.0
    timeline: list[list[float]] = field(default_factory=list)  # per time bucket: [Σ ndcg, targets]
    activity: dict[str, list[float]] = field(default_factory=dict)  # bucket → [Σ ndcg, targets]
    revisit: dict[str, list[float]] = field(default_factory=dict)  # "seen"/"new" → [Σ ndcg, targets]
    gains: list[float] = field(default_factory=list)  # NDCG of every target, in order (all models share the targets)


def _sampled(event_id: str, share: float) -> bool:
    """A fixed pseudo-random share of the targets (by a hash of the event id, so the same for every run)."""
    if share >= 1.0:
        return True
    return zlib.crc32(event_id.encode()) / 0xFFFFFFFF < share


def _activity_bucket(n: int) -> str:
    for lo, hi in ACTIVITY_BUCKETS:
        if hi is None or n <= hi:
            return f"{lo}+" if hi is None else f"{lo}-{hi}"
    raise AssertionError


def prequential(
    dataset: Dataset,
    models: Mapping[str, Recommender],
    trainer: BatchTrainer,
    protocol: Protocol,
    progress: bool = False,
    on_ask: Callable[[str, Event], None] | None = None,
) -> dict:
    """Run the protocol over the dataset.

    Returns {"dataset", "protocol", "k", "models": {name: {"hr", "ndcg", "mrr",
    "coverage", "targets", "events_per_s", "timeline", "by_activity",
    "by_target", …}}, "als", "als_fit_s"}.

    `on_ask(model_name, event)` is called right before a model is asked for the
    user of a target event (tests use it to check what the model has seen).
    """
    events = dataset.events
    if not events:
        raise ValueError("the log holds no valid events")
    n_warm = int(protocol.warmup * len(events))
    n_stop = max(n_warm + 1, int(protocol.until * len(events)))
    t0 = events[0].ts
    t_warm = events[min(n_warm, len(events) - 1)].ts
    t_stop = events[n_stop - 1].ts
    nb = protocol.timeline_buckets
    k = protocol.k
    results = {name: ModelResult(RankingScore(k), timeline=[[0.0, 0] for _ in range(nb)]) for name in models}
    history: dict[str, int] = {}
    seen: dict[str, set[str]] = {}
    purchased: dict[str, set[str]] = {}
    next_refit: float | None = None
    evaluated = 0
    refits = 0
    targets_set = set(protocol.targets)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(events), unit="ev", desc="evaluate", smoothing=0.05, mininterval=0.5)
    try:
        for n, e in enumerate(events):
            if n >= n_stop:
                break
            testing = n >= n_warm
            if testing and (next_refit is None or e.ts >= next_refit):
                fit_before = trainer.fit_s
                for name, m in models.items():
                    t = time.perf_counter()
                    fit_now = trainer.fit_s
                    m.refit(e.ts)
                    # the shared fit runs inside whichever model asks first; charged below to all
                    results[name].seconds += time.perf_counter() - t - (trainer.fit_s - fit_now)
                shared = trainer.fit_s - fit_before
                for name, m in models.items():
                    if m.uses_batch_fit:
                        results[name].seconds += shared
                refits += 1
                next_refit = e.ts + protocol.refit_every_s if next_refit is None else next_refit
                while next_refit <= e.ts:
                    next_refit += protocol.refit_every_s
            user = e.user_id
            prior = history.get(user, 0)
            if testing and e.type in targets_set and prior > 0 and _sampled(e.event_id, protocol.target_sample):
                if protocol.exclude == "purchased":
                    skip = purchased.get(user, set())
                elif protocol.exclude == "seen":
                    skip = seen.get(user, set())
                else:
                    skip = set()
                bucket = min(nb - 1, int((e.ts - t_warm) / max(t_stop - t_warm, 1e-9) * nb))
                act = _activity_bucket(prior)
                rev = "seen" if e.item_id in seen.get(user, ()) else "new"
                for name, m in models.items():
                    if on_ask is not None:
                        on_ask(name, e)
                    t = time.perf_counter()
                    ids, _ = m.rank(user, k + len(skip), e.ts)
                    r = results[name]
                    r.seconds += time.perf_counter() - t
                    ids = [j for j in ids if j not in skip][:k]
                    rank = r.score.add(ids, e.item_id)
                    g = ndcg_at_k(rank)
                    r.gains.append(g)
                    r.timeline[bucket][0] += g
                    r.timeline[bucket][1] += 1
                    r.activity.setdefault(act, [0.0, 0])
                    r.activity[act][0] += g
                    r.activity[act][1] += 1
                    r.revisit.setdefault(rev, [0.0, 0])
                    r.revisit[rev][0] += g
                    r.revisit[rev][1] += 1
            for name, m in models.items():
                t = time.perf_counter()
                m.learn_one(e)
                results[name].seconds += time.perf_counter() - t
            trainer.observe(e)
            history[user] = prior + 1
            seen.setdefault(user, set()).add(e.item_id)
            if e.type == "purchase":
                purchased.setdefault(user, set()).add(e.item_id)
            evaluated = n + 1
            if bar is not None and n % 256 == 0:
                bar.update(n + 1 - bar.n)
    finally:
        if bar is not None:
            bar.update(evaluated - bar.n)
            bar.close()

    catalogue = len({e.item_id for e in events[:evaluated]})
    t_bucket = (t_stop - t_warm) / nb
    out_models = {}
    for name, r in results.items():
        s = r.score
        out_models[name] = {
            "hr": s.hr,
            "ndcg": s.ndcg,
            "mrr": s.mrr,
            "coverage": s.coverage(catalogue),
            "targets": s.targets,
            "events_per_s": evaluated / r.seconds if r.seconds > 0 else None,
            "seconds": r.seconds,
            "params": models[name].describe(),
            "timeline": [
                {"t": t_warm + (b + 0.5) * t_bucket, "ndcg": (g / c if c else None), "targets": c}
                for b, (g, c) in enumerate(r.timeline)
            ],
            "by_activity": {a: {"ndcg": g / c, "targets": c} for a, (g, c) in sorted(r.activity.items(), key=lambda kv: int(kv[0].split("-")[0].rstrip("+")))},
            "by_target": {a: {"ndcg": g / c, "targets": c} for a, (g, c) in sorted(r.revisit.items())},
        }
    baselines = [name for name in results if not name.startswith("strata")]
    if baselines:
        best = max(baselines, key=lambda name: out_models[name]["ndcg"])
        for name in results:
            if name.startswith("strata"):
                out_models[name]["vs_best_baseline"] = {"model": best, **paired_bootstrap(results[name].gains, results[best].gains)}
    return {
        "dataset": dataset.name,
        "protocol": {
            **protocol.describe(),
            "events": evaluated,
            "events_in_log": len(events),
            "invalid_events": dataset.invalid,
            "catalogue_items": catalogue,
            "refits": refits,
            "t_start": t0,
            "t_warm": t_warm,
            "t_stop": t_stop,
        },
        "k": k,
        "models": out_models,
        "als": trainer.params.as_dict(),
        "als_fit_s": trainer.fit_s,
    }


def evaluate(
    dataset: Dataset,
    model_names: Sequence[str],
    protocol: Protocol,
    rank_params: RankParams | None = None,
    als_params: als.ALSParams | None = None,
    profile_params: ProfileParams | None = None,
    seed: int = 0,
    progress: bool = False,
    extra: Mapping[str, RankParams] | None = None,
) -> dict:
    """Build the named models (plus Strata variants `extra`: name → RankParams) and run them."""
    from models.recommenders import StrataModel

    world = World(dataset.catalog, profile_params)
    trainer = BatchTrainer(world, als_params)
    models = build_models(model_names, world, trainer, rank_params, seed=seed)
    for name, rp in (extra or {}).items():
        models[name] = StrataModel(world, trainer, rp)
    return prequential(dataset, models, trainer, protocol, progress=progress)


# -- tuning ---------------------------------------------------------------------------
#: the knobs tuned, each with its candidate values (coordinate ascent, in this order)
TUNING_GRID: dict[str, tuple] = {
    "item_own_weight": (3.0, 10.0, 30.0, 100.0, 300.0),
    "recency_weight": (0.0, 0.5, 1.0, 3.0),
    "recency_rank": (True, False),
    "recency_half_life_s": (300.0, 3600.0, 6 * 3600.0),
    "repeat_prior": (None, 0.0, 0.2, 0.5),
    "seen_penalty": (0.0, 0.3, 1.0, 3.0),
    "item_factor_weight": (0.0, 0.25, 1.0, 4.0),
    "base_weights": ((0.5, 0.3, 0.2), (0.6, 0.2, 0.2), (0.8, 0.1, 0.1), (0.6, 0.1, 0.3), (0.4, 0.4, 0.2), (0.34, 0.33, 0.33)),
    "evidence_n0": (0.5, 1.0, 2.0, 5.0, 10.0),
    "root_floor": (0.0, 0.1, 0.5, 1.0),
    "popularity_half_life_s": (3600.0, DAY, 7 * DAY),
}


def tune(
    dataset: Dataset,
    protocol: Protocol,
    start: RankParams | None = None,
    grid: Mapping[str, Sequence] | None = None,
    rounds: int = 1,
    als_params: als.ALSParams | None = None,
    target_sample: float = 1.0,
    knobs: Sequence[str] | None = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda s: None,
) -> tuple[RankParams, list[dict]]:
    """Coordinate ascent on Strata's NDCG@K over the first half of the log (in time order).

    The tuning protocol is `protocol` with warm-up ¼ and `until` ½ of the time:
    the events reported on (the second half) are never looked at.  Each knob's
    values run side by side in one prequential pass (they share the ALS fits);
    the best value is kept before moving to the next knob.
    """
    tune_protocol = replace(protocol, warmup=min(protocol.warmup, 0.25), until=0.5, target_sample=target_sample)
    best = start or RankParams()
    trail: list[dict] = []
    for _ in range(rounds):
        for knob, values in (grid or TUNING_GRID).items():
            if knobs is not None and knob not in knobs:
                continue
            variants = {f"{knob}={v}": replace(best, **{knob: v}) for v in values}
            res = evaluate(dataset, [], tune_protocol, als_params=als_params, extra=variants, progress=progress)
            scores = {n: m["ndcg"] for n, m in res["models"].items()}
            # ties keep the current value, so a knob that does not matter does not drift
            current = f"{knob}={getattr(best, knob)}"
            pick = max(scores, key=lambda n: (scores[n], n == current))
            best = variants[pick]
            trail.append({"knob": knob, "ndcg": scores, "picked": pick})
            log(f"tune {knob}: " + ", ".join(f"{n.split('=', 1)[1]} {s:.4f}" for n, s in scores.items()) + f" → {pick}")
    return best, trail


# -- output -----------------------------------------------------------------------------
def format_table(result: dict) -> str:
    """A plain-text table of the result, best NDCG first."""
    k = result["k"]
    rows = sorted(result["models"].items(), key=lambda kv: -kv[1]["ndcg"])
    w = max([16] + [len(name) for name, _ in rows])
    head = f"{'model':<{w}} {'HR@' + str(k):>8} {'NDCG@' + str(k):>8} {'MRR@' + str(k):>8} {'cover':>7} {'targets':>8} {'events/s':>10}"
    lines = [head, "-" * len(head)]
    for name, m in rows:
        eps = m["events_per_s"]
        lines.append(
            f"{name:<{w}} {m['hr']:8.4f} {m['ndcg']:8.4f} {m['mrr']:8.4f} {m['coverage']:7.3f} {m['targets']:8d} "
            f"{(f'{eps:,.0f}' if eps else '-'):>10}"
        )
    for name, m in rows:
        vs = m.get("vs_best_baseline")
        if vs and vs["delta"] is not None:
            low, high = vs["ci95"]
            lines.append(f"{name} vs {vs['model']}: NDCG@{k} {vs['delta']:+.4f} (95 % CI {low:+.4f} … {high:+.4f}, "
                         f"paired bootstrap over {vs['targets']:,} targets)")
    return "\n".join(lines)


def plot_timeline(result: dict, path: str) -> None:
    """NDCG@K per time bucket of the test period, one line per model (PNG, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    from datetime import datetime, timezone

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=90)
    for name, m in sorted(result["models"].items(), key=lambda kv: -kv[1]["ndcg"]):
        pts = [(datetime.fromtimestamp(b["t"], timezone.utc), b["ndcg"]) for b in m["timeline"] if b["ndcg"] is not None]
        if pts:
            xs, ys = zip(*pts)
            style = "-" if name.startswith("strata") else "--"
            ax.plot(xs, ys, style, marker=".", linewidth=2.0 if name == "strata" else 1.0, label=f"{name} ({m['ndcg']:.3f})")
    k = result["k"]
    ax.set_title(f"NDCG@{k} over time · {result['dataset']}", fontsize=10)
    ax.set_ylabel(f"NDCG@{k} per time bucket")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)




# -- command line helpers ---------------------------------------------------------------
def parse_rank_params(text: str | None, base: RankParams | None = None) -> RankParams:
    """`RankParams` from "name=value,…" (tuples as a/b/c), e.g. "item_own_weight=3,base_weights=0.6/0.2/0.2"."""
    base = base or RankParams()
    if not text:
        return base
    fields = RankParams.__dataclass_fields__
    changes: dict = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in fields or name in ("alpha", "regularization", "layers"):
            tunable = ", ".join(n for n in fields if n not in ("alpha", "regularization", "layers"))
            raise ValueError(f"bad rank parameter {part!r}; use name=value with name one of {tunable}")
        current = getattr(base, name)
        try:
            if value.strip().lower() == "none" and name == "repeat_prior":
                changes[name] = None
            elif isinstance(current, bool):
                changes[name] = value.strip().lower() in ("1", "true", "yes")
            elif isinstance(current, tuple):
                changes[name] = tuple(float(x) for x in value.split("/"))
            elif isinstance(current, int) and not isinstance(current, bool):
                changes[name] = int(value)
            else:
                changes[name] = float(value)
        except ValueError:
            raise ValueError(f"bad value for rank parameter {name}: {value!r}") from None
    return replace(base, **changes)


def format_rank_params(params: RankParams, base: RankParams | None = None) -> str:
    """The inverse of `parse_rank_params`: the fields that differ from `base`."""
    base = base or RankParams()
    parts = []
    for name in params.__dataclass_fields__:
        v = getattr(params, name)
        if v != getattr(base, name):
            text = "none" if v is None else str(int(v)) if isinstance(v, bool) else "/".join(f"{x:g}" for x in v) if isinstance(v, tuple) else f"{v:g}"
            parts.append(f"{name}={text}")
    return ",".join(parts)


def format_markdown(result: dict) -> str:
    """The result as a Markdown table (for docs/RESULTS.md), best NDCG first."""
    k = result["k"]
    lines = [
        f"| model | HR@{k} | NDCG@{k} | MRR@{k} | coverage | targets | events/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in sorted(result["models"].items(), key=lambda kv: -kv[1]["ndcg"]):
        eps = m["events_per_s"]
        bold = "**" if name.startswith("strata") and name in ("strata", "strata-tuned") else ""
        lines.append(
            f"| {bold}{name}{bold} | {m['hr']:.4f} | {bold}{m['ndcg']:.4f}{bold} | {m['mrr']:.4f} | "
            f"{m['coverage']:.3f} | {m['targets']:,} | {f'{eps:,.0f}' if eps else '-'} |"
        )
    notes = []
    for name in ("strata", "strata-tuned"):
        vs = result["models"].get(name, {}).get("vs_best_baseline")
        if vs and vs["delta"] is not None:
            low, high = vs["ci95"]
            notes.append(f"`{name}` − `{vs['model']}`: {vs['delta']:+.4f} (95 % CI {low:+.4f} … {high:+.4f})")
    if notes:
        lines += ["", f"NDCG@{k} against the best baseline, paired bootstrap over the same targets: " + "; ".join(notes) + "."]
    return "\n".join(lines)


__all__ = [
    "Dataset", "Protocol", "TUNING_GRID", "evaluate", "format_markdown", "format_rank_params", "format_table",
    "load_dataset", "parse_rank_params", "plot_timeline", "prequential", "tune",
]
