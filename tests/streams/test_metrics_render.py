"""The Prometheus text rendering of streams.metrics (the broker-backed values: tests/integration/test_metrics.py)."""
from __future__ import annotations

import bisect

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.metrics import LATENCY_BUCKETS_S, Histogram, Metrics


def test_gauges_render_plain_and_labelled():
    m = Metrics()
    m.gauges["shop_revisit_rate"] = 0.25
    m.gauges["shop_domain_share"] = {'users="1"': 0.2, 'users="16+"': 0.5}
    lines = m.render().splitlines()
    assert "strata_shop_revisit_rate 0.25" in lines
    assert lines.count("# TYPE strata_shop_domain_share gauge") == 1
    at = lines.index("# TYPE strata_shop_domain_share gauge")
    assert lines[at + 1 : at + 3] == ['strata_shop_domain_share{users="1"} 0.2', 'strata_shop_domain_share{users="16+"} 0.5']
    assert any(line.startswith("# HELP strata_shop_domain_share ") for line in lines)


@given(st.lists(st.one_of(st.sampled_from(LATENCY_BUCKETS_S), st.floats(0.0, 20.0)), max_size=60))
def test_observing_many_values_at_once_counts_each_in_its_bucket(values):
    expected = [0] * (len(LATENCY_BUCKETS_S) + 1)
    for v in values:
        expected[bisect.bisect_left(LATENCY_BUCKETS_S, v)] += 1  # the first bound ≥ v (`le` holds its bound)
    histogram = Histogram()
    histogram.observe_many(np.array(values, dtype=np.float64))
    assert histogram.counts == expected
    assert histogram.count == len(values)
    assert histogram.sum == pytest.approx(sum(values))
