"""The interface every model of the prequential evaluation (docs/design.md §6) implements, Strata's
models and the batch-fitted and online-MF baselines.

A `Recommender` learns from one event at a time (`learn_one`), may be re-fitted
on a schedule (`refit`, for the batch models), and ranks items for a user at a
time (`rank`).  The evaluator asks `rank` *before* it shows the event to
`learn_one`, so no model ever sees the event it is scored on.

Strata's models drive the code the stream workers run — `Profile.learn`,
`Popularity.learn`, `models.als` (fit, fold-in through `FactorModel`) — and the
learned ranker of `models.blend` / `models.terms`.

Besides the textbook baselines of `models.evaluation.baselines`:

- `pop`: recent popularity (the `Popularity` of the overall layer, β-weighted);
- `als-once` / `als-periodic` / `als-foldin`: implicit ALS on the docs/design.md §3
  confidences, fitted once on the warm-up, re-fitted on schedule with the
  batch user vectors x_u, or re-fitted with x_u folded in from the live item
  layer before every request;
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
from dataclasses import asdict, dataclass, replace
from typing import Iterable

import numpy as np

from strata.models import als
from strata.models.catalog import Catalog
from strata.models.events import Event
from strata.models.factors import FactorModel
from strata.models.popularity import DAY, Popularity
from strata.models.profile import Profile, ProfileParams
from strata.models.learned import LAYER_TERMS, LearnedRanker, layer_mask, user_state
from strata.models.covisit import CoVisits
from strata.models.ranking import SHARE_BUCKET_NAMES, Ranker, RankParams, ShopRates, blend_user_vector
from strata.models.terms import LONG_WINDOW, TERMS, LearnParams, TermWeights


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
    """The periodic batch job of docs/design.md §1, in-process: ALS on every event observed so far.

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
    """Strata: the three layers' terms (`models.terms`), weights θ learned online from what
    shoppers do next, co-visitation kept by the stream, ALS re-fitted on schedule with x_u
    folded in from the live item layer and blended with the batch vector (interest regression).

    Every event whose item differs from the user's previous one is feedback: the candidates
    the ranker would have shown just before it are scored and θ takes one pairwise step
    (`TermWeights.learn`).  `layers` keeps only the terms of some layers (an ablation).
    """

    uses_batch_fit = True

    def __init__(self, world: World, trainer: BatchTrainer, params: RankParams | None = None,
                 learn: LearnParams | None = None, layers: tuple[str, ...] = ("item", "domain", "overall"),
                 learning: bool = True) -> None:
        super().__init__(world)
        self.params = params or RankParams()
        self.trainer = trainer
        self.state = LiveState(world, self.params.popularity_half_life_s)
        self.covisits = CoVisits()
        self.weights = TermWeights(learn)
        self.layers = tuple(layers)
        self.learning = learning
        self._mask = None if len(self.layers) == len(LAYER_TERMS) else layer_mask(self.layers)
        self.snapshot: Snapshot | None = None
        self.ranker = self._ranker()
        self._asked: tuple[str, float, list[str], np.ndarray] | None = None

    def _ranker(self) -> LearnedRanker:
        model = self.snapshot.model if self.snapshot is not None else None
        return LearnedRanker(model, self.world.category_of, self.world.catalog.root_of, self.covisits,
                             self.state.popularity, self.weights, self.world.profile_params, self.params)

    def _score(self, user_id: str, now: float) -> tuple[list[str], np.ndarray, np.ndarray]:
        snap = self.snapshot
        profile = self.state.profiles.get(user_id)
        long_term = snap.user_vector(user_id) if snap is not None else None
        user = user_state(profile, self.ranker.model, long_term, now, self.world.profile_params, self.params)
        ids, F, scores = self.ranker.score(user, now, mask=self._mask)
        self._asked = (user_id, now, ids, F)
        return ids, F, scores

    def rank(self, user_id: str, k: int, now: float) -> Ranking:
        if user_id not in self.state.profiles:
            return _fill([], [], k, self.state)
        ids, _, scores = self._score(user_id, now)
        top = _top_k(scores, k)
        return _fill([ids[t] for t in top.tolist()], scores[top].tolist(), k, self.state)

    def learn_one(self, event: Event) -> None:
        profile = self.state.profiles.get(event.user_id)
        recent = profile.recent_items(LONG_WINDOW + 1) if profile is not None else []
        if self.learning and recent and recent[0] != event.item_id:
            asked = self._asked
            if asked is not None and asked[0] == event.user_id and asked[1] == event.ts:
                ids, F = asked[2], asked[3]
                scores = F @ self.weights.theta
            else:
                ids, F, scores = self._score(event.user_id, event.ts)
            try:
                positive = ids.index(event.item_id)
            except ValueError:
                positive = None
            self.weights.learn(F, positive, scores)
        self._asked = None
        self.covisits.learn(event.item_id, recent, event.ts)
        self.state.learn(event)

    def refit(self, now: float) -> None:
        snap = self.trainer.snapshot(now)
        if snap is not None:
            self.snapshot = snap
            self.ranker = self._ranker()

    def describe(self) -> dict:
        return {"theta": self.weights.as_dict(), "updates": self.weights.updates, "misses": self.weights.misses,
                "layers": list(self.layers), "learn": asdict(self.weights.params), "learning": self.learning}


# -- Strata ----------------------------------------------------------------------------
class FixedLayersModel(Recommender):
    """The hand-weighted layered scorer (`models.ranking.Ranker`, which the workers serve today):
    live profiles, ALS re-fitted on schedule, live fold-in, layer weights by formula.

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
    """`pop`, recent popularity in its textbook form: every event counts 1, decayed with the
    half-life, pop(j, T) = Σ_{events on j} 2^(−(T − ts)/H) (docs/design.md §6's reference); with
    `beta_weighted`, each event counts its behaviour weight β instead (Strata's overall layer)."""

    def __init__(self, world: World, half_life_s: float = DAY, beta_weighted: bool = False) -> None:
        super().__init__(world)
        self.state = LiveState(world, half_life_s)
        self.half_life_s = half_life_s
        self.beta_weighted = beta_weighted

    def learn_one(self, event: Event) -> None:
        domain, _ = self.world.layers_for(event)
        weight = self.world.profile_params.beta[event.type] if self.beta_weighted else 1.0
        self.state.popularity.learn(event.item_id, domain, weight, event.ts)

    def rank(self, user_id: str, k: int, now: float) -> Ranking:
        items, ranks = self.state.popularity.top_ranked(k)
        return items, ranks

    def describe(self) -> dict:
        return {"half_life_s": self.half_life_s, "beta_weighted": self.beta_weighted}


class ALSModel(Recommender):
    """Implicit ALS with the three update regimes of docs/design.md §6.

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


__all__ = [
    "ALSModel", "BatchTrainer", "FixedLayersModel", "LiveState", "PopularityModel",
    "Recommender", "RiverMFModel", "Snapshot", "StrataModel", "World",
]
