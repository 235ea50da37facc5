"""`strata worker`: run the Faust worker with its agents and views."""
from __future__ import annotations

import asyncio
import gc
import time


def tune_garbage_collector() -> None:
    """Keep full collections rare and small; they were the stream's latency tail.

    A full collection visits every tracked object, and at the default thresholds each
    micro-batch's short-lived objects (records, events, decoded JSON) are promoted into the old
    generation often enough to trigger one every few seconds, each a pause of the stream.  So the
    objects of startup (Faust, aiokafka, numpy: tens of thousands) are frozen out of every
    collection, and the young generation is large enough that a batch's objects die before a
    collection sees them (`strata_gc_full_collection_seconds` in /metrics shows what is left).  The
    profiles' own state is invisible to the collector (see models.profile.Profile).
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    gc.callbacks.append(_time_full_collections)


_full_collection_began: list[float] = []


def _time_full_collections(phase: str, info: dict) -> None:
    """Each full collection's duration in `strata_gc_full_collection_seconds`."""
    if info.get("generation") != 2:
        return
    if phase == "start":
        _full_collection_began[:] = [time.perf_counter()]
    elif _full_collection_began:
        from strata.streams.metrics import metrics

        metrics.gc_pauses.observe(time.perf_counter() - _full_collection_began.pop())


def build_worker(settings):
    """The Faust worker with our services, logging at `settings.log_level` (not started)."""
    import faust

    from strata.streams import agents, dashboard, ingest, views  # noqa: F401  (registers agents and views)
    from strata.streams.app import app, deadletters, end_offsets, factor_feed, shop_feed
    from strata.streams.feeds import EventLoopWatch

    # Bind (STRATA_WEB_HOST) and advertised URL are two settings: the group learns each worker's
    # canonical URL from its assignment metadata and table_route forwards requests there.
    app.conf.canonical_url = settings.advertised_url
    worker = faust.Worker(app, factor_feed, shop_feed, end_offsets, deadletters, EventLoopWatch(), loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    # At a level of warning or above, Faust's terminal spinner would hang a DEBUG handler on the
    # root logger and lower the root to DEBUG, so that every debug call of Faust, mode and
    # aiokafka built a log record (a few µs each, two per changelog record in recovery) only
    # for the spinner to turn.  The level asked for is the level logged at.
    worker.spinner = None
    return worker


def run_worker(settings) -> int:
    """Run the worker.  Its topics are created first when missing, before the group forms: Faust
    creates only its own changelog topics, and a broker that creates a topic on first use would
    give it the broker's default partition count."""
    from strata.streams.config import ConfigError
    from strata.streams.topics import worker_topic_problems

    missing, miscounted = asyncio.run(worker_topic_problems(settings))
    if miscounted:
        raise ConfigError("; ".join(miscounted) + ": users would be looked for on other partitions than their "
                          "profiles. Keep the count, or migrate to a new deployment (docs/design.md, \"Partitioning\")")
    if missing:
        raise ConfigError("; ".join(missing))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # One BLAS thread: a ranking matvec must not fight the event loop for the second core.
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    worker = build_worker(settings)
    tune_garbage_collector()
    worker.execute_from_commandline()
    return 0
