"""The Prometheus text rendering of streams.metrics (the broker-backed values: tests/integration/test_metrics.py)."""
from __future__ import annotations

from streams.metrics import Metrics


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
