"""The worker's token bucket (streams.agents.TokenBucket): what the learners and the co-visitation
pairing may spend, a rate a second with at most a second's worth at once."""
from __future__ import annotations

import pytest

from strata.streams.agents import Learner, TokenBucket


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_after_an_idle_spell_a_burst_takes_one_seconds_worth_then_the_rate():
    clock = Clock()
    learner = Learner(50.0, "test")
    learner.bucket = TokenBucket(50.0, clock)
    clock.now += 10.0  # idle: the bucket is full, and stays at a second's worth

    def burst() -> int:
        taken = 0
        while learner.due() and taken < 1_000:
            learner.bucket.tokens -= 1.0  # what `_take` spends
            taken += 1
        return taken

    assert burst() == 50
    clock.now += 0.1
    assert burst() == 5  # refilled by the rate, not at once to a full bucket
    clock.now += 0.5
    assert burst() == 25


def test_the_bucket_holds_at_most_a_second_and_earns_by_the_rate():
    clock = Clock()
    bucket = TokenBucket(10.0, clock)
    bucket.tokens = 0.0
    clock.now += 0.2
    assert bucket.refill(10.0) == pytest.approx(2.0)
    clock.now += 0.05
    assert bucket.refill(1_000.0) == pytest.approx(52.0)
    clock.now += 100.0
    assert bucket.refill(10.0) == 10.0
