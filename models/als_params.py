"""The parameters of an ALS training run, in a module without numpy: the CLI reads its
defaults when it builds its parser, for every command."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass


def _is_int(x) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool) and type(x).__name__ != "bool_"


def _is_real(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and type(x).__name__ != "bool_"


@dataclass(frozen=True)
class ALSParams:
    """Everything a training run depends on besides the data.

    The defaults are what `strata evaluate` measured Strata with (docs/RESULTS.md).  Eight
    iterations: implicit's conjugate-gradient ALS is close to its 15-iteration loss by then, and
    the re-fit of docs/design.md §7 must fit in its time budget ("ALS training" in RESULTS.md).
    """

    factors: int = 32
    regularization: float = 0.05
    alpha: float = 10.0
    iterations: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if not _is_int(self.factors) or not 1 <= self.factors <= 4096:
            raise ValueError(f"factors must be an integer in 1..4096, got {self.factors!r}")
        if not _is_real(self.regularization) or not (math.isfinite(self.regularization) and self.regularization > 0):
            raise ValueError(f"regularization must be a finite number > 0, got {self.regularization!r}")
        if not _is_real(self.alpha) or not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha must be a finite number ≥ 0, got {self.alpha!r}")
        if not _is_int(self.iterations) or self.iterations < 1:
            raise ValueError(f"iterations must be an integer ≥ 1, got {self.iterations!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise ValueError(f"seed must be an integer ≥ 0, got {self.seed!r}")
        object.__setattr__(self, "factors", int(self.factors))
        object.__setattr__(self, "regularization", float(self.regularization))
        object.__setattr__(self, "alpha", float(self.alpha))
        object.__setattr__(self, "iterations", int(self.iterations))
        object.__setattr__(self, "seed", int(self.seed))

    def as_dict(self) -> dict:
        return {
            "factors": self.factors,
            "regularization": self.regularization,
            "alpha": self.alpha,
            "iterations": self.iterations,
            "seed": self.seed,
        }
