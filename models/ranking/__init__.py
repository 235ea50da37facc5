"""The layered scorer of docs/design.md §3, shared by the stream workers and the offline evaluator.

No I/O, deterministic, vectorised over the factor model's items with numpy.  The score is
defined once, in `score` (with the formula); the other modules are what it reads and how it is
searched:

- `params`: every knob (`RankParams`) and its text form;
- `layers`: the dynamic layer weights λ, the revisit propensity ρ_u and the user vector x_u;
- `shop_rates`: ρ0 and μ, learned online from the whole shop's events;
- `request`: a request as data and its answer;
- `ranker`: `Ranker`, which plans a batch, runs its products and finishes it, over
  `items` (the items laid out by category), `pools` (the popular candidates), `plan`, `bound`
  (the top-k search that skips the dense pass) and `explain` (exact contributions, reasons and
  the cold path).

The result carries, per item, each layer's contribution λ_L·s_L(j) (they sum to the score) and,
when asked, short reasons.
"""
from strata.models.profile import LAYERS
from strata.models.ranking.layers import blend_user_vector, layer_weights, repeat_propensity
from strata.models.ranking.params import (
    DEFAULT_ALPHA, DEFAULT_REGULARIZATION, RankParams, fold_param, format_rank_params, parse_rank_params,
)
from strata.models.ranking.ranker import RankBatch, Ranker
from strata.models.ranking.request import RankRequest, Recommendations
from strata.models.ranking.shop_rates import SHARE_BUCKET_NAMES, SHARE_BUCKETS, SHARE_STRENGTH, ShopRates, share_bucket

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_REGULARIZATION",
    "LAYERS",
    "RankBatch",
    "RankParams",
    "RankRequest",
    "Ranker",
    "Recommendations",
    "SHARE_BUCKETS",
    "SHARE_BUCKET_NAMES",
    "SHARE_STRENGTH",
    "ShopRates",
    "blend_user_vector",
    "fold_param",
    "format_rank_params",
    "layer_weights",
    "parse_rank_params",
    "repeat_propensity",
    "share_bucket",
]
