"""The Prometheus text rendering of streams.metrics (the broker-backed values: tests/integration/test_metrics.py)."""
from __future__ import annotations

import bisect

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from strata.streams.metrics import LATENCY_BUCKETS_S, LOOP_LAG_BUCKETS_S, Histogram, Metrics


def _samples(text: str) -> dict[tuple, float]:
    """(sample name, sorted labels) → value, as Prometheus' own parser reads the text."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_gauges_render_plain_and_labelled():
    m = Metrics()
    m.gauges["ranker_steps"] = 25
    m.gauges["ranker_weight"] = ("term", {"own": 0.2, "pop": -0.5})
    text = m.render()
    samples = _samples(text)
    assert samples[("strata_ranker_steps", ())] == 25
    assert samples[("strata_ranker_weight", (("term", "own"),))] == 0.2
    assert samples[("strata_ranker_weight", (("term", "pop"),))] == -0.5
    lines = text.splitlines()
    assert lines.count("# TYPE strata_ranker_weight gauge") == 1
    assert any(line.startswith("# HELP strata_ranker_weight ") for line in lines)


def test_label_values_are_escaped_and_counters_keep_their_names():
    m = Metrics()
    m.rejected[("item-factors", 'bad "quote"\nnewline')] += 2
    m.events["view"] += 3
    samples = _samples(m.render())
    assert samples[("strata_records_deadlettered_total", (("reason", 'bad "quote"\nnewline'), ("topic", "item-factors")))] == 2
    assert samples[("strata_events_processed_total", (("type", "view"),))] == 3


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


@given(st.lists(st.one_of(st.sampled_from(LOOP_LAG_BUCKETS_S), st.floats(0.0, 5.0)), max_size=60))
def test_observing_one_value_at_a_time_counts_as_observing_them_together(values):
    one, many = Histogram(LOOP_LAG_BUCKETS_S), Histogram(LOOP_LAG_BUCKETS_S)
    for v in values:
        one.observe(v)
    many.observe_many(np.array(values, dtype=np.float64))
    assert one.counts == many.counts and one.count == many.count
    assert one.sum == pytest.approx(many.sum)


def test_the_event_loop_lag_renders_as_a_cumulative_histogram():
    m = Metrics()
    for lag in (0.001, 0.03, 0.03, 3.0):
        m.loop_lag.observe(lag)
    text = m.render()
    assert "# TYPE strata_event_loop_lag_seconds histogram" in text.splitlines()
    samples = _samples(text)
    bucket = lambda le: samples[("strata_event_loop_lag_seconds_bucket", (("le", le),))]  # noqa: E731
    assert bucket("0.005") == 1 and bucket("0.05") == 3
    assert bucket("2.5") == 3  # 3 s is beyond the last bound
    assert bucket("+Inf") == 4
    assert samples[("strata_event_loop_lag_seconds_count", ())] == 4
