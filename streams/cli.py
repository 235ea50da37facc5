"""The `strata` command line (also `python -m streams`).

Every command takes its connection settings from the environment (see
`streams.config`); a bad argument or setting prints what is wrong and exits
with status 2, an unreachable worker or broker with status 1 — never a traceback.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

from streams.config import ConfigError, Settings, parse_duration


class CommandError(Exception):
    """A failure to report in one line, with the exit status to use."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value} must be greater than 0")
    return value


def _duration(text: str) -> float:
    try:
        return parse_duration(text, "duration")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- commands -----------------------------------------------------------------
def cmd_worker(args, settings: Settings) -> int:
    from streams.worker import run_worker

    return run_worker(settings)


def cmd_replay(args, settings: Settings) -> int:
    from models.loaders import LoaderError, open_log
    from streams.replay import publish

    try:
        source = open_log(args.events, args.format, catalog_path=args.catalog, limit=args.limit, seed=args.seed)
        catalog = list(source.catalog())
    except LoaderError as exc:
        raise CommandError(str(exc), 2) from None
    print(f"replaying {args.format} log {args.events} → {settings.kafka_bootstrap} (topics {settings.topic_prefix}*)")
    summary = asyncio.run(_with_broker(settings, publish(settings, catalog, source.events(), rate=args.rate, total=args.limit)))
    print(summary.line())
    return 0


def http_get(settings: Settings, path: str, query: dict | None = None, timeout: float = 10.0) -> tuple[int, dict]:
    url = settings.web_url + path + ("?" + urllib.parse.urlencode(query) if query else "")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read())
        except ValueError:
            return exc.code, {"error": exc.reason}
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise CommandError(f"no Strata worker answers at {settings.web_url} ({getattr(exc, 'reason', exc)}); start one with `strata worker`") from None


def cmd_profile(args, settings: Settings) -> int:
    status, body = http_get(settings, f"/users/{urllib.parse.quote(args.user, safe='')}/profile")
    if status != 200:
        raise CommandError(body.get("error", f"HTTP {status}"))
    print(json.dumps(body, indent=2))
    return 0


def cmd_train(args, settings: Settings) -> int:
    import time

    from aiokafka.errors import KafkaError

    from models.als import ALSParams
    from streams.trainer import NothingToTrain, train_once

    try:
        params = ALSParams(factors=args.factors, regularization=args.regularization, alpha=args.alpha, iterations=args.iterations, seed=args.seed)
    except ValueError as exc:
        raise CommandError(str(exc), 2) from None
    while True:
        started = time.monotonic()
        try:
            report = asyncio.run(_with_broker(settings, train_once(settings, params)))
            for line in report.lines():
                print(line)
        except NothingToTrain as exc:
            if not args.every:
                raise CommandError(str(exc)) from None
            print(f"nothing to train on yet: {exc}")
        except (KafkaError, CommandError) as exc:
            if not args.every:
                raise
            print(f"training failed, retrying at the next run: {exc}", file=sys.stderr)
        if not args.every:
            return 0
        pause = max(0.0, args.every - (time.monotonic() - started))
        print(f"next run in {pause:.0f}s")
        time.sleep(pause)


def cmd_recommend(args, settings: Settings) -> int:
    query = {"k": args.k, "explain": 1}
    if args.category:
        query["category"] = args.category
    status, body = http_get(settings, f"/users/{urllib.parse.quote(args.user, safe='')}/recommendations", query)
    if status != 200:
        raise CommandError(body.get("error", f"HTTP {status}"), 2 if status == 400 else 1)
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    flag = " (cold start: popular items)" if body.get("cold_start") else ""
    print(f"user {body['user_id']} · model version {body['model_version']}{flag}")
    for rank, item in enumerate(body["items"], 1):
        layers = " ".join(f"{k} {v:.3f}" for k, v in item["layers"].items())
        print(f"{rank:>3}. {item['item_id']:<16} {item['score']:.3f}  [{layers}]  {'; '.join(item['because'])}")
    return 0


def cmd_bench(args, settings: Settings) -> int:
    if args.what == "serve" and args.in_process:
        from models.ranking import bench_ranking

        result = bench_ranking(n_items=args.items, dims=args.dims, requests=args.requests)
        result["machine"] = machine_info()
        _emit(result, args.json)
        lat = result.get("latency_ms", result)
        print(f"in-process ranking, {args.items:,} items × {args.dims}: p50 {lat['p50']:.2f} ms · p99 {lat['p99']:.2f} ms", file=sys.stderr)
        return 0
    raise CommandError(f"`strata bench {args.what}` without --in-process is not built yet", 2)


def machine_info() -> dict:
    import os
    import platform

    import numpy

    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        mem = None
    return {"cores": os.cpu_count(), "memory_bytes": mem, "python": platform.python_version(), "numpy": numpy.__version__, "platform": platform.platform()}


def _emit(result: dict, path: str | None) -> None:
    text = json.dumps(result, indent=2)
    if path:
        with open(path, "w") as f:
            f.write(text + "\n")
    print(text)


def cmd_demo(args, settings: Settings) -> int:
    from streams.demo import run_demo

    return run_demo(args, settings)


async def _with_broker(settings: Settings, coro):
    from aiokafka.errors import KafkaConnectionError

    try:
        return await coro
    except KafkaConnectionError:
        raise CommandError(
            f"cannot reach Kafka at {settings.kafka_bootstrap}; start the local broker with `strata kafka start` "
            "or set STRATA_KAFKA_BOOTSTRAP"
        ) from None


# -- parser -------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from models.loaders import FORMATS
    from streams import kafka_local

    parser = argparse.ArgumentParser(prog="strata", description="Streaming three-layer interest profiles on Kafka.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    kafka_local.register(sub)

    p = sub.add_parser("worker", help="run the Faust worker (agents, tables, HTTP views)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("replay", help="publish a log's catalog and events onto the topics")
    p.add_argument("--events", required=True, help="the log: a file or directory, by format")
    p.add_argument("--format", required=True, choices=FORMATS)
    p.add_argument("--catalog", help="catalog as NDJSON (default: derived from the log)")
    p.add_argument("--limit", type=_positive_int, help="send at most N events")
    p.add_argument("--rate", type=_positive_float, help="at most R events per second (default: as fast as possible)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic generator")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("train", help="fit ALS on a snapshot of the events topic and publish the factors")
    p.add_argument("--every", type=_duration, help="repeat on this schedule (e.g. 15m, 1h); survives broker hiccups")
    p.add_argument("--factors", type=_positive_int, default=64)
    p.add_argument("--regularization", type=float, default=0.05)
    p.add_argument("--alpha", type=float, default=10.0, help="confidence c = 1 + alpha * w")
    p.add_argument("--iterations", type=_positive_int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("profile", help="show a user's live profile (asks the running workers)")
    p.add_argument("user")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("recommend", help="a user's live recommendations (asks the running workers)")
    p.add_argument("user")
    p.add_argument("--k", type=_positive_int, default=10)
    p.add_argument("--category", help="only items of this category")
    p.add_argument("--json", action="store_true", help="print the raw JSON answer")
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("bench", help="benchmarks (print JSON and a one-line summary)")
    p.add_argument("what", choices=["serve"])
    p.add_argument("--in-process", action="store_true", help="rank in this process, no HTTP")
    p.add_argument("--items", type=_positive_int, default=250_000)
    p.add_argument("--dims", type=_positive_int, default=64)
    p.add_argument("--requests", type=_positive_int, default=500)
    p.add_argument("--json", metavar="OUT", help="also write the JSON to this file")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("demo", help="broker, worker, a synthetic replay and live profiles on this machine")
    p.add_argument("--events", type=_positive_int, default=30_000, help="synthetic events to replay")
    p.add_argument("--users", type=_positive_int, default=2_000)
    p.add_argument("--rate", type=_positive_float, default=5_000.0, help="events per second")
    p.add_argument("--keep", action="store_true", help="leave the worker and broker running at the end")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"strata: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args, settings) or 0)
    except CommandError as exc:
        print(f"strata {args.command}: {exc}", file=sys.stderr)
        return exc.status
    except ConfigError as exc:
        print(f"strata {args.command}: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
