"""The contract every evaluated model keeps (one shared mixin, one subclass per model)."""
from __future__ import annotations

import random

import pytest

from strata.models.als import ALSParams
from strata.models.catalog import Catalog
from strata.models.events import Event
from strata.models.popularity import DAY
from strata.models.evaluation.recommenders import BatchTrainer, Recommender, World
from strata.models.evaluation.registry import MODEL_NAMES, build_models

T0 = 1_600_000_000.0
CATS = {f"c{n}": ("r0" if n < 3 else "r1") for n in range(6)}
ITEMS = {f"i{n}": f"c{n % 6}" for n in range(40)}
CATALOG = Catalog(dict(ITEMS), {"r0": None, "r1": None, **CATS})
ALS = ALSParams(factors=4, iterations=3, seed=0)


def small_log(n_events: int = 400, users: int = 15, seed: int = 0) -> list[Event]:
    """Users who mostly stay in two categories and come back to items they saw."""
    rng = random.Random(seed)
    home = {f"u{u}": rng.sample(sorted(CATS), 2) for u in range(users)}
    types = ["view"] * 6 + ["cart", "purchase", "fav"]
    events, seen = [], {u: [] for u in home}
    for n in range(n_events):
        u = f"u{rng.randrange(users)}"
        if seen[u] and rng.random() < 0.4:
            item = rng.choice(seen[u])
        else:
            c = rng.choice(home[u])
            item = rng.choice([i for i, ic in ITEMS.items() if ic == c])
        seen[u].append(item)
        events.append(Event(f"e{n}", u, item, rng.choice(types), T0 + n * 600.0, ITEMS[item]))
    return events


def build(name: str, seed: int = 0) -> tuple[Recommender, BatchTrainer]:
    world = World(CATALOG)
    trainer = BatchTrainer(world, ALS)
    return build_models([name], world, trainer, seed=seed)[name], trainer


def replay(model: Recommender, trainer: BatchTrainer, events: list[Event], refit_every: int = 150) -> None:
    for n, e in enumerate(events):
        if n and n % refit_every == 0:
            model.refit(e.ts)
        model.learn_one(e)
        trainer.observe(e)


class RecommenderContract:
    """Every model: ≤ k distinct ids, sorted scores, an answer for anyone, deterministic per seed."""

    name: str

    def trained(self, seed: int = 0) -> Recommender:
        model, trainer = build(self.name, seed)
        replay(model, trainer, small_log())
        return model

    def test_returns_at_most_k_distinct_ids_best_first(self):
        model = self.trained()
        now = T0 + 400 * 600.0
        for user in ("u0", "u3", "u7"):
            for k in (1, 5, 10):
                ids, scores = model.rank(user, k, now)
                assert len(ids) == len(scores) <= k
                assert len(set(ids)) == len(ids)
                assert all(isinstance(j, str) for j in ids)
                assert all(a >= b for a, b in zip(scores, scores[1:])), scores
        ids, _ = model.rank("u0", 10, now)
        assert len(ids) == 10  # 40 items were seen: the list is always full

    def test_answers_an_unknown_user_and_an_empty_model(self):
        model = self.trained()
        ids, scores = model.rank("nobody", 5, T0 + 400 * 600.0)
        assert len(ids) <= 5 and len(ids) == len(scores)
        fresh, _ = build(self.name)
        assert list(map(list, fresh.rank("nobody", 5, T0))) == [[], []]

    def test_only_recommends_items_it_has_seen(self):
        events = small_log()
        model, trainer = build(self.name)
        replay(model, trainer, events[:100])
        known = {e.item_id for e in events[:100]}
        for user in ("u0", "u1", "u2"):
            assert set(model.rank(user, 10, events[100].ts)[0]) <= known

    def test_deterministic_with_a_seed(self):
        now = T0 + 400 * 600.0
        a, b = self.trained(seed=3), self.trained(seed=3)
        for user in ("u0", "u5", "u9"):
            assert a.rank(user, 10, now) == b.rank(user, 10, now)

    def test_asking_does_not_change_the_model(self):
        model = self.trained()
        now = T0 + 400 * 600.0
        first = model.rank("u4", 10, now)
        model.rank("u5", 10, now)
        model.rank("nobody", 3, now)
        assert model.rank("u4", 10, now) == first


# one subclass per model: the contract runs for every name in the registry
for _name in MODEL_NAMES:
    _cls_name = "Test_" + _name.replace("-", "_")
    globals()[_cls_name] = type(_cls_name, (RecommenderContract,), {"name": _name})


def test_every_model_is_covered():
    assert {cls.name for cls in RecommenderContract.__subclasses__()} == set(MODEL_NAMES)


def test_unknown_model_is_refused():
    world = World(CATALOG)
    with pytest.raises(ValueError, match="unknown model 'svd'"):
        build_models(["svd"], world, BatchTrainer(world, ALS))


def test_repeat_ranks_the_users_own_items_by_decayed_weight():
    model, trainer = build("repeat")
    events = [
        Event("1", "u", "i1", "view", T0, "c1"),
        Event("2", "u", "i2", "purchase", T0 + 10, "c2"),
        Event("3", "v", "i3", "view", T0 + 20, "c3"),
        Event("4", "v", "i3", "view", T0 + 30, "c3"),
    ]
    replay(model, trainer, events)
    ids, _ = model.rank("u", 3, T0 + DAY)
    assert ids == ["i2", "i1", "i3"]  # purchase (β 6) > view (β 1), then the popular fill


def test_cooc_follows_the_users_latest_item():
    model, trainer = build("cooc")
    events = []
    n = 0
    for u in range(5):  # everyone who saw i1 went on to i2
        for item in ("i1", "i2"):
            events.append(Event(str(n), f"u{u}", item, "view", T0 + n, ITEMS[item]))
            n += 1
    events += [Event("x", "w", "i1", "view", T0 + 100, "c1"), Event("y", "z", "i9", "view", T0 + 101, "c3")]
    replay(model, trainer, events)
    assert model.rank("w", 1, T0 + 200)[0] == ["i2"]
