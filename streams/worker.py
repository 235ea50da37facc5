"""`strata worker`: run the Faust worker with its agents and views."""
from __future__ import annotations

import asyncio


def run_worker(settings) -> int:
    import faust

    from streams import agents, views  # noqa: F401  (registers agents and views)
    from streams.app import app, factor_feed, popularity_feed
    from streams.topics import ensure_topics

    # The source topics must exist with our partition count before the group forms;
    # Faust creates only its own (changelog) topics.
    asyncio.run(ensure_topics(settings))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # One BLAS thread: a ranking matvec must not fight the event loop for the second core.
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    # Bind (STRATA_WEB_HOST) and advertised URL are two settings: the group learns each worker's
    # canonical URL from its assignment metadata and table_route forwards requests there.
    app.conf.canonical_url = settings.advertised_url
    worker = faust.Worker(app, factor_feed, popularity_feed, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
    return 0
