"""Prequential (test-then-train) evaluation of docs/design.md §6, in-process.

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

import bisect
import math
import time
import zlib
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

from strata.models.catalog import Catalog
from strata.models.events import EVENT_TYPES, Event, InvalidEvent, parse_event
from strata.models.popularity import DAY
from strata.models.profile import ProfileParams
from strata.models.ranking import RankParams
from strata.models.evaluation.metrics import RankingScore, ndcg_at_k, paired_bootstrap
from strata.models.evaluation.recommenders import BatchTrainer, FixedLayersModel, Recommender, World
from strata.models.evaluation.registry import build_models
from strata.models import als

EXCLUDE = ("in-view", "none", "purchased", "seen")
ACTIVITY_BUCKETS: tuple[tuple[int, int | None], ...] = ((1, 4), (5, 19), (20, 99), (100, None))
CUTS = ("time", "events")
#: re-fits over the log's time span when no period is given (the refit period follows the span)
AUTO_REFITS = 20


@dataclass(frozen=True)
class Protocol:
    """Everything the numbers depend on besides the data and the models' own parameters.

    The default is the protocol of docs/design.md §6: warm-up on the first 30 % of the log's time span;
    targets are every later event of a user with an earlier event whose item differs from that
    user's previous item (the next *new* interaction); every list leaves out the item in view
    (the user's previous item), which is never a target; nothing else is filtered.

    targets       event types that may be targets
    next_new      only events whose item differs from the user's previous item are targets
    warmup, until cuts as shares of the time span (`cut="time"`) or of the events (`cut="events"`)
    refit_every_s batch re-fit period in event time; None: the span / AUTO_REFITS
    exclude       the candidate filter applied to every model's list: "in-view" (the user's
                  previous item), "none", "purchased" (the user's purchases), "seen" (every
                  item the user touched)
    """

    k: int = 10
    targets: tuple[str, ...] = EVENT_TYPES
    next_new: bool = True
    warmup: float = 0.3
    until: float = 1.0
    cut: str = "time"
    refit_every_s: float | None = None
    exclude: str = "in-view"
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
        if self.cut not in CUTS:
            raise ValueError(f"cut must be one of {CUTS}, got {self.cut!r}")
        if self.refit_every_s is not None and not (self.refit_every_s > 0 and math.isfinite(self.refit_every_s)):
            raise ValueError(f"refit_every_s must be a positive number of seconds, got {self.refit_every_s}")
        if not 0.0 < self.target_sample <= 1.0:
            raise ValueError(f"target_sample must be in (0, 1], got {self.target_sample}")
        if self.exclude not in EXCLUDE:
            raise ValueError(f"exclude must be one of {EXCLUDE}, got {self.exclude!r}")

    def cuts(self, events: Sequence[Event]) -> tuple[int, int]:
        """(first tested event, first event not evaluated) as indices into the time-sorted events."""
        n = len(events)
        if self.cut == "events":
            n_warm = int(self.warmup * n)
            return n_warm, max(n_warm + 1, int(self.until * n))
        t_min, t_max = events[0].ts, events[-1].ts
        t_warm = t_min + self.warmup * (t_max - t_min)
        t_until = t_min + self.until * (t_max - t_min)
        times = [e.ts for e in events]
        n_warm = bisect.bisect_left(times, t_warm)
        n_stop = n if self.until >= 1.0 else bisect.bisect_right(times, t_until)
        return min(n_warm, n - 1), max(n_warm + 1, n_stop)

    def refit_period(self, events: Sequence[Event]) -> float:
        """The re-fit period: as given, or the log's time span / AUTO_REFITS (at least a minute)."""
        if self.refit_every_s is not None:
            return self.refit_every_s
        return max(60.0, (events[-1].ts - events[0].ts) / AUTO_REFITS)

    def describe(self) -> dict:
        return {
            "order": "event time (stable), test-then-train",
            "k": self.k,
            "targets": list(self.targets),
            "next_new": self.next_new,
            "target_rule": ("events of a user with an earlier event whose item differs from that user's previous item"
                            if self.next_new else "events of a user with an earlier event"),
            "cut": f"shares of the {'time span' if self.cut == 'time' else 'events in time order'}",
            "warmup": self.warmup,
            "until": self.until,
            "refit_every_s": self.refit_every_s,
            "candidate_filter": self.exclude,
            "coverage": "distinct recommended items / distinct items in the evaluated log",
            "target_sample": self.target_sample,
            "bootstrap": "paired, over users (all of a user's targets resampled together)",
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
    """Read a `models.logs.loaders.LogSource` whole: valid events sorted by time, and its catalog."""
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
    slices: dict[str, dict[str, list[float]]] = field(default_factory=dict)  # slice → value → [Σ ndcg, targets]
    gains: list[float] = field(default_factory=list)  # NDCG of every target, in order (all models share the targets)

    def add_to(self, slice_name: str, value: str, gain: float) -> None:
        cell = self.slices.setdefault(slice_name, {}).setdefault(value, [0.0, 0])
        cell[0] += gain
        cell[1] += 1


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


class _Users:
    """What the protocol itself knows of every user: event count, previous item, touched and bought items."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}
        self.last: dict[str, str] = {}
        self.seen: dict[str, set[str]] = {}
        self.purchased: dict[str, set[str]] = {}

    def is_target(self, e: Event, protocol: Protocol) -> bool:
        if e.type not in protocol.targets or self.count.get(e.user_id, 0) == 0:
            return False
        if protocol.next_new and self.last.get(e.user_id) == e.item_id:
            return False
        return _sampled(e.event_id, protocol.target_sample)

    def skip(self, user: str, exclude: str) -> set[str]:
        """The protocol's candidate filter for this user, the same for every model."""
        if exclude == "in-view":
            last = self.last.get(user)
            return set() if last is None else {last}
        if exclude == "purchased":
            return self.purchased.get(user, set())
        if exclude == "seen":
            return self.seen.get(user, set())
        return set()

    def slices(self, e: Event) -> dict[str, str]:
        """The slices a target belongs to (docs/design.md §6)."""
        return {
            "by_activity": _activity_bucket(self.count[e.user_id]),
            "by_target": "seen" if e.item_id in self.seen.get(e.user_id, ()) else "new",
            "by_type": "cart/purchase" if e.type in ("cart", "purchase") else "view/click/fav",
        }

    def learn(self, e: Event) -> None:
        self.count[e.user_id] = self.count.get(e.user_id, 0) + 1
        self.last[e.user_id] = e.item_id
        self.seen.setdefault(e.user_id, set()).add(e.item_id)
        if e.type == "purchase":
            self.purchased.setdefault(e.user_id, set()).add(e.item_id)


def _refit_all(models: Mapping[str, Recommender], trainer: BatchTrainer, results: dict, now: float) -> None:
    """Re-fit every model at event time `now`; the shared ALS fit is charged to each model that uses it."""
    fit_before = trainer.fit_s
    for name, m in models.items():
        t = time.perf_counter()
        fit_now = trainer.fit_s
        m.refit(now)
        # the shared fit runs inside whichever model asks first; charged below to all
        results[name].seconds += time.perf_counter() - t - (trainer.fit_s - fit_now)
    shared = trainer.fit_s - fit_before
    for name, m in models.items():
        if m.uses_batch_fit:
            results[name].seconds += shared


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
    "by_target", "by_type", …}}, "als", "als_fit_s"}.

    `on_ask(model_name, event)` is called right before a model is asked for the
    user of a target event (tests use it to check what the model has seen).
    """
    events = dataset.events
    if not events:
        raise ValueError("the log holds no valid events")
    n_warm, n_stop = protocol.cuts(events)
    t_warm, t_stop = events[n_warm].ts, events[n_stop - 1].ts
    period = protocol.refit_period(events)
    nb, k = protocol.timeline_buckets, protocol.k
    results = {name: ModelResult(RankingScore(k), timeline=[[0.0, 0] for _ in range(nb)]) for name in models}
    users = _Users()
    target_users: list[str] = []
    next_refit: float | None = None
    refits = evaluated = 0

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_stop, unit="ev", desc="evaluate", smoothing=0.05, mininterval=0.5)
    try:
        for n, e in enumerate(events[:n_stop]):
            testing = n >= n_warm
            if testing and (next_refit is None or e.ts >= next_refit):
                _refit_all(models, trainer, results, e.ts)
                refits += 1
                next_refit = e.ts + period if next_refit is None else next_refit
                while next_refit <= e.ts:
                    next_refit += period
            if testing and users.is_target(e, protocol):
                bucket = min(nb - 1, int((e.ts - t_warm) / max(t_stop - t_warm, 1e-9) * nb))
                _score_target(e, models, results, users, protocol, bucket, on_ask)
                target_users.append(e.user_id)
            for name, m in models.items():
                t = time.perf_counter()
                m.learn_one(e)
                results[name].seconds += time.perf_counter() - t
            trainer.observe(e)
            users.learn(e)
            evaluated = n + 1
            if bar is not None and n % 256 == 0:
                bar.update(n + 1 - bar.n)
    finally:
        if bar is not None:
            bar.update(evaluated - bar.n)
            bar.close()
    catalogue = len({e.item_id for e in events[:evaluated]})
    out_models = _summaries(results, models, evaluated, catalogue, t_warm, t_stop, nb)
    _compare(out_models, results, target_users)
    return {
        "dataset": dataset.name,
        "protocol": {
            **protocol.describe(),
            "refit_period_s": period,
            "events": evaluated,
            "events_in_log": len(events),
            "invalid_events": dataset.invalid,
            "catalogue_items": catalogue,
            "refits": refits,
            "t_start": events[0].ts,
            "t_warm": t_warm,
            "t_stop": t_stop,
        },
        "k": k,
        "models": out_models,
        "als": trainer.params.as_dict(),
        "als_fit_s": trainer.fit_s,
    }


def _score_target(e: Event, models: Mapping[str, Recommender], results: dict, users: _Users,
                  protocol: Protocol, bucket: int, on_ask) -> None:
    """Ask every model for the user of target `e` (before it learns `e`) and score the lists."""
    k = protocol.k
    skip = users.skip(e.user_id, protocol.exclude)
    slices = users.slices(e)
    for name, m in models.items():
        if on_ask is not None:
            on_ask(name, e)
        t = time.perf_counter()
        ids, _ = m.rank(e.user_id, k + len(skip), e.ts)
        r = results[name]
        r.seconds += time.perf_counter() - t
        ids = [j for j in ids if j not in skip][:k]
        g = ndcg_at_k(r.score.add(ids, e.item_id))
        r.gains.append(g)
        r.timeline[bucket][0] += g
        r.timeline[bucket][1] += 1
        for slice_name, value in slices.items():
            r.add_to(slice_name, value, g)


def _summaries(results: dict, models: Mapping[str, Recommender], evaluated: int, catalogue: int,
               t_warm: float, t_stop: float, nb: int) -> dict:
    t_bucket = (t_stop - t_warm) / nb
    out = {}
    for name, r in results.items():
        s = r.score
        out[name] = {
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
        }
        for slice_name, cells in r.slices.items():
            order = sorted(cells, key=_slice_order)
            out[name][slice_name] = {v: {"ndcg": cells[v][0] / cells[v][1], "targets": cells[v][1]} for v in order}
    return out


def _slice_order(value: str):
    head = value.split("-")[0].rstrip("+")
    return (0, int(head), value) if head.isdigit() else (1, 0, value)


def _compare(out_models: dict, results: dict, target_users: list[str]) -> None:
    """Each Strata row against the best baseline (of every form): a paired bootstrap over users."""
    baselines = [name for name in results if not name.startswith("strata")]
    if not baselines:
        return
    best = max(baselines, key=lambda name: out_models[name]["ndcg"])
    for name in results:
        if name.startswith("strata"):
            out_models[name]["vs_best_baseline"] = {
                "model": best, **paired_bootstrap(results[name].gains, results[best].gains, groups=target_users)}
            slices = {}
            for slice_name, cut in (("new item", ("by_target", "new")), ("cart/purchase", ("by_type", "cart/purchase"))):
                mine = out_models[name].get(cut[0], {}).get(cut[1])
                theirs = out_models[best].get(cut[0], {}).get(cut[1])
                if mine and theirs:
                    slices[slice_name] = {"strata": mine["ndcg"], best: theirs["ndcg"], "targets": mine["targets"]}
            out_models[name]["vs_best_baseline"]["slices"] = slices


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
    """Build the named models (plus hand-weighted variants `extra`: name → RankParams) and run them."""
    world = World(dataset.catalog, profile_params)
    trainer = BatchTrainer(world, als_params)
    models = build_models(model_names, world, trainer, rank_params, seed=seed)
    for name, rp in (extra or {}).items():
        models[name] = FixedLayersModel(world, trainer, rp)
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
                         f"paired bootstrap over {vs.get('groups', vs['targets']):,} users, {vs['targets']:,} targets)")
    strata = result["models"].get("strata")
    if strata is not None:
        for slice_name, value, label in (("by_target", "new", "new-item"), ("by_type", "cart/purchase", "cart/purchase")):
            cells = {n: m[slice_name][value] for n, m in result["models"].items() if value in m.get(slice_name, {})}
            if "strata" in cells:
                best = max((n for n in cells if not n.startswith("strata")), key=lambda n: cells[n]["ndcg"], default=None)
                other = f", best baseline {best} {cells[best]['ndcg']:.4f}" if best else ""
                lines.append(f"{label} targets ({cells['strata']['targets']:,}): strata {cells['strata']['ndcg']:.4f}{other}")
    return "\n".join(lines)


PLOTTED_BASELINES = 5


def plot_timeline(result: dict, path: str) -> None:
    """NDCG@K per time bucket of the test period for Strata, the served hand-weighted scorer and
    the best `PLOTTED_BASELINES` baselines (PNG, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    from datetime import datetime, timezone

    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=90)
    ranked = sorted(result["models"].items(), key=lambda kv: -kv[1]["ndcg"])
    # Strata and its served scorer, and the best baselines: more lines than that hide each other
    shown = [(n, m) for n, m in ranked if n in ("strata", "strata-fixed")]
    shown += [(n, m) for n, m in ranked if not n.startswith("strata")][:PLOTTED_BASELINES]
    for name, m in sorted(shown, key=lambda kv: -kv[1]["ndcg"]):
        pts = [(datetime.fromtimestamp(b["t"], timezone.utc), b["ndcg"]) for b in m["timeline"] if b["ndcg"] is not None]
        if pts:
            xs, ys = zip(*pts)
            style = "-" if name.startswith("strata") else "--"
            ax.plot(xs, ys, style, marker=".", linewidth=2.0 if name == "strata" else 1.0, label=f"{name} ({m['ndcg']:.3f})")
    k = result["k"]
    ax.set_title(f"NDCG@{k} over time · {result['dataset']}", fontsize=10)
    ax.set_ylabel(f"NDCG@{k} per time bucket")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)




def format_markdown(result: dict) -> str:
    """The result as a Markdown table (for docs/RESULTS.md), best NDCG first, with the new-item
    and cart/purchase slices."""
    k = result["k"]
    lines = [
        f"| model | HR@{k} | NDCG@{k} | MRR@{k} | NDCG@{k} new-item | NDCG@{k} cart/purchase | coverage | targets | events/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(m: dict, slice_name: str, value: str) -> str:
        c = m.get(slice_name, {}).get(value)
        return f"{c['ndcg']:.4f}" if c else "-"

    for name, m in sorted(result["models"].items(), key=lambda kv: -kv[1]["ndcg"]):
        eps = m["events_per_s"]
        bold = "**" if name in ("strata", "strata-fixed-tuned") else ""
        lines.append(
            f"| {bold}{name}{bold} | {m['hr']:.4f} | {bold}{m['ndcg']:.4f}{bold} | {m['mrr']:.4f} | "
            f"{cell(m, 'by_target', 'new')} | {cell(m, 'by_type', 'cart/purchase')} | "
            f"{m['coverage']:.3f} | {m['targets']:,} | {f'{eps:,.0f}' if eps else '-'} |"
        )
    notes = []
    for name in ("strata", "strata-fixed-tuned"):
        vs = result["models"].get(name, {}).get("vs_best_baseline")
        if vs and vs["delta"] is not None:
            low, high = vs["ci95"]
            notes.append(f"`{name}` − `{vs['model']}`: {vs['delta']:+.4f} (95 % CI {low:+.4f} … {high:+.4f}, "
                         f"{vs.get('groups', 0):,} users)")
    if notes:
        lines += ["", f"NDCG@{k} against the best baseline, paired bootstrap over users: " + "; ".join(notes) + "."]
    return "\n".join(lines)


__all__ = [
    "Dataset", "Protocol", "TUNING_GRID", "evaluate", "format_markdown", "format_table",
    "load_dataset", "plot_timeline", "prequential", "tune",
]
