"""Every model of `strata evaluate` by name: Strata's forms and every baseline in every form.

The "unseen" form of a baseline (`X-unseen`, `models.evaluation.baselines.Unseen`) leaves out every
item the user touched; docs/design.md §6 counts the best of all forms.  `recent` and `repeat` have
none: without the user's own items both are the popular fill, which `pop-unseen` is.
"""
from __future__ import annotations

from typing import Callable, Iterable

from strata.models.evaluation.baselines import BASELINE_MAKERS, EXTRA_MAKERS, Unseen, unseen_name
from strata.models.ranking import RankParams
from strata.models.evaluation.recommenders import (
    ALSModel, BatchTrainer, FixedLayersModel, PopularityModel, Recommender, RiverMFModel, StrataModel, World,
)

STRATA_LAYERS = {"strata-item": ("item",), "strata-domain": ("domain",), "strata-overall": ("overall",)}
STRATA_NAMES: tuple[str, ...] = ("strata", *STRATA_LAYERS, "strata-prior", "strata-fixed")
#: baselines that have an unseen form
WITH_UNSEEN: tuple[str, ...] = ("pop", "cooc", "cooc-pairs", "sknn", "als-once", "als-periodic", "als-foldin", "river-mf")
BASELINE_NAMES: tuple[str, ...] = (
    "pop", "pop-β", "recent", "repeat", "repeat-β", "cooc", "cooc-pairs", "sknn", "als-once", "als-periodic", "als-foldin", "river-mf",
)
MODEL_NAMES: tuple[str, ...] = (*STRATA_NAMES, *BASELINE_NAMES, *(unseen_name(n) for n in WITH_UNSEEN))


def _makers(world: World, trainer: BatchTrainer, rp: RankParams, seed: int) -> dict[str, Callable[[], Recommender]]:
    makers: dict[str, Callable[[], Recommender]] = {
        "strata": lambda: StrataModel(world, trainer, rp),
        "strata-prior": lambda: StrataModel(world, trainer, rp, learning=False),
        "strata-fixed": lambda: FixedLayersModel(world, trainer, rp),
        "pop": lambda: PopularityModel(world, rp.popularity_half_life_s),
        "pop-β": lambda: PopularityModel(world, rp.popularity_half_life_s, beta_weighted=True),
        "als-once": lambda: ALSModel(world, trainer, "once"),
        "als-periodic": lambda: ALSModel(world, trainer, "periodic"),
        "als-foldin": lambda: ALSModel(world, trainer, "foldin"),
        "river-mf": lambda: RiverMFModel(world, seed=seed),
    }
    for name, layers in STRATA_LAYERS.items():
        makers[name] = lambda layers=layers: StrataModel(world, trainer, rp, layers=layers)
    for name, make in {**BASELINE_MAKERS, **EXTRA_MAKERS}.items():
        makers[name] = lambda make=make: make(world, trainer)
    for name in WITH_UNSEEN:
        makers[unseen_name(name)] = lambda inner=makers[name]: Unseen(inner())
    return makers


def build_models(
    names: Iterable[str],
    world: World,
    trainer: BatchTrainer,
    rank_params: RankParams | None = None,
    seed: int = 0,
) -> dict[str, Recommender]:
    """The named models, in order; `rank_params` configures Strata's forms."""
    makers = _makers(world, trainer, rank_params or RankParams(), seed)
    out: dict[str, Recommender] = {}
    for name in names:
        if name not in makers:
            raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}")
        out[name] = makers[name]()
    return out


__all__ = ["BASELINE_NAMES", "MODEL_NAMES", "STRATA_LAYERS", "STRATA_NAMES", "WITH_UNSEEN", "build_models"]
