"""Every model of the prequential evaluation (SPEC §6) behind one small interface.

A `Recommender` learns from one event at a time (`learn_one`), may be re-fitted
on a schedule (`refit`, for the batch models), and ranks items for a user at a
time (`rank`).  The evaluator asks `rank` *before* it shows the event to
`learn_one`, so no model ever sees the event it is scored on.

Strata's models drive the very code the stream workers run — `Profile.learn`,
`Popularity.learn`, `models.als` (fit, fold-in through `FactorModel`) and
`Ranker.recommend` — so what is measured here is what is served.

The baselines:

- `pop`: recent popularity (the `Popularity` of the overall layer);
- `repeat`: the user's own items by decayed weight (the profile's item
  layer), then popular items;
- `als-once` / `als-periodic` / `als-foldin`: implicit ALS on the SPEC §3
  confidences, fitted once on the warm-up, re-fitted on schedule with the
  batch user vectors x_u, or re-fitted with x_u folded in from the live item
  layer before every request;
- `cooc`: item-to-item co-occurrence within each user's last `window`
  distinct items, score(j) = Σ_i a_i · C(i, j) / √n_j, with a_i = γ^age(i);
- `river-mf`: River's online biased MF, one SGD step on each event (y = 1)
  and on one negative sampled from the event stream (y = 0, so popular items
  are sampled as often as they occur); it ranks a candidate pool (the
  `pool` most popular items and the user's recent items), since River scores
  one pair at a time.

All of them fill a short list with popular items, so every model answers k
items whenever the catalogue seen so far holds k.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, replace
from typing import Callable, Iterable

import numpy as np

from models import als
from models.catalog import Catalog
from models.events import Event
from models.factors import FactorModel
from models.popularity import DAY, Popularity
from models.profile import Profile, ProfileParams
from models.ranking import SHARE_BUCKET_NAMES, Ranker, RankParams, ShopRates


# -- what every model may know besides the events ---------------------------------
class World:
    """The catalogue look-ups and profile parameters every model shares (read-only)."""

    def __init__(self, catalog: Catalog, profile_params: ProfileParams | None = None) -> None:
        self.catalog = catalog
        self.profile_params = profile_params or ProfileParams()
        self._layers: dict[tuple[str, str | None], tuple[str | None, str]] = {}

    def layers_for(self, event: Event) -> tuple[str | None, str]:
        """(domain, overall) keys of an event, memoised."""
        key = (event.item_id, event.category_id)
        out = self._layers.get(key)
        if out is None:
            out = self._layers[key] = self.catalog.layers_for(event.item_id, event.category_id)
        return out

    def category_of(self, item_id: str) -> str | None:
        return self.catalog.category_of(item_id)


@dataclass
class Snapshot:
    """One ALS fit: the factor model (as the workers receive it) and the batch user vectors."""

    model: FactorModel
    user_index: dict[str, int]
    X: np.ndarray
    as_of: float
    fit_s: float

    def user_vector(self, user_id: str) -> np.ndarray | None:
        row = self.user_index.get(user_id)
        return None if row is None else self.X[row]


class BatchTrainer:
    """The periodic batch job of SPEC §1, in-process: ALS on every event observed so far.

    The evaluator feeds it (`observe`) after the models were asked, like the
    models themselves; `snapshot(as_of)` fits once per `as_of` and hands the
    same fit to every model that asks, as the trainer topic would.
    """

    def __init__(self, world: World, params: als.ALSParams | None = None) -> None:
        self.world = world
        self.params = params or als.ALSParams()
        self._events: list[Event] = []
        self._snapshot: Snapshot | None = None
        self.fits = 0
        self.fit_s = 0.0

    def observe(self, event: Event) -> None:
        self._events.append(event)

    def snapshot(self, as_of: float) -> Snapshot | None:
        """The fit on the events observed so far (cached per as_of); None with no events."""
        if self._snapshot is not None and self._snapshot.as_of == as_of:
            return self._snapshot
        if not self._events:
            return None
        t = time.perf_counter()
        enc = als.encode_events(self._events)
        pp = self.world.profile_params
        shape = (len(enc.user_ids), len(enc.item_ids))
        C = als.confidence_matrix(
            enc.user_codes, enc.item_codes, enc.type_codes, enc.ts,
            params=pp, as_of=as_of, alpha=self.params.alpha, shape=shape,
        )
        # the latest events decay least; with as_of after them every weight is ≤ β, as in the worker
        X, Y = als.fit(C, self.params, num_threads=1)
        als_meta = {"alpha": self.params.alpha, "regularization": self.params.regularization}
        model = FactorModel(self.fits + 1, tuple(enc.item_ids), Y, {"als": als_meta})
        fit_s = time.perf_counter() - t
        self.fits += 1
        self.fit_s += fit_s
        self._snapshot = Snapshot(model, {u: n for n, u in enumerate(enc.user_ids)}, X, as_of, fit_s)
        return self._snapshot


class LiveState:
    """Per-user profiles and recent popularity, learned exactly as the stream agent does."""

    def __init__(self, world: World, popularity_half_life_s: float = DAY) -> None:
        self.world = world
        self.profiles: dict[str, Profile] = {}
        self.popularity = Popularity(popularity_half_life_s)

    def learn(self, event: Event) -> None:
        domain, overall = self.world.layers_for(event)
        profile = self.profiles.get(event.user_id)
        if profile is None:
            profile = self.profiles[event.user_id] = Profile()
        pp = self.world.profile_params
        if profile.learn(event, domain, overall, pp):
            self.popularity.learn(event.item_id, domain, pp.beta[event.type], event.ts)

    def popular(self, k: int, skip: Iterable[str] = ()) -> list[str]:
        """The k most popular items that are not in `skip`."""
        skip = set(skip)
        out = [j for j in self.popularity.top_ranked(k + len(skip))[0] if j not in skip]
        return out[:k]


Ranking = tuple[list[str], list[float]]


def _fill(items: list[str], scores: list[float], k: int, state: LiveState) -> Ranking:
    """Pad a ranking to k items with popular ones, scored below everything already there."""
    if len(items) < k:
        floor = min(scores, default=0.0)
        extra = state.popular(k - len(items), items)
        items = items + extra
        scores = scores + [floor - 1.0 - n for n in range(len(extra))]
    return items[:k], scores[:k]


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores, best first (ties: lower index)."""
    k = min(k, scores.shape[0])
    if k <= 0:
        return np.zeros(0, np.int64)
    part = np.argpartition(-scores, k - 1)[:k]
    return part[np.lexsort((part, -scores[part]))]


# -- the interface -------------------------------------------------------------------
class Recommender(ABC):
    """learn_one(event) / rank(user, k, now) → (ids, scores), best first, ≤ k distinct ids."""

    #: whether `refit` consumes the shared `BatchTrainer` fit (its cost is charged to the model)
    uses_batch_fit = False

    def __init__(self, world: World) -> None:
        self.world = world

    @abstractmethod
    def learn_one(self, event: Event) -> None:
        """Apply one event (after the model was asked for this user, if at all)."""

    @abstractmethod
    def rank(self, user_id: str, k: int, now: float) -> Ranking:
        """The top-k items for `user_id` at time `now` and their scores, best first."""

    def refit(self, now: float) -> None:
        """A scheduled batch re-fit at event time `now` (nothing for online models)."""

    def describe(self) -> dict:
        """Parameters worth recording next to the numbers."""
        return {}


# -- Strata ----------------------------------------------------------------------------
class StrataModel(Recommender):
    """The layered model of SPEC §3: live profiles, ALS re-fitted on schedule, live fold-in.

    The item layer's factor term folds x_u in from the live item layer and
    blends it with the batch vector x_u of the last fit ("interest regression");
    the workers do the same with the user-factors topic.
    """

    uses_batch_fit = True

    def __init__(self, world: World, trainer: BatchTrainer, params: RankParams | None = None) -> None:
        super().__init__(world)
        self.params = params or RankParams()
        self.trainer = trainer
        self.state = LiveState(world, self.params.popularity_half_life_s)
        self.snapshot: Snapshot | None = None
        self.ranker = self._ranker(None)
        self.shop = ShopRates()

    def _ranker(self, model: FactorModel | None) -> Ranker:
        ranker = Ranker(model, self.world.category_of, self.world.catalog.root_of, self.params)
        # one request at a time on one thread: a dense matvec costs as much as scoring ≈ 15 % of
        # the items alone (`Ranker.bound_share`); the answers are the same either way
        ranker.bound_share = 0.15
        return ranker

    def learn_one(self, event: Event) -> None:
        domain, _ = self.world.layers_for(event)
        self.shop.learn(
            self.state.profiles.get(event.user_id), event.item_id, domain, self.state.popularity,
            self.params, self.world.profile_params,
        )
        self.state.learn(event)

    def refit(self, now: float) -> None:
        snap = self.trainer.snapshot(now)
        if snap is not None and snap is not self.snapshot:
            self.snapshot = snap
            self.ranker = self._ranker(snap.model)

    def rank(self, user_id: str, k: int, now: float) -> Ranking:
        profile = self.state.profiles.get(user_id)
        long_term = self.snapshot.user_vector(user_id) if self.snapshot is not None else None
        recs = self.ranker.recommend(
            profile, k=k, popularity=self.state.popularity, now=now, exclude_purchased=False,
            long_term=long_term, profile_params=self.world.profile_params, user_id=user_id,
            revisit_rate=self.shop.revisit_rate, domain_share=self.shop.domain_share(self.params, profile),
        )
        return _fill(list(recs.items), list(recs.scores), k, self.state)

    def describe(self) -> dict:
        shares = self.shop.domain_shares(self.params)
        return {
            "rank_params": self.params.as_dict(),
            # what the shop's events taught by the end of the run (ShopRates)
            "shop_rates": {
                "revisit_rate": self.shop.revisit_rate,
                "domain_share": dict(zip(SHARE_BUCKET_NAMES, shares)),
                **self.shop.to_dict(),
            },
        }


# -- baselines -------------------------------------------------------------------------
class PopularityModel(Recommender):
    """Recent popularity: the same decayed, β-weighted counts as Strata's overall layer."""

    def __init__(self, world: World, half_life_s: float = DAY) -> None:
        super().__init__(world)
        self.state = LiveState(world, half_life_s)
        self.half_life_s = half_life_s

    def learn_one(self, event: Event) -> None:
        domain, _ = self.world.layers_for(event)
        self.state.popularity.learn(event.item_id, domain, self.world.profile_params.beta[event.type], event.ts)

    def rank(self, user_id: str, k: int, now: float) -> Ranking:
        items, ranks = self.state.popularity.top_ranked(k)
        return items, ranks

    def describe(self) -> dict:
        return {"half_life_s": self.half_life_s}


class RepeatModel(Recommender):
    """The user's own items by decayed weight w_item(j, now), then popular items."""

    def __init__(self, world: World, popularity_half_life_s: float = DAY) -> None:
        super().__init__(world)
        self.state = LiveState(world, popularity_half_life_s)

    def learn_one(self, event: Event) -> None:
        self.state.learn(event)

    def rank(self, user_id: str, k: int, now: float) -> Ranking:
        profile = self.state.profiles.get(user_id)
        own: list[tuple[str, float]] = []
        if profile is not None:
            weights = profile.weights("item", self.world.profile_params, now)
            own = sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        return _fill([j for j, _ in own], [w for _, w in own], k, self.state)


class ALSModel(Recommender):
    """Implicit ALS with the three update regimes of SPEC §6.

    mode "once": fitted at the first refit (the end of the warm-up), never again;
    "periodic": re-fitted on schedule, x_u = the batch user vector;
    "foldin": re-fitted on schedule, x_u folded in from the live item layer.
    Scores x_u · y_j over every item of the fit; users without a vector get popular items.
    """

    uses_batch_fit = True
    MODES = ("once", "periodic", "foldin")

    def __init__(self, world: World, trainer: BatchTrainer, mode: str) -> None:
        super().__init__(world)
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.trainer = trainer
        self.state = LiveState(world)
        self.snapshot: Snapshot | None = None

    def learn_one(self, event: Event) -> None:
        self.state.learn(event)

    def refit(self, now: float) -> None:
        if self.mode == "once" and self.snapshot is not None:
            return
        self.snapshot = self.trainer.snapshot(now)

    def rank(self, user_id: str, k: int, now: float) -> Ranking:
        snap = self.snapshot
        x = None
        if snap is not None:
            if self.mode == "foldin":
                profile = self.state.profiles.get(user_id)
                if profile is not None:
                    x = snap.model.fold_in(profile.weights("item", self.world.profile_params, now))
            else:
                x = snap.user_vector(user_id)
        if x is None or not np.any(x):
            return _fill([], [], k, self.state)
        scores = snap.model.Y @ np.asarray(x, np.float32)
        top = _top_k(scores, k)
        ids = snap.model.item_ids
        return _fill([ids[t] for t in top.tolist()], scores[top].astype(float).tolist(), k, self.state)

    def describe(self) -> dict:
        return {"mode": self.mode, "als": self.trainer.params.as_dict()}


class CoocModel(Recommender):
    """Item-to-item co-occurrence over each user's recent items.

    C(i, j) counts the users in whose last `window` distinct items i and j
    both appear (counted when the later one arrives); n_j counts item j's
    events.  score(j) = Σ_{i ∈ recent(u)} γ^age(i) · C(i, j) / √n_j, where
    age is 0 for the user's latest item: recent items count most, and
    dividing by √n_j keeps the very popular items from swamping the list.
    """

    def __init__(self, world: World, window: int = 20, gamma: float = 0.9) -> None:
        super().__init__(world)
        self.window = window
        self.gamma = gamma
        self.state = LiveState(world)
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        self._n = np.zeros(1024, np.float64)
        self._C: list[dict[int, float]] = []
        self._recent: dict[str, deque[int]] = {}

    def _id(self, item: str) -> int:
        j = self._index.get(item)
        if j is None:
            j = self._index[item] = len(self._ids)
            self._ids.append(item)
            self._C.append({})
            if j >= self._n.shape[0]:
                self._n = np.concatenate([self._n, np.zeros_like(self._n)])
        return j

    def learn_one(self, event: Event) -> None:
        self.state.learn(event)
        j = self._id(event.item_id)
        self._n[j] += 1.0
        recent = self._recent.get(event.user_id)
        if recent is None:
            recent = self._recent[event.user_id] = deque(maxlen=self.window)
        if j in recent:
            recent.remove(j)  # a return visit refreshes the item, not the pairs
        else:
            row_j = self._C[j]
            for i in recent:
                row_i = self._C[i]
                row_i[j] = row_i.get(j, 0.0) + 1.0
                row_j[i] = row_j.get(i, 0.0) + 1.0
        recent.append(j)

    def rank(self, user_id: str, k: int, now: float) -> Ranking:
        recent = self._recent.get(user_id)
        if not recent:
            return _fill([], [], k, self.state)
        n = len(self._ids)
        scores = np.zeros(n, np.float64)
        for age, i in enumerate(reversed(recent)):
            row = self._C[i]
            if row:
                cols = np.fromiter(row.keys(), np.int64, len(row))
                vals = np.fromiter(row.values(), np.float64, len(row))
                scores[cols] += (self.gamma ** age) * vals
        nz = np.flatnonzero(scores)
        if nz.size == 0:
            return _fill([], [], k, self.state)
        s = scores[nz] / np.sqrt(self._n[nz])
        top = _top_k(s, k)
        return _fill([self._ids[t] for t in nz[top].tolist()], s[top].tolist(), k, self.state)

    def describe(self) -> dict:
        return {"window": self.window, "gamma": self.gamma}


class RiverMFModel(Recommender):
    """River's online biased MF (`river.reco.BiasedMF`), ranking a candidate pool."""

    def __init__(self, world: World, n_factors: int = 16, pool: int = 300, negatives: int = 1,
                 learning_rate: float = 0.05, l2: float = 0.01, seed: int = 0) -> None:
        super().__init__(world)
        from river import optim, reco

        self.mf = reco.BiasedMF(
            n_factors=n_factors,
            bias_optimizer=optim.SGD(learning_rate),
            latent_optimizer=optim.SGD(learning_rate),
            l2_bias=l2,
            l2_latent=l2,
            weight_initializer=optim.initializers.Zeros(),
            latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=seed),
            seed=seed,
        )
        self.n_factors = n_factors
        self.pool = pool
        self.negatives = negatives
        self.learning_rate = learning_rate
        self.l2 = l2
        self.seed = seed
        self.state = LiveState(world)
        self._rng = np.random.default_rng(seed)
        self._stream: list[str] = []  # every event's item: sampling it is sampling by popularity
        self._recent: dict[str, deque[str]] = {}

    def learn_one(self, event: Event) -> None:
        self.state.learn(event)
        self.mf.learn_one(event.user_id, event.item_id, 1.0)
        for _ in range(self.negatives if self._stream else 0):
            neg = self._stream[int(self._rng.integers(len(self._stream)))]
            if neg != event.item_id:
                self.mf.learn_one(event.user_id, neg, 0.0)
        self._stream.append(event.item_id)
        recent = self._recent.get(event.user_id)
        if recent is None:
            recent = self._recent[event.user_id] = deque(maxlen=50)
        recent.append(event.item_id)

    def rank(self, user_id: str, k: int, now: float) -> Ranking:
        mf = self.mf
        p_u = mf.u_latents.get(user_id)
        if p_u is None:
            return _fill([], [], k, self.state)
        candidates = list(dict.fromkeys(self.state.popularity.top_ranked(self.pool)[0] + list(self._recent.get(user_id, ()))))
        candidates = [j for j in candidates if j in mf.i_latents]
        if not candidates:
            return _fill([], [], k, self.state)
        Q = np.stack([mf.i_latents[j] for j in candidates])
        b = np.fromiter((mf.i_biases.get(j, 0.0) for j in candidates), np.float64, len(candidates))
        # the same prediction as BiasedMF.predict_one, for the whole pool at once
        scores = mf.global_mean.get() + mf.u_biases.get(user_id, 0.0) + b + Q @ p_u
        top = _top_k(scores, k)
        return _fill([candidates[t] for t in top.tolist()], scores[top].tolist(), k, self.state)

    def describe(self) -> dict:
        return {"n_factors": self.n_factors, "pool": self.pool, "negatives": self.negatives,
                "learning_rate": self.learning_rate, "l2": self.l2, "seed": self.seed}


# -- the registry ----------------------------------------------------------------------
STRATA_LAYERS = {"strata-item": ("item",), "strata-domain": ("domain",), "strata-overall": ("overall",)}

MODEL_NAMES: tuple[str, ...] = (
    "strata", "strata-item", "strata-domain", "strata-overall",
    "pop", "repeat", "als-once", "als-periodic", "als-foldin", "cooc", "river-mf",
)


def build_models(
    names: Iterable[str],
    world: World,
    trainer: BatchTrainer,
    rank_params: RankParams | None = None,
    seed: int = 0,
) -> dict[str, Recommender]:
    """The named models, in order; `rank_params` configures Strata and its one-layer variants."""
    rp = rank_params or RankParams()
    makers: dict[str, Callable[[], Recommender]] = {
        "strata": lambda: StrataModel(world, trainer, rp),
        "pop": lambda: PopularityModel(world, rp.popularity_half_life_s),
        "repeat": lambda: RepeatModel(world, rp.popularity_half_life_s),
        "als-once": lambda: ALSModel(world, trainer, "once"),
        "als-periodic": lambda: ALSModel(world, trainer, "periodic"),
        "als-foldin": lambda: ALSModel(world, trainer, "foldin"),
        "cooc": lambda: CoocModel(world),
        "river-mf": lambda: RiverMFModel(world, seed=seed),
    }
    for name, layers in STRATA_LAYERS.items():
        makers[name] = (lambda layers=layers: StrataModel(world, trainer, _with_layers(rp, layers)))
    out: dict[str, Recommender] = {}
    for name in names:
        if name not in makers:
            raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
        out[name] = makers[name]()
    return out


def _with_layers(params: RankParams, layers: tuple[str, ...]) -> RankParams:
    return replace(params, layers=layers)


__all__ = [
    "ALSModel", "BatchTrainer", "CoocModel", "LiveState", "MODEL_NAMES", "PopularityModel",
    "Recommender", "RepeatModel", "RiverMFModel", "Snapshot", "StrataModel", "World", "build_models",
]
