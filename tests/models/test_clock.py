"""The shop's clock: the depth-th latest event time, which one bad timestamp cannot move."""
from __future__ import annotations

import pytest

from strata.models.clock import ShopClock


def test_one_far_ahead_event_does_not_move_the_clock_but_depth_of_them_do():
    clock = ShopClock(depth=4)
    for ts in range(1000, 1010):
        clock.observe(float(ts))
    assert clock.now == 1006.0
    clock.observe(1e12)
    assert clock.now == 1007.0  # it moved one event's worth, not to 1e12
    for _ in range(3):
        clock.observe(1e12)
    assert clock.now == 1e12


def test_late_and_out_of_order_times_keep_the_latest():
    clock = ShopClock(depth=2)
    assert clock.now is None
    for ts in (5.0, 1.0, 9.0, 3.0, 7.0):
        clock.observe(ts)
    assert clock.now == 7.0


def test_depth_must_be_positive():
    with pytest.raises(ValueError):
        ShopClock(depth=0)
