"""Update latency while many clients hammer expensive recommendation requests (issue 24).

    STRATA_KAFKA_BOOTSTRAP=127.0.0.1:9092 python docs/tools/http_flood.py [--clients 200] [--rate 2000]
        [--seconds 20] [--max-ranking 64] [--json OUT]

On a fresh app id and topics of the broker: a synthetic shop (20,000 users, 5,000 items, 60,000
events) replayed, one worker (`STRATA_MAX_RANKING` as given), a model trained (`strata train`, 32
factors, 2 iterations); then two phases of `seconds` × `rate` events produced at `rate` per
second: alone, and while `clients` HTTP clients ask back to back for `k=1000&explain=1`
recommendations of random users (a 503 answer waits its Retry-After).  Prints JSON: per phase, the produce → profile-written latency
percentiles (the worker's `strata_update_latency_seconds`, as `strata bench stream` reads it),
and for the flood the requests answered 200 and 503 and their latency.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from strata.streams.benchmarks.common import BenchWorker, forget_topics, free_port, machine_info  # noqa: E402
from strata.streams.benchmarks.stream import LOOP_LAG, _buckets, _produce_at_rate, percentiles_from_histogram  # noqa: E402
from strata.streams.config import Settings  # noqa: E402

USERS, ITEMS, BACKLOG = 20_000, 5_000, 60_000


async def flood(url: str, clients: int, stop: asyncio.Event) -> dict:
    """`clients` concurrent clients asking for k=1000&explain=1 until `stop`; statuses and latencies."""
    import aiohttp

    statuses: dict[int, int] = {}
    took: list[float] = []
    rng = random.Random(3)

    async def client(session) -> None:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                async with session.get(f"{url}/users/u{rng.randrange(USERS)}/recommendations?k=1000&explain=1") as response:
                    await response.read()
                    status = response.status
                    retry_after = float(response.headers.get("Retry-After", "1"))
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = 0
            statuses[status] = statuses.get(status, 0) + 1
            if status == 200:
                took.append(time.perf_counter() - started)
            elif status == 503:
                await asyncio.sleep(retry_after)  # as the answer asks

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients), timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    took.sort()
    pick = lambda q: round(took[min(len(took) - 1, int(q * len(took)))] * 1000.0, 1) if took else None  # noqa: E731
    return {"statuses": statuses, "ok_ms": {"p50": pick(0.5), "p99": pick(0.99)}}


def settled(worker: BenchWorker, window: float = 2.0) -> bool:
    """Whether no event-loop wake-up was 25 ms or more late over `window` seconds."""
    before = _buckets([worker.scrape()], LOOP_LAG)
    time.sleep(window)
    after = _buckets([worker.scrape()], LOOP_LAG)
    late = lambda h: h.get(float("inf"), 0.0) - h.get(0.025, 0.0)  # noqa: E731
    return late(after) - late(before) == 0


async def phase(settings: Settings, worker: BenchWorker, events: list[dict], rate: float, clients: int) -> dict:
    topic = settings.topic("events")
    target = worker.metric("strata_events_processed_total") + len(events)
    before = _buckets([worker.scrape()])
    stop = asyncio.Event()
    load = asyncio.ensure_future(flood(worker.url, clients, stop)) if clients else None
    took = await _produce_at_rate(settings, topic, events, rate)
    deadline = time.monotonic() + 120
    while worker.metric("strata_events_processed_total") < target and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
    stop.set()
    result = {"update_latency_ms": percentiles_from_histogram(before, _buckets([worker.scrape()])),
              "achieved_offered_rate": round(len(events) / took, 1)}
    if load is not None:
        result["requests"] = await load
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-ranking", type=int, default=64)
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args()

    from strata.models.als import ALSParams
    from strata.models.logs.loaders import open_log
    from strata.streams.replay import publish
    from strata.streams.trainer import train_once

    base = Settings.from_env()
    app_id = f"flood-{uuid.uuid4().hex[:8]}"
    settings = replace(base, app_id=app_id, topic_prefix=f"{app_id}.")
    live = int(args.rate * args.seconds)
    source = open_log(f"users={USERS},items={ITEMS},events={BACKLOG + 2 * live}", "synthetic", seed=11)
    events = list(source.events())
    asyncio.run(publish(settings, list(source.catalog()), events[:BACKLOG], progress=False))
    root = Path(tempfile.mkdtemp(prefix="strata-flood-"))
    env = {"STRATA_KAFKA_BOOTSTRAP": base.kafka_bootstrap, "STRATA_APP_ID": app_id, "STRATA_TOPIC_PREFIX": f"{app_id}.",
           "STRATA_PARTITIONS": str(base.partitions), "STRATA_LOG_LEVEL": "warning", "STRATA_DATA_DIR": str(root / "data"),
           "STRATA_WEB_PORT": str(free_port()), "STRATA_MAX_RANKING": str(args.max_ranking), **base.security_env()}
    worker = BenchWorker(env, root / "worker.log")
    try:
        worker.start()
        worker.wait(lambda: worker.metric("strata_events_processed_total") >= BACKLOG, 300, "the backlog processed")
        asyncio.run(train_once(settings, ALSParams(factors=32, iterations=2), progress=lambda *_: None))
        worker.wait(lambda: worker.metric("strata_model_version") > 0, 60, "the model served")
        worker.wait(lambda: settled(worker), 120, "the worker settled (user vectors stored, ranker built)")
        quiet = asyncio.run(phase(settings, worker, events[BACKLOG:BACKLOG + live], args.rate, 0))
        flooded = asyncio.run(phase(settings, worker, events[BACKLOG + live:], args.rate, args.clients))
    finally:
        worker.stop()
        shutil.rmtree(root, ignore_errors=True)
        forget_topics(settings)
    result = {"clients": args.clients, "rate": args.rate, "seconds": args.seconds, "max_ranking": args.max_ranking,
              "alone": quiet, "flooded": flooded, "machine": machine_info()}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
