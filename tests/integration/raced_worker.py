"""`strata worker` with the fetch race of streams/batching.py forced at chosen fetches.

The race itself (a seek on the event loop drops a partition's buffer while aiokafka drains the
buffers in Faust's consumer thread) is rare: it showed up in soak runs of test_rebalance.py.  Its
effect is what this reproduces, deterministically: the fetch drains the records — every drained partition's
position moves past them — and then raises KeyError, so the records are lost to the worker.

    python -m tests.integration.raced_worker 3,7,15

runs the worker and makes the 3rd, 7th and 15th fetch that returned records of the events topic
end that way.  Each forced race prints a line starting with `forced fetch race` on stderr.
"""
from __future__ import annotations

import sys

from faust.types import TP

from strata.streams import batching
from strata.streams.cli import main


def force_races(at: set[int]) -> None:
    next_records = batching.BatchingConsumer.next_records
    fetched = 0

    async def raced(self, timeout):
        nonlocal fetched
        records, active = await next_records(self, timeout)
        ours = [tp for tp, recs in records.items() if tp.topic == self.route.topic and recs]
        if ours:
            fetched += 1
            if fetched in at:
                lost = sum(len(records[tp]) for tp in ours)
                print(f"forced fetch race at fetch {fetched}: {lost} records lost", file=sys.stderr, flush=True)
                raise KeyError(TP(ours[0].topic, ours[0].partition))
        return records, active

    batching.BatchingConsumer.next_records = raced


if __name__ == "__main__":
    force_races({int(n) for n in sys.argv[1].split(",")})
    sys.exit(main(["worker"]))
