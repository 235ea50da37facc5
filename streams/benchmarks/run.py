"""`strata bench WHAT`: each benchmark run, its JSON printed (and written with --json), and a
readable summary on stderr."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from strata.models.als_params import ALSParams
from strata.streams.benchmarks.common import (
    BenchError, bench_ingest_http, bench_profile_size, bench_recovery, bench_serve_http, bench_snapshot_read,
    bench_train_log, bench_train_synthetic, cpu_line, machine_info,
)
from strata.streams.benchmarks.ranking import bench_ranking
from strata.streams.benchmarks.stream import run_bench, runs_line, summarise_runs, summary_line
from strata.streams.config import Settings


def say(line: str) -> None:
    print(line, file=sys.stderr)


def _emit(result: dict, path: str | None) -> None:
    text = json.dumps(result, indent=2)
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")
    print(text)


def _stream(args, settings: Settings) -> None:
    results = []
    for n in range(args.runs):
        if args.runs > 1:
            say(f"run {n + 1} of {args.runs}")
        results.append(run_bench(settings, events=args.events or 300_000, workers=args.workers, rate=args.rate,
                                 users=args.users or 20_000, progress=say))
        if args.runs > 1:
            say(summary_line(results[-1]))
    result = results[0] if args.runs == 1 else summarise_runs(results)
    _emit(result, args.json)
    if args.runs == 1:
        say(summary_line(result))
        say(cpu_line(result["cpu_per_event"], "event"))
    else:
        say(runs_line(result))


def _serve_in_process(args, settings: Settings) -> None:
    dims = args.dims or 64
    result = bench_ranking(n_items=args.items, dims=dims, requests=args.requests or 500, batch=args.concurrency)
    result["machine"] = machine_info()
    _emit(result, args.json)
    lat = result.get("latency_ms", result)
    line = f"in-process ranking, {args.items:,} items × {dims}: p50 {lat['p50']:.2f} ms · p99 {lat['p99']:.2f} ms"
    if "batched" in result:
        b = result["batched"]
        line += f" · {b['batch']} at a time: {b['per_request_ms']:.2f} ms a request ({b['requests_per_s']:,.0f}/s)"
    say(line)


def _serve_http(args, settings: Settings) -> None:
    result = bench_serve_http(settings, urls=args.url, users=args.users or 1000, user_prefix=args.user_prefix,
                              requests=args.requests or 5000, concurrency=args.concurrency, k=args.k)
    _emit(result, args.json)
    lat = result["latency_ms"]
    where = result["url"] if isinstance(result["url"], str) else " + ".join(result["url"])
    say(f"serve over HTTP ({where}, concurrency {args.concurrency}): {result['req_per_s']:,.0f} req/s · "
        f"p50 {lat['p50']} ms · p95 {lat['p95']} ms · p99 {lat['p99']} ms · errors {sum(result['errors'].values())}")
    say(cpu_line(result["cpu_per_request"], "request"))
    if result["from_standby"]:
        say(f"answered from a standby copy, not forwarded to the owner: {result['from_standby']:.0%} of the requests")


def _ingest(args, settings: Settings) -> None:
    result = bench_ingest_http(settings, url=(args.url or [settings.web_url])[0], events=args.events or 50_000,
                               batch=args.batch, concurrency=args.concurrency)
    _emit(result, args.json)
    lat = result["latency_ms"]
    say(f"ingest over HTTP ({result['url']}, {args.batch} events a request, concurrency {args.concurrency}): "
        f"{result['events_per_s']:,.0f} events/s accepted · a request p50 {lat['p50']} ms · p99 {lat['p99']} ms · "
        f"errors {sum(result['errors'].values())}")


def _train(args, settings: Settings) -> None:
    params = ALSParams(factors=args.dims or ALSParams().factors, iterations=args.iterations)
    result: dict = {"als": {"factors": params.factors, "iterations": params.iterations, "alpha": params.alpha,
                            "regularization": params.regularization}}
    if args.log:
        say(f"ALS on {args.log} ({args.format}) …")
        result["log"] = bench_train_log(args.log, args.format, params)
    if args.synthetic_events:
        say(f"ALS on synthetic {args.synthetic_users:,} users × {args.synthetic_items:,} items × {args.synthetic_events:,} events …")
        result["synthetic"] = bench_train_synthetic(args.synthetic_users, args.synthetic_items, args.synthetic_events, params)
    if args.snapshot_events:
        say(f"snapshot read of {args.snapshot_events:,} events from {settings.kafka_bootstrap} …")
        result["snapshot_read"] = bench_snapshot_read(settings, args.snapshot_events, users=50_000, items=100_000)
    result["machine"] = machine_info()
    _emit(result, args.json)
    parts = []
    if "log" in result:
        parts.append(f"{Path(result['log']['log']).name}: {result['log']['events']:,} events fit {result['log']['fit_s']} s")
    if "synthetic" in result:
        r = result["synthetic"]
        parts.append(f"synthetic {r['users']:,}×{r['items']:,}×{r['events']:,}: fit {r['fit_s']} s (matrix {r['matrix_s']} s)")
    if "snapshot_read" in result:
        parts.append(f"snapshot read {result['snapshot_read']['events_per_s']:,.0f} events/s")
    say("train: " + " · ".join(parts))


def _profiles(args, settings: Settings) -> None:
    if not args.log:
        raise BenchError("bench profiles needs --log PATH (and --format)")
    result = bench_profile_size(args.log, args.format, settings.profile)
    result["machine"] = machine_info()
    _emit(result, args.json)
    i, s = result["interest_bytes"], result["stored_bytes"]
    say(f"profiles: {result['users']:,} users of {Path(args.log).name} · interest layers p50 {i['p50']:,} B · "
        f"p99 {i['p99']:,} B · max {i['max']:,} B · {i['share_within_4KiB']:.1%} within 4 KiB "
        f"({result['users_at_item_cap']:,} users at the item cap, max {result['max_interest_bytes_at_item_cap'] or 0:,} B) · "
        f"stored with the ledgers p50 {s['p50']:,} B · p99 {s['p99']:,} B · max {s['max']:,} B")


def _recovery(args, settings: Settings) -> None:
    result = bench_recovery(settings, users=args.users or 100_000, events=args.events or 300_000, partitions=settings.partitions)
    _emit(result, args.json)
    say(f"recovery: {result['profiles']:,} profiles from the changelog (data dir deleted) in {result['recovery_s']} s "
        f"(ready after {result['ready_s']} s) · {result['profiles_per_s']:,.0f} profiles/s")


def run(args, settings: Settings) -> int:
    """`strata bench WHAT`: run it, print the JSON and the summary line."""
    if args.what == "stream":
        _stream(args, settings)
    elif args.what == "serve" and args.in_process:
        _serve_in_process(args, settings)
    elif args.what == "serve":
        _serve_http(args, settings)
    elif args.what == "ingest":
        _ingest(args, settings)
    elif args.what == "train":
        _train(args, settings)
    elif args.what == "profiles":
        _profiles(args, settings)
    elif args.what == "recovery":
        _recovery(args, settings)
    return 0
