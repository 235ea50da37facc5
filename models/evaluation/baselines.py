"""The textbook baselines of docs/design.md §6, each in its strongest textbook form.

Every model here learns one event at a time (`learn_one`, O(window) at most)
and ranks with `rank(user, k, now) -> (ids, scores)`, best first, at most k
distinct ids.  Each one pads a short list with popular items (`LiveState.popular`
via `_fill`), so it answers k items whenever the catalogue seen so far holds k;
the fill is recent popularity with every event weight 1 and a one-day
half-life (see `_PopularFill`).  None of them
filters anything: the item in view is left out by the evaluator, the same for
every model, and `Unseen` gives any of them the form that leaves out every
item the user touched.

- `recent`   — `RecentModel`: the user's distinct items, most recently touched first.
- `repeat`   — `DecayedRepeatModel(beta_weighted=False)`: the user's items by
  decayed count, every event type weight 1;
  `repeat-β` — the same with the behaviour weights β of docs/design.md §3.
- `cooc`     — `CovisitModel`: item-to-item co-visitation within each user's
  last 20 distinct items, cosine-normalised by the items' event counts, summed
  over the user's last 20 distinct items.
- `sknn`     — `SKNNModel`: session-based k-nearest neighbours (Ludewig &
  Jannach 2018), a user's "session" being their last 20 distinct items.
- `X-unseen` — `Unseen(X)`: X without any item the user touched.

`BASELINE_MAKERS` maps the five names to constructors (`EXTRA_MAKERS` adds
`cooc-pairs`, cooc normalised by pairings); `unseen_name` and `with_unseen`
give the unseen forms.
"""
from __future__ import annotations

import heapq
import math
from itertools import islice
from typing import Callable, Mapping

import numpy as np

from strata.models.events import Event
from strata.models.popularity import DAY
from strata.models.evaluation.recommenders import BatchTrainer, LiveState, Ranking, Recommender, World, _fill, _top_k

UNSEEN_SUFFIX = "-unseen"


class _PopularFill:
    """The popular-items fill every baseline shares: recent popularity, nothing else.

    A `LiveState` whose popularity counts every event with weight 1, decayed with a
    one-day half-life: pop(j, T) = Σ_{events on j} 2^(−(T − ts)/1 day).  That is the
    textbook recent popularity of docs/design.md §6's reference figures (it reproduces their `pop`
    column on the Taobao and REES46 heads; β-weighting the counts is weaker on both).
    Its per-user profiles are never used here, so they are not kept.
    """

    def __init__(self, world: World, half_life_s: float = DAY, beta_weighted: bool = False) -> None:
        self.world = world
        self.state = LiveState(world, half_life_s)
        self.beta_weighted = beta_weighted

    def learn(self, event: Event) -> None:
        domain, _ = self.world.layers_for(event)
        b = self.world.profile_params.beta[event.type] if self.beta_weighted else 1.0
        self.state.popularity.learn(event.item_id, domain, b, event.ts)


# -- recent ----------------------------------------------------------------------------
class RecentModel(Recommender):
    """`recent`: the user's own distinct items, most recently touched first, then popular items.

    No model at all (docs/design.md §6): score(j) = the time of the user's latest event on j;
    items the user touched at the same second keep their arrival order (the later
    first).  This is the "recently viewed items" list of every shop; recency of
    last consumption is the strongest single signal of re-consumption in Anderson,
    Kumar, Tomkins & Vassilvitskii, "The dynamics of repeat consumption", WWW 2014.
    """

    def __init__(self, world: World, popularity_half_life_s: float = DAY) -> None:
        super().__init__(world)
        self.fill = _PopularFill(world, popularity_half_life_s)
        self.state = self.fill.state
        # user → item → latest ts, in order of that ts (oldest first; ties in arrival order)
        self._last: dict[str, dict[str, float]] = {}

    def learn_one(self, event: Event) -> None:
        self.fill.learn(event)
        d = self._last.get(event.user_id)
        if d is None:
            d = self._last[event.user_id] = {}
        item, ts = event.item_id, event.ts
        old = d.get(item)
        if old is not None:
            if ts < old:
                return  # an older event on an item touched since: its recency is unchanged
            del d[item]
        if not d or ts >= d[next(reversed(d))]:
            d[item] = ts  # the common case: events arrive in time order
        else:  # a late event: put it where its time says (stable, so ties keep arrival order)
            d[item] = ts
            self._last[event.user_id] = dict(sorted(d.items(), key=lambda kv: kv[1]))

    def rank(self, user_id: str, k: int, now: float) -> Ranking:
        d = self._last.get(user_id)
        ids: list[str] = []
        scores: list[float] = []
        if d:
            for item, ts in islice(reversed(d.items()), k):
                ids.append(item)
                scores.append(ts)
        return _fill(ids, scores, k, self.state)

    def describe(self) -> dict:
        return {"order": "latest touch first"}


# -- repeat / repeat-β -----------------------------------------------------------------
class DecayedRepeatModel(Recommender):
    """`repeat` / `repeat-β`: the user's own items by decayed count, then popular items.

    score(j, now) = Σ_{events e of the user on j} b(type_e) · 2^(−(now − ts_e) / H)

    with H = `world.profile_params.half_life_s["item"]` (3 days by default) and
    b ≡ 1 (`repeat`, beta_weighted=False) or b = `world.profile_params.beta`
    (`repeat-β`, docs/design.md §3).  The sum is kept exactly per (user, item) as a pair
    (w, t): an event at t′ ≥ t sets w ← w·2^(−(t′−t)/H) + b, t ← t′; an older one
    adds b·2^(−(t−t′)/H).  No cap, no de-duplication.  Items are ordered by the
    clock-free key log2(w) + (t − now)/H (the log of the score, so nothing
    underflows); equal scores go to the item touched last.  This is docs/design.md §6's
    `repeat` (and the profile's item layer of docs/design.md §3 without its cap): an
    exponentially time-decayed item frequency, which mixes the frequency and the
    recency signals of repeat consumption (Anderson et al., WWW 2014).
    """

    def __init__(self, world: World, beta_weighted: bool, popularity_half_life_s: float = DAY) -> None:
        super().__init__(world)
        self.beta_weighted = bool(beta_weighted)
        pp = world.profile_params
        self.half_life_s = float(pp.half_life_s["item"])
        self._beta = dict(pp.beta) if self.beta_weighted else {t: 1.0 for t in pp.beta}
        self.fill = _PopularFill(world, popularity_half_life_s)
        self.state = self.fill.state
        # user → item → (w, t, arrival number of the latest event): tuples of numbers, which the
        # garbage collector stops tracking
        self._w: dict[str, dict[str, tuple[float, float, int]]] = {}
        self._seq = 0

    def learn_one(self, event: Event) -> None:
        self.fill.learn(event)
        b = self._beta[event.type]
        d = self._w.get(event.user_id)
        if d is None:
            d = self._w[event.user_id] = {}
        self._seq += 1
        old = d.get(event.item_id)
        ts = event.ts
        if old is None:
            d[event.item_id] = (b, ts, self._seq)
        else:
            w, t, seq = old
            if ts >= t:
                d[event.item_id] = (w * 2.0 ** (-(ts - t) / self.half_life_s) + b, ts, self._seq)
            else:
                d[event.item_id] = (w + b * 2.0 ** (-(t - ts) / self.half_life_s), t, seq)

    def rank(self, user_id: str, k: int, now: float) -> Ranking:
        d = self._w.get(user_id)
        if not d or k <= 0:
            return _fill([], [], k, self.state)
        n = len(d)
        ids = list(d)
        a = np.fromiter((x for v in d.values() for x in v), np.float64, 3 * n).reshape(n, 3)
        with np.errstate(divide="ignore"):  # a type weighted 0 gives w = 0: log2 → −inf, last
            key = np.log2(a[:, 0]) + (a[:, 1] - now) / self.half_life_s
        order = np.lexsort((-a[:, 2], -a[:, 1], -key))[:k]
        return _fill([ids[i] for i in order.tolist()], np.exp2(key[order]).tolist(), k, self.state)

    def describe(self) -> dict:
        return {"half_life_s": self.half_life_s, "beta": dict(self._beta)}


# -- cooc --------------------------------------------------------------------------------
class CovisitModel(Recommender):
    """`cooc`: item-to-item co-visitation with cosine normalisation.

    Every event of user u on item j pairs j with each *other* item i of u's last
    `window` distinct items (revisits included: an event on an item already in
    the window pairs it with the rest of the window again), then moves j to the
    front of the window (dropping the oldest beyond `window`):

        C(i, j) = C(j, i) = number of such pairings,
        n_i     = Σ_j C(i, j), the number of pairings item i took part in
                  (`n_count="pairings"`, the default), or the number of events on
                  item i (`n_count="events"`),
        sim(i, j) = C(i, j) / √(n_i · n_j),
        score(j | u) = Σ_{i ∈ u's last `window` distinct items} sim(i, j).

    Co-visitation relatedness as in Davidson et al., "The YouTube video
    recommendation system", RecSys 2010 (c_ij / f(c_i, c_j), here the cosine
    choice f = √(c_i c_j)), scored over the user's recent items as its seed set
    as in item-to-item CF (Linden, Smith & York, IEEE Internet Computing 2003).
    With n_i = Σ_j C(i, j) (the degree of i in the co-visitation graph) sim is
    the symmetrically normalised co-occurrence matrix D^(−½) C D^(−½); with
    n_i = i's event count it is YouTube's c_i, the cosine of the items'
    occurrence vectors up to the window — the literal cosine, and docs/design.md §6's
    reference `cooc` (it reproduces that column), so it is the default.
    "pairings" is much the stronger on the shipped logs with revisits (Taobao,
    REES46: an item viewed many times by one shopper alone is not marked down for
    events that paired with nothing) and a little weaker on MovieLens; it is
    registered as `cooc-pairs` (`EXTRA_MAKERS`).
    Every seed item counts the same: the textbook seed set carries no position
    weight, and docs/design.md §6's reference is "cooc over the user's last 20 distinct
    items with cosine normalisation".  The user's own items are scored like any
    other (the plain form; `Unseen(CovisitModel)` is the other one).  Equal
    scores go to the more popular item (the fill's recent popularity), then to
    the item seen first.
    """

    N_COUNTS = ("pairings", "events")

    def __init__(self, world: World, window: int = 20, n_count: str = "events",
                 popularity_half_life_s: float = DAY) -> None:
        super().__init__(world)
        if int(window) < 1:
            raise ValueError(f"window must be ≥ 1, got {window!r}")
        if n_count not in self.N_COUNTS:
            raise ValueError(f"n_count must be one of {self.N_COUNTS}, got {n_count!r}")
        self.window = int(window)
        self.n_count = n_count
        self._count_events = n_count == "events"
        self.fill = _PopularFill(world, popularity_half_life_s)
        self.state = self.fill.state
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        self._n = np.zeros(1024, np.float64)
        self._C: list[dict[int, int]] = []
        self._recent: dict[str, dict[int, None]] = {}  # user → last `window` distinct items, oldest first

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
        self.fill.learn(event)
        j = self._id(event.item_id)
        recent = self._recent.get(event.user_id)
        if recent is None:
            recent = self._recent[event.user_id] = {}
        C, n = self._C, self._n
        row_j = C[j]
        pairs = 0
        for i in recent:
            if i != j:
                row_i = C[i]
                row_i[j] = row_i.get(j, 0) + 1
                row_j[i] = row_j.get(i, 0) + 1
                pairs += 1
                if not self._count_events:
                    n[i] += 1.0
        n[j] += 1.0 if self._count_events else pairs
        if j in recent:
            del recent[j]
        recent[j] = None
        if len(recent) > self.window:
            del recent[next(iter(recent))]

    def scores(self, user_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(item indices, scores) of every item with a score > 0 for the user."""
        recent = self._recent.get(user_id)
        if not recent:
            return np.zeros(0, np.int64), np.zeros(0)
        C, n = self._C, self._n
        acc = np.zeros(len(self._ids))
        for i in recent:
            row = C[i]
            if row:  # C(i, ·) / √n_i, one row at a time (no duplicates within a row)
                cols = np.fromiter(row.keys(), np.int64, len(row))
                acc[cols] += np.fromiter(row.values(), np.float64, len(row)) * (1.0 / math.sqrt(n[i]))
        nz = np.flatnonzero(acc)
        return nz, acc[nz] / np.sqrt(n[nz])  # … / √n_j

    def rank(self, user_id: str, k: int, now: float) -> Ranking:
        nz, s = self.scores(user_id)
        if nz.size == 0 or k <= 0:
            return _fill([], [], k, self.state)
        ids = self._ids
        if nz.size > k:  # every item scoring at least the k-th score (ties at the cut included)
            keep = np.flatnonzero(s >= s[_top_k(s, k)[-1]])
            nz, s = nz[keep], s[keep]
        cand = [ids[t] for t in nz.tolist()]
        pop = np.asarray(self.state.popularity.ranks(cand))
        order = np.lexsort((nz, -pop, -s))[:k]  # score, then popularity, then first seen
        return _fill([cand[t] for t in order.tolist()], s[order].tolist(), k, self.state)

    def describe(self) -> dict:
        return {"window": self.window, "n_i": self.n_count, "normalisation": "cosine", "seed_weight": "uniform",
                "ties": "more popular first"}


# -- sknn --------------------------------------------------------------------------------
class SKNNModel(Recommender):
    """`sknn`: session-based k-nearest neighbours (SKNN of Ludewig & Jannach, "Evaluation of
    session-based recommendation algorithms", User Modeling and User-Adapted Interaction 2018;
    Jannach & Ludewig, RecSys 2017), streaming.

    A user's session s is the binary set of their last `window` distinct items (as they are
    now, for the user and for every neighbour alike).  For user u:

    1. candidates: the other users whose session shares at least one item with s_u, the
       `sample_size` most recently active of them (the "recent" sampling of SKNN);
    2. sim(u, n) = |s_u ∩ s_n| / √(|s_u| · |s_n|)  (cosine between binary vectors);
    3. N = the `k_neighbours` candidates of highest sim (ties: the more recently active);
    4. score(j) = Σ_{n ∈ N} sim(u, n) · 1[j ∈ s_n].

    Candidates come from an inverted index item → users whose current session holds the
    item, ordered by the users' latest activity and bounded to the `sample_size` + 1 most
    recent per item (a user's latest event refreshes them in every posting of their
    session, so the index costs O(window) per event).  The most recent `sample_size`
    other users of a union are always among the most recent `sample_size` + 1 of each
    list they are in, so the bound changes nothing unless recent holders of an item since dropped
    it.  Ties between items: the order of first accumulation (the best neighbour's most
    recent items first).
    """

    def __init__(self, world: World, window: int = 20, sample_size: int = 500, k_neighbours: int = 100,
                 popularity_half_life_s: float = DAY) -> None:
        super().__init__(world)
        if int(window) < 1 or int(sample_size) < 1 or int(k_neighbours) < 1:
            raise ValueError("window, sample_size and k_neighbours must be ≥ 1")
        self.window = int(window)
        self.sample_size = int(sample_size)
        self.k_neighbours = int(k_neighbours)
        self.fill = _PopularFill(world, popularity_half_life_s)
        self.state = self.fill.state
        self._session: dict[str, dict[str, None]] = {}  # user → last `window` distinct items, oldest first
        self._holders: dict[str, dict[str, None]] = {}  # item → users holding it, least recently active first
        self._active: dict[str, int] = {}  # user → arrival number of their latest event
        self._seq = 0

    def learn_one(self, event: Event) -> None:
        self.fill.learn(event)
        u, j = event.user_id, event.item_id
        self._seq += 1
        self._active[u] = self._seq
        s = self._session.get(u)
        if s is None:
            s = self._session[u] = {}
        if j in s:
            del s[j]
        s[j] = None
        if len(s) > self.window:
            gone = next(iter(s))
            del s[gone]
            h = self._holders.get(gone)
            if h is not None:
                h.pop(u, None)
                if not h:
                    del self._holders[gone]
        cap = self.sample_size + 1  # the asking user may hold a place in a list
        holders = self._holders
        for item in s:  # u is now the most recently active holder of each of its items
            h = holders.get(item)
            if h is None:
                h = holders[item] = {}
            elif u in h:
                del h[u]
            h[u] = None
            if len(h) > cap:
                del h[next(iter(h))]

    def neighbours(self, user_id: str) -> list[tuple[str, float]]:
        """The k_neighbours nearest users and their similarities, best first."""
        s = self._session.get(user_id)
        if not s:
            return []
        overlap: dict[str, int] = {}
        get = overlap.get
        holders = self._holders
        for item in s:
            for v in holders.get(item, ()):
                overlap[v] = get(v, 0) + 1
        overlap.pop(user_id, None)
        if not overlap:
            return []
        active = self._active
        cands = list(overlap)
        if len(cands) > self.sample_size:
            cands = heapq.nlargest(self.sample_size, cands, key=active.__getitem__)
        sessions = self._session
        ls = len(s)
        sims = [(overlap[v] / math.sqrt(ls * len(sessions[v])), active[v], v) for v in cands]
        best = heapq.nlargest(self.k_neighbours, sims)
        return [(v, sim) for sim, _, v in best]

    def rank(self, user_id: str, k: int, now: float) -> Ranking:
        scores: dict[str, float] = {}
        get = scores.get
        sessions = self._session
        for v, sim in self.neighbours(user_id):
            for item in reversed(sessions[v]):
                scores[item] = get(item, 0.0) + sim
        if not scores:
            return _fill([], [], k, self.state)
        top = heapq.nlargest(k, scores.items(), key=lambda kv: kv[1])  # stable: ties keep first accumulation
        return _fill([j for j, _ in top], [float(x) for _, x in top], k, self.state)

    def describe(self) -> dict:
        return {"window": self.window, "sample_size": self.sample_size, "k_neighbours": self.k_neighbours,
                "similarity": "cosine", "sampling": "recent"}


# -- the unseen form ---------------------------------------------------------------------
class Unseen(Recommender):
    """The "unseen" form of any model (docs/design.md §6): its ranking without any item the user touched.

    It asks `inner` for k + |touched(u)| items, keeps those u never touched (in inner's
    order and with inner's scores), and fills a short list with the most popular items u
    never touched.  `learn_one` records the touched item and forwards the event; `refit`,
    `uses_batch_fit` and `describe` are inner's.
    """

    def __init__(self, inner: Recommender, popularity_half_life_s: float = DAY) -> None:
        super().__init__(inner.world)
        self.inner = inner
        state = getattr(inner, "state", None)
        # inner's own popularity when it keeps one (all baselines here do); else a private one
        self._own_fill = None if isinstance(state, LiveState) else _PopularFill(inner.world, popularity_half_life_s)
        self.state: LiveState = state if self._own_fill is None else self._own_fill.state
        self._seen: dict[str, set[str]] = {}

    @property
    def uses_batch_fit(self) -> bool:  # type: ignore[override]
        return self.inner.uses_batch_fit

    def learn_one(self, event: Event) -> None:
        self.inner.learn_one(event)
        if self._own_fill is not None:
            self._own_fill.learn(event)
        seen = self._seen.get(event.user_id)
        if seen is None:
            seen = self._seen[event.user_id] = set()
        seen.add(event.item_id)

    def refit(self, now: float) -> None:
        self.inner.refit(now)

    def rank(self, user_id: str, k: int, now: float) -> Ranking:
        seen = self._seen.get(user_id, set())
        ids, scores = self.inner.rank(user_id, k + len(seen), now)
        keep = [n for n, j in enumerate(ids) if j not in seen][:k]
        ids = [ids[n] for n in keep]
        scores = [scores[n] for n in keep]
        if len(ids) < k:
            floor = min(scores, default=0.0)
            extra = self.state.popular(k - len(ids), seen.union(ids))
            ids = ids + extra
            scores = scores + [floor - 1.0 - n for n in range(len(extra))]
        return ids, scores

    def describe(self) -> dict:
        return {**self.inner.describe(), "unseen": True}


# -- the registry --------------------------------------------------------------------------
BASELINE_MAKERS: dict[str, Callable[[World, BatchTrainer], Recommender]] = {
    "recent": lambda world, trainer: RecentModel(world),
    "repeat": lambda world, trainer: DecayedRepeatModel(world, beta_weighted=False),
    "repeat-β": lambda world, trainer: DecayedRepeatModel(world, beta_weighted=True),
    "cooc": lambda world, trainer: CovisitModel(world),
    "sknn": lambda world, trainer: SKNNModel(world),
}

#: the other textbook normalisation of `cooc` (n_i = pairings), the stronger one on logs with revisits
EXTRA_MAKERS: dict[str, Callable[[World, BatchTrainer], Recommender]] = {
    "cooc-pairs": lambda world, trainer: CovisitModel(world, n_count="pairings"),
}


def unseen_name(name: str) -> str:
    return f"{name}{UNSEEN_SUFFIX}"


def with_unseen(
    makers: Mapping[str, Callable[[World, BatchTrainer], Recommender]] = BASELINE_MAKERS,
) -> dict[str, Callable[[World, BatchTrainer], Recommender]]:
    """The makers and, for each, its unseen form under `unseen_name(name)`."""
    out = dict(makers)
    for name, make in makers.items():
        out[unseen_name(name)] = (lambda world, trainer, make=make: Unseen(make(world, trainer)))
    return out


__all__ = [
    "BASELINE_MAKERS", "EXTRA_MAKERS", "CovisitModel", "DecayedRepeatModel", "RecentModel", "SKNNModel", "UNSEEN_SUFFIX",
    "Unseen", "unseen_name", "with_unseen",
]
