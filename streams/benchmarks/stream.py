"""`strata bench stream`: the streaming hot path against the real broker (docs/design.md §7).

One run, on one fresh set of topics (own app id and prefix, so it never
touches a deployment on the same broker):

1. produce the catalog and N synthetic events (keyed by user, the topic's
   partition count from the settings);
2. **ceiling**: a plain aiokafka consumer reads the same N events from the
   same topic and decodes each with orjson — the raw consume rate;
3. **throughput**: W `strata worker` processes (RocksDB tables, changelog on,
   everything as in production) consume the backlog; the rate is read from
   their `strata_events_processed_total` counters, from the first processed
   event to the last (so worker start-up and table recovery are not counted);
4. **latency**: with the workers caught up, events are produced at a fixed
   offered rate R; the produce → profile-written (store and changelog flushed)
   latency comes from the workers' `strata_update_latency_seconds` histogram
   (Kafka CreateTime → after the batch's changelog flush), as the difference
   of two scrapes.  Percentiles are interpolated inside histogram buckets
   (1, 2.5, 5, 10, 25, 50, 100, 250 ms …), so they are as fine as the buckets;
   `share_within_100ms` is exact.

Prints the JSON of docs/design.md §4 and a one-line summary.
"""
from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

from strata.streams.benchmarks.common import BenchError, BenchWorker, cpu_per_unit, forget_topics, free_port, machine_info, summed, thread_cpu
from strata.streams.config import Settings
from strata.streams.metrics import LOOP_LAG_BUCKETS_S

TARGET_EVENTS_PER_S = 50_000  # docs/design.md §7: the median over five runs
LOOP_LAG = "strata_event_loop_lag_seconds"
GC_PAUSES = "strata_gc_full_collection_seconds"


def _total(scrapes: list[dict[str, float]], name: str) -> float:
    """A metric summed over its labels and over the workers."""
    return sum(v for k, v in summed(scrapes).items() if k == name or k.startswith(name + "{"))


def _processed(scrapes: list[dict[str, float]]) -> float:
    return _total(scrapes, "strata_events_processed_total")


def _buckets(scrapes: list[dict[str, float]], name: str = "strata_update_latency_seconds") -> dict[float, float]:
    """A cumulative histogram summed over workers: upper bound (s) → count."""
    out: dict[float, float] = {}
    prefix = f'{name}_bucket{{le="'
    for k, v in summed(scrapes).items():
        if k.startswith(prefix):
            bound = k.split('"')[1]
            out[float("inf") if bound == "+Inf" else float(bound)] = v
    return out


def percentiles_from_histogram(before: dict[float, float], after: dict[float, float], qs=(0.5, 0.95, 0.99)) -> dict:
    """Percentiles (ms) of the observations between two scrapes of a cumulative histogram, linear inside a bucket."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    result: dict[str, float | None] = {}
    for q in qs:
        if total <= 0:
            result[f"p{round(q * 100)}"] = None
            continue
        target = q * total
        lo_bound, lo_count = 0.0, 0.0
        value = None
        for b, c in zip(bounds, counts):
            if c >= target:
                if b == float("inf"):
                    value = lo_bound  # beyond the last finite bucket: report its bound (a lower bound)
                else:
                    frac = (target - lo_count) / (c - lo_count) if c > lo_count else 1.0
                    value = lo_bound + frac * (b - lo_bound)
                break
            lo_bound, lo_count = b, c
        result[f"p{round(q * 100)}"] = None if value is None else round(value * 1000.0, 2)
    within = next((after[b] - before.get(b, 0.0) for b in bounds if b >= 0.1), 0.0)
    result["share_within_100ms"] = round(within / total, 5) if total else None
    result["observations"] = int(total)
    return result


def loop_lag(before: dict[float, float], after: dict[float, float]) -> dict:
    """The event loop's lag between two scrapes (`strata_event_loop_lag_seconds`): percentiles and
    the bucket of the longest wait, as its upper bound in ms ("+Inf" beyond the last bucket)."""
    result = percentiles_from_histogram(before, after, qs=(0.5, 0.99))
    del result["share_within_100ms"]
    longest = None
    below = 0.0
    for bound in sorted(after):
        count = after[bound] - before.get(bound, 0.0)
        if count > below:
            longest = bound
        below = count
    result["longest_le_ms"] = None if longest is None else "+Inf" if longest == float("inf") else round(longest * 1000.0, 1)
    return result


async def _raw_consume(settings: Settings, topic: str, expected: int) -> tuple[int, float]:
    """The ceiling: plain aiokafka, all partitions assigned, orjson.loads per record."""
    import orjson
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from strata.streams.topics import partitions_of

    consumer = AIOKafkaConsumer(
        **settings.aiokafka_kwargs(), group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024, fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        n = 0
        loads = orjson.loads
        started = time.perf_counter()
        while n < expected:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batches.values():
                for record in records:
                    loads(record.value)
                n += len(records)
        return n, time.perf_counter() - started
    finally:
        await consumer.stop()


async def _produce_at_rate(settings: Settings, topic: str, events: list[dict], rate: float) -> float:
    """Send `events` at `rate` per second in 10 ms ticks; returns the seconds it took."""
    import orjson
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**settings.aiokafka_kwargs(), acks="all", linger_ms=0, enable_idempotence=True)
    await producer.start()
    try:
        started = time.perf_counter()
        sent = 0
        pending = []
        while sent < len(events):
            due = min(len(events), int((time.perf_counter() - started) * rate) + 1)
            for e in events[sent:due]:
                pending.append(await producer.send(topic, orjson.dumps(e), key=e["user_id"].encode()))
            sent = due
            if len(pending) > 2000:
                await asyncio.gather(*pending)
                pending = []
            await asyncio.sleep(0.01)
        await asyncio.gather(*pending)
        return time.perf_counter() - started
    finally:
        await producer.stop()


def _worker_env(base: Settings, app_id: str) -> dict[str, str]:
    """The settings of a bench worker: its own app id and topics, the base's broker and batching."""
    return {
        "STRATA_KAFKA_BOOTSTRAP": base.kafka_bootstrap,
        "STRATA_APP_ID": app_id,
        "STRATA_TOPIC_PREFIX": f"{app_id}.",
        "STRATA_PARTITIONS": str(base.partitions),
        "STRATA_LOG_LEVEL": "warning",
        "STRATA_BATCH_SIZE": str(base.batch_size),
        "STRATA_BATCH_WINDOW_MS": str(int(base.batch_window_s * 1000)),
        "STRATA_STANDBY_REPLICAS": str(base.standby_replicas),  # 1 with --workers 2: each keeps the other's partitions
        **base.security_env(),
    }


def _consume_backlog(procs: list, backlog: int, progress) -> dict:
    """Scrape the workers while they consume the backlog: their rate between the first scrape that
    saw an event applied and the one that saw the last, with the CPU, event-loop holds, full
    collections and micro-batches of that stretch."""
    samples: list[tuple[float, float, list]] = []
    deadline = time.monotonic() + 600
    while True:
        scrapes = [p.scrape() for p in procs]
        n = _processed(scrapes) if all(scrapes) else 0.0
        if n > 0:
            samples.append((time.perf_counter(), n, scrapes))
        if n >= backlog:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"workers processed only {n:.0f} of {backlog} events in 600 s")
        time.sleep(0.25)  # not faster: every scrape costs the worker a /metrics render
    (t0, n0, first), (t1, n1, last) = samples[0], samples[-1]
    rate = (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan")
    progress(f"  {n1 - n0:,.0f} events in {t1 - t0:.2f}s = {rate:,.0f}/s")
    gc_before, gc_after = _buckets(first, GC_PAUSES), _buckets(last, GC_PAUSES)
    batches = _total(last, "strata_batches_total") - _total(first, "strata_batches_total")
    return {
        "events_per_s": rate,
        "cpu_per_event": cpu_per_unit(thread_cpu(first), thread_cpu(last), max(n1 - n0, 1), None, None),
        "mean_batch": round((n1 - n0) / batches, 1) if batches else None,  # events a micro-batch, in the backlog
        "loop_lag_ms": loop_lag(_buckets(first, LOOP_LAG), _buckets(last, LOOP_LAG)),  # how long HTTP requests waited for the loop
        # the worker's full garbage collections during the backlog, and how long they took
        "full_collections": {"count": gc_after.get(float("inf"), 0.0) - gc_before.get(float("inf"), 0.0),
                             **loop_lag(gc_before, gc_after)},
    }


def _latency_phase(procs: list, settings: Settings, topic: str, live: list, rate: float, backlog: int, progress) -> dict:
    """Produce `live` at `rate` once the backlog is done; the percentiles of produce → profile
    written, from the workers' histograms before and after."""
    before = _buckets([p.scrape() for p in procs])
    took = asyncio.run(_produce_at_rate(settings, topic, live, rate))
    deadline = time.monotonic() + 120
    while _processed([p.scrape() for p in procs]) < backlog + len(live):
        if time.monotonic() > deadline:
            raise BenchError("latency phase: events not all processed within 120 s")
        time.sleep(0.25)
    latency = percentiles_from_histogram(before, _buckets([p.scrape() for p in procs]))
    latency["offered_rate"] = rate
    latency["achieved_offered_rate"] = round(len(live) / took, 1)
    if latency["observations"] != len(live):  # each live event is new and valid: applied once
        progress(f"  warning: {latency['observations']:,} latencies observed for {len(live):,} events; "
                 "the percentiles include events of the backlog phase or miss some of this one")
    return latency


def run_bench(base: Settings, events: int = 300_000, workers: int = 1, rate: float = 2000.0,
              latency_events: int | None = None, users: int = 20_000, items: int = 5_000,
              progress=print, keep: bool = False) -> dict:
    from strata.models.logs.loaders import open_log
    from strata.streams.replay import publish
    from strata.streams.topics import topic_specs

    app_id = f"bench-{uuid.uuid4().hex[:8]}"
    env = _worker_env(base, app_id)
    settings = replace(base, app_id=app_id, topic_prefix=f"{app_id}.")
    topic = topic_specs(settings)["events"].name
    latency_events = int(latency_events or max(2000, rate * 10))

    # Backlog events and latency events from one synthetic world (same catalog), disjoint slices.
    source = open_log(f"users={users},items={items},events={events + latency_events}", "synthetic", seed=7)
    all_events = list(source.events())
    backlog, live = all_events[:events], all_events[events:]
    progress(f"producing {len(backlog):,} events onto {topic} ({base.partitions} partitions) …")
    summary = asyncio.run(publish(settings, list(source.catalog()), backlog, progress=False))
    progress(f"  {summary.line()}")

    progress("raw aiokafka consume (orjson.loads per record) …")
    n_raw, raw_s = asyncio.run(_raw_consume(settings, topic, len(backlog)))
    raw_rate = n_raw / raw_s
    progress(f"  {n_raw:,} records in {raw_s:.2f}s = {raw_rate:,.0f}/s")

    root = Path(tempfile.mkdtemp(prefix="strata-bench-"))
    procs = [
        BenchWorker({**env, "STRATA_DATA_DIR": str(root / f"data{i}"), "STRATA_WEB_PORT": str(free_port()),
                     "STRATA_WEB_HOST": "127.0.0.1"}, root / f"worker{i}.log")
        for i in range(workers)
    ]
    try:
        for p in procs:
            p.start()
        progress(f"{workers} worker(s) consuming the backlog …")
        backlog_phase = _consume_backlog(procs, len(backlog), progress)
        progress(f"latency: {len(live):,} events at {rate:,.0f}/s …")
        latency = _latency_phase(procs, settings, topic, live, rate, len(backlog), progress)
        memory = [p.memory() for p in procs]
    finally:
        for p in procs:
            p.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
            forget_topics(settings)

    if workers > 1:  # the threads of several processes: no one event loop to bound the rate
        backlog_phase["cpu_per_event"]["bound_per_s"] = {}
    worker_rate = backlog_phase.pop("events_per_s")
    return {
        "events": len(backlog),
        "events_per_s": round(worker_rate, 1),
        "raw_consume_per_s": round(raw_rate, 1),
        "ratio": round(worker_rate / raw_rate, 4),
        **backlog_phase,
        "latency_ms": latency,
        "workers": workers,
        "partitions": base.partitions,
        "batch_size": base.batch_size,
        "users": users,
        "worker_memory": memory,  # each worker's resident memory after the latency phase, and its peak
        "app_id": app_id,
        "machine": machine_info(),
    }


def summary_line(result: dict) -> str:
    lat = result["latency_ms"]
    return (
        f"stream: {result['events_per_s']:,.0f} events/s with {result['workers']} worker(s) "
        f"({result['ratio']:.0%} of raw aiokafka {result['raw_consume_per_s']:,.0f}/s) · "
        f"latency at {lat['offered_rate']:,.0f}/s p50 {lat['p50']} ms · p95 {lat['p95']} ms · p99 {lat['p99']} ms"
        + _loop_lag_text(result.get("loop_lag_ms"))
        + _memory_text(result.get("worker_memory"))
    )


def _memory_text(memory: list | None) -> str:
    known = [m for m in memory or [] if m]
    if not known:
        return ""
    return " · worker memory " + ", ".join(f"{m['rss_bytes'] / 2**20:,.0f} MiB (peak {m['peak_rss_bytes'] / 2**20:,.0f})" for m in known)


def _loop_lag_text(lag: dict | None) -> str:
    if not lag or lag.get("longest_le_ms") is None:
        return ""
    longest = lag["longest_le_ms"]
    bound = f"over {LOOP_LAG_BUCKETS_S[-1]:g} s" if longest == "+Inf" else f"≤ {longest:g} ms"
    return f" · event loop held during the backlog: p99 {lag['p99']} ms, longest {bound}"


def summarise_runs(results: list[dict]) -> dict:
    """Several runs of `run_bench` as one result: each run, and the median and range of the figures
    that drift with the machine (its speed swings by ±20 % within minutes, more than most changes)."""

    def spread(values: list[float]) -> dict:
        ordered = sorted(values)
        return {"median": statistics.median(ordered), "min": ordered[0], "max": ordered[-1]}

    loop = [r["cpu_per_event"]["worker_ms"].get("main") for r in results]
    p99 = [r["latency_ms"]["p99"] for r in results if r["latency_ms"]["p99"] is not None]
    return {
        "runs": results,
        "events_per_s": spread([r["events_per_s"] for r in results]),
        "ratio": spread([r["ratio"] for r in results]),
        "p99_ms": spread(p99) if p99 else None,
        "event_loop_us_per_event": spread([1000.0 * x for x in loop]) if None not in loop else None,
        "runs_at_target": sum(r["events_per_s"] >= TARGET_EVENTS_PER_S for r in results),
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "machine": results[-1].get("machine"),
    }


def runs_line(summary: dict) -> str:
    rate, p99 = summary["events_per_s"], summary["p99_ms"]
    n = len(summary["runs"])
    latency = f"median {p99['median']} ms, worst {p99['max']} ms" if p99 else "none observed"
    return (
        f"stream, {n} runs: median {rate['median']:,.0f} events/s ({rate['min']:,.0f} … {rate['max']:,.0f}), "
        f"{summary['runs_at_target']} of {n} at {summary['target_events_per_s']:,}/s or more · "
        f"p99 at the offered rate: {latency}"
    )
