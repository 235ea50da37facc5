"""The layered scorer of docs/design.md §3 (`ranker`), shared by the stream workers and the offline evaluator."""
from strata.models.ranking.ranker import (
    DEFAULT_ALPHA, DEFAULT_REGULARIZATION, LAYERS, SHARE_BUCKET_NAMES, SHARE_BUCKETS, SHARE_STRENGTH, RankBatch,
    RankParams, RankRequest, Ranker, Recommendations, ShopRates, blend_user_vector, fold_param, format_rank_params,
    layer_weights, parse_rank_params, repeat_propensity, share_bucket,
)

__all__ = [
    "DEFAULT_ALPHA", "DEFAULT_REGULARIZATION", "LAYERS", "SHARE_BUCKETS", "SHARE_BUCKET_NAMES", "SHARE_STRENGTH",
    "RankBatch", "RankParams", "RankRequest", "Ranker", "Recommendations", "ShopRates", "blend_user_vector",
    "fold_param", "format_rank_params", "layer_weights", "parse_rank_params", "repeat_propensity", "share_bucket",
]
