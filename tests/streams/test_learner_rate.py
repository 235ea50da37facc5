"""The worker's token bucket (streams.agents.TokenBucket): what the learners and the co-visitation
pairing may spend, a rate a second with at most a second's worth at once."""
from __future__ import annotations

import time

from streams.agents import Learner, TokenBucket


def test_a_drained_bucket_refills_at_its_rate_not_at_once():
    learner = Learner(50.0, "test")
    time.sleep(1.1)  # an idle spell longer than a second before the burst (the bucket is full)
    taken = 0
    started = time.monotonic()
    while learner.due() and taken < 1000:
        learner.bucket.tokens -= 1.0  # what `_take` spends
        taken += 1
    elapsed = time.monotonic() - started
    assert taken <= 50 + 50 * elapsed + 1, taken  # one second's worth, and what the burst itself earned


def test_the_bucket_holds_at_most_a_second_and_earns_by_the_rate():
    bucket = TokenBucket(10.0)
    bucket.tokens = 0.0
    time.sleep(0.2)
    assert 1.5 <= bucket.refill(10.0) <= 3.0
    time.sleep(0.05)
    assert bucket.refill(1_000.0) <= 1_000.0
    bucket._at -= 100.0
    assert bucket.refill(10.0) == 10.0
