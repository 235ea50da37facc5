"""The `strata` command line (also `python -m strata.streams`).

Every command takes its connection settings from the environment (see
`streams.config`); a bad argument or setting prints what is wrong and exits
with status 2, an unreachable worker or broker with status 1 — never a traceback.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import sys
import urllib.parse

from strata.models.als_params import ALSParams
from strata.streams.client import CommandError, http_get
from strata.streams.config import ConfigError, Settings, parse_duration

ALS_DEFAULTS = ALSParams()


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
    from strata.streams.topics import ensure_topics
    from strata.streams.worker import run_worker

    kafka_log.install()  # a broker that cannot be used is one line, not a traceback …
    try:
        asyncio.run(_with_broker(settings, ensure_topics(settings)))
    finally:
        kafka_log.uninstall()  # … and from here on the worker logs as a service does
    return run_worker(settings)


def cmd_replay(args, settings: Settings) -> int:
    from strata.models.logs.loaders import LoaderError, open_log
    from strata.streams.replay import publish

    try:
        source = open_log(args.events, args.format, catalog_path=args.catalog, limit=args.limit, seed=args.seed)
        catalog = list(source.catalog())
    except LoaderError as exc:
        raise CommandError(str(exc), 2) from None
    print(f"replaying {args.format} log {args.events} → {settings.kafka_bootstrap} (topics {settings.topic_prefix}*)")
    summary = asyncio.run(_with_broker(settings, publish(settings, catalog, source.events(), rate=args.rate, total=args.limit)))
    print(summary.line())
    return 0


def cmd_profile(args, settings: Settings) -> int:
    status, body = http_get(settings, f"/users/{urllib.parse.quote(args.user, safe='')}/profile")
    if status != 200:
        raise CommandError(body.get("error", f"HTTP {status}"))
    print(json.dumps(body, indent=2))
    return 0


def cmd_train(args, settings: Settings) -> int:
    import time

    from aiokafka.errors import KafkaError

    from strata.models.als import ALSParams
    from strata.streams.trainer import NothingToTrain, train_once

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
    if args.exclude_seen:
        query["exclude_seen"] = 1
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
    from strata.streams.benchmarks.common import BenchError
    from strata.streams.benchmarks.run import run

    if args.runs > 1 and args.what != "stream":
        raise CommandError(f"--runs is for `bench stream`; `bench {args.what}` runs once", 2)
    try:
        if args.what == "serve" and args.in_process:
            return run(args, settings)  # on the main thread, as a worker ranks: no broker involved
        return asyncio.run(_with_broker(settings, asyncio.to_thread(run, args, settings)))
    except BenchError as exc:
        raise CommandError(str(exc)) from None


def cmd_evaluate(args, settings: Settings) -> int:
    from strata.models.evaluation import prequential as ev
    from strata.models.ranking import format_rank_params, parse_rank_params
    from strata.models.als import ALSParams
    from strata.models.events import EVENT_TYPES
    from strata.models.logs.loaders import LoaderError, open_log
    from strata.models.evaluation.registry import MODEL_NAMES

    models = MODEL_NAMES if args.models == "all" else tuple(m.strip() for m in args.models.split(",") if m.strip())
    unknown = [m for m in models if m not in MODEL_NAMES]
    if not models or unknown:
        raise CommandError(f"unknown model(s) {', '.join(unknown) or '(none)'}; known: {', '.join(MODEL_NAMES)}", 2)
    for library, needed_for in (("river", "river-mf" in models and "--models river-mf"), ("matplotlib", args.plot and "--plot")):
        if needed_for and importlib.util.find_spec(library) is None:
            raise CommandError(f"{needed_for} needs {library}, which is not installed: pip install 'strata[eval]'", 2)
    targets = EVENT_TYPES if args.targets in ("all", "next-new") else tuple(t.strip() for t in args.targets.split(","))
    if args.exclude_purchased and args.exclude_seen:
        raise CommandError("--exclude-purchased and --exclude-seen exclude each other", 2)
    exclude = "purchased" if args.exclude_purchased else "seen" if args.exclude_seen else args.exclude
    try:
        protocol = ev.Protocol(k=args.k, targets=targets, next_new=args.targets == "next-new" or args.next_new,
                               warmup=args.warmup, until=args.until, cut=args.cut,
                               refit_every_s=args.refit_every, exclude=exclude, target_sample=args.target_sample)
        rank_params = parse_rank_params(args.rank_params)
        als_params = ALSParams(factors=args.factors, iterations=args.iterations, seed=args.seed)
        if not args.tune_sample > 0:
            raise ValueError("--tune-sample must be greater than 0")
        knobs = None if not args.tune_knobs else [k.strip() for k in args.tune_knobs.split(",")]
        if knobs is not None and (not knobs or set(knobs) - set(ev.TUNING_GRID)):
            raise ValueError(f"--tune-knobs takes some of {', '.join(ev.TUNING_GRID)}")
        if args.tune and args.warmup < 0.5:
            raise ValueError("--warmup must be ≥ 0.5 with --tune, which tunes on the first half of the log")
        source = open_log(args.events, args.format, catalog_path=args.catalog, limit=args.limit, seed=args.seed)
        dataset = ev.load_dataset(source)
        if not dataset.events:
            raise ValueError(f"{args.events}: no valid events")
    except (ValueError, LoaderError) as exc:
        raise CommandError(str(exc), 2) from None
    progress = not args.no_progress
    print(f"evaluating {dataset.name}: {len(dataset.events):,} events, {dataset.items:,} items", file=sys.stderr)
    extra, tuning = {}, None
    if args.tune:
        tuned, trail = ev.tune(dataset, protocol, start=rank_params, als_params=als_params, progress=progress,
                               target_sample=args.tune_sample, knobs=knobs, log=lambda line: print(line, file=sys.stderr))
        extra = {"strata-fixed-tuned": tuned}
        tuning = {"window": "warm-up: the first 1/4 of the events in time order, tested: the second 1/4", "target_sample": args.tune_sample, "knobs": knobs or list(ev.TUNING_GRID), "trail": trail,
                  "rank_params": format_rank_params(tuned)}
    result = ev.evaluate(dataset, models, protocol, rank_params=rank_params, als_params=als_params,
                         seed=args.seed, progress=progress, extra=extra)
    result["parameters"] = {"rank_params": format_rank_params(rank_params) or "defaults",
                            "command": "strata " + " ".join(sys.argv[1:]) if sys.argv else None}
    if tuning is not None:
        result["tuning"] = tuning
        print(f"tuned rank params: --rank-params '{tuning['rank_params']}'", file=sys.stderr)
    print(ev.format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    if args.plot:
        ev.plot_timeline(result, args.plot)
    return 0


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} must be a fraction between 0 and 1")
    return value


def cmd_forget(args, settings: Settings) -> int:
    from strata.models.events import InvalidEvent
    from strata.streams.replay import send_forget

    known = _has_profile(settings, args.user)
    try:
        partition, offset = asyncio.run(_with_broker(settings, send_forget(settings, args.user)))
    except InvalidEvent as exc:
        raise CommandError(f"user id: {exc.detail}", 2) from None
    print(
        f"forget {args.user!r}: control record at {settings.topic('events')}[{partition}]@{offset}; the worker owning the "
        "user deletes the profile and user vector (tombstones through the changelogs), the next `strata train` "
        "drops the user's earlier events; the raw events stay on the events topic until its retention ends"
    )
    if known is False:
        print(f"note: the workers held no profile for {args.user!r} (a mistyped id?); the record was sent all the same",
              file=sys.stderr)
    return 0


def _has_profile(settings: Settings, user: str) -> bool | None:
    """Whether the running workers hold a profile for `user`; None when no worker answers."""
    try:
        status, _ = http_get(settings, f"/users/{urllib.parse.quote(user, safe='')}/profile", timeout=5.0)
    except CommandError:
        return None
    return status == 200 if status in (200, 404) else None


def cmd_model(args, settings: Settings) -> int:
    """`strata model pin VERSION|unpin|status`: which item-factor version the workers serve."""
    if args.action == "status":
        status, body = http_get(settings, "/model")
        if status != 200:
            raise CommandError(body.get("error", f"HTTP {status}"))
        pinned = body["pinned"]
        print(f"serving version {body['version']} ({body['items']:,} items × {body['dims']}); "
              + (f"pinned to {pinned}" if pinned is not None else "not pinned: the newest valid version is served"))
        for line in body["refused"]:
            print(f"refused: {line}")
        return 0
    if (args.action == "pin") != (args.version is not None):
        raise CommandError("`strata model pin` takes a VERSION; `unpin` and `status` take none", 2)
    from strata.models.factors import CorruptFactors
    from strata.streams.replay import send_pin

    try:
        offset = asyncio.run(_with_broker(settings, send_pin(settings, args.version)))
    except CorruptFactors as exc:
        raise CommandError(str(exc), 2) from None
    what = f"pinned to version {args.version}" if args.version is not None else "unpinned: the newest valid version"
    print(f"item factors {what}: control record at {settings.topic('item-factors')}@{offset}; every worker reads the "
          "topic again and swaps the version in once it has it whole (`strata model status` on a worker says which it serves)")
    return 0


def cmd_ab(args, settings: Settings) -> int:
    """`strata ab report`: the A/B comparison from the topics; `strata ab simulate`: a simulated shop
    that acts on the running workers' lists (the feedback figure of docs/design.md §7)."""
    from strata.models.ab import format_report
    from strata.streams.experiments import ab_report, simulate

    if args.action == "simulate":
        import aiohttp

        urls = args.url or [settings.web_url]
        try:
            result = asyncio.run(_with_broker(settings, simulate(settings, urls, args.users, args.items, args.history,
                                                                 args.lists, args.concurrency, args.seed)))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise CommandError(f"the workers at {', '.join(urls)} did not answer ({exc or type(exc).__name__}); is `strata worker` running?") from None
        for name, v in result["variants"].items():
            quarters = " ".join("–" if r is None else f"{r:.3f}" for r in v["acted_per_list_by_quarter"])
            print(f"{name:<12} lists {v['lists']:>7,}  acted on {v['acted']:>6,}  per list by quarter: {quarters}")
        if result["failed"]:
            print(f"{result['failed']:,} requests failed")
    else:
        result = asyncio.run(_with_broker(settings, ab_report(settings)))
        read = result["read"]
        print(f"read {read['impressions']:,} impressions and {read['attributions']:,} attributed events "
              f"({settings.topic('impressions')}, {settings.topic('attributions')})")
        if read["variants_not_configured"]:
            print(f"left out, not in STRATA_VARIANTS: {', '.join(read['variants_not_configured'])}")
        print(format_report(result))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)
    return 0


def cmd_topics(args, settings: Settings) -> int:
    from strata.streams.topics import check_topics

    problems = asyncio.run(_with_broker(settings, check_topics(settings, create=not args.check)))
    if problems:
        raise CommandError("; ".join(problems))
    print(f"topics {settings.topic_prefix}* present with the expected partition counts (events: {settings.partitions})")
    return 0


def cmd_demo(args, settings: Settings) -> int:
    from strata.streams.demo import run_demo

    return run_demo(args, settings)


class KafkaLog(logging.Handler):
    """aiokafka's warnings and errors during a command (it logs why a connection failed, then raises
    a bare "unable to bootstrap"): kept, not printed, so that a failure is explained in one line."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.last: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.last = record.getMessage()

    def install(self) -> None:
        logger = logging.getLogger("aiokafka")
        logger.addHandler(self)
        logger.propagate = False

    def uninstall(self) -> None:
        logger = logging.getLogger("aiokafka")
        logger.removeHandler(self)
        logger.propagate = True


kafka_log = KafkaLog()


def broker_problem(settings: Settings, reason: str | None) -> str:
    """One line on why Kafka could not be used, from aiokafka's last logged reason."""
    where = f"Kafka at {settings.kafka_bootstrap}"
    if reason and ("SaslAuthenticationFailed" in reason or "Authentication failed" in reason):
        return (f"{where} refused the credentials of user {settings.sasl_username!r} ({settings.sasl_mechanism}): "
                "authentication failed; check STRATA_KAFKA_SASL_USERNAME and STRATA_KAFKA_SASL_PASSWORD")
    if reason and ("CERTIFICATE_VERIFY_FAILED" in reason or "SSL" in reason):
        return f"the TLS handshake with {where} failed ({reason[:200]}); check STRATA_KAFKA_SSL_CAFILE and STRATA_KAFKA_SECURITY_PROTOCOL"
    detail = f" ({reason[:200]})" if reason else ""
    return f"cannot reach {where}{detail}; start the local broker with `strata kafka start` or set STRATA_KAFKA_BOOTSTRAP"


async def _with_broker(settings: Settings, coro):
    from aiokafka.errors import KafkaConnectionError

    try:
        return await coro
    except KafkaConnectionError:
        raise CommandError(broker_problem(settings, kafka_log.last)) from None


# -- parser -------------------------------------------------------------------
def settings_help() -> str:
    """Every STRATA_* setting with its default and meaning, wrapped for a terminal."""
    import textwrap

    from strata.streams.config import ENV_DOC

    lines = []
    for name, (default, meaning) in ENV_DOC.items():
        lines.append(f"  {name}={default}" if default else f"  {name} (unset)")
        lines += textwrap.wrap(meaning, 96, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)


def _add_worker(sub) -> None:
    p = sub.add_parser("worker", help="run the Faust worker (agents, tables, HTTP views)",
                       description="Run the Faust worker: the profile agent, the tables, the feeds and the HTTP views.\n"
                                   "It takes no arguments; its settings are environment variables (below).",
                       epilog=settings_help(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=cmd_worker)


def _add_replay(sub, formats: tuple[str, ...]) -> None:
    p = sub.add_parser("replay", help="publish a log's catalog and events onto the topics")
    p.add_argument("--events", required=True, help="the log: a file or directory, by format")
    p.add_argument("--format", required=True, choices=formats)
    p.add_argument("--catalog", help="catalog as NDJSON (default: derived from the log)")
    p.add_argument("--limit", type=_positive_int, help="send at most N events")
    p.add_argument("--rate", type=_positive_float, help="at most R events per second (default: as fast as possible)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic generator")
    p.set_defaults(func=cmd_replay)


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="fit ALS on a snapshot of the events topic and publish the factors")
    p.add_argument("--every", type=_duration, help="repeat on this schedule (e.g. 15m, 1h); survives broker hiccups")
    p.add_argument("--factors", type=_positive_int, default=ALS_DEFAULTS.factors, help="(default %(default)s)")
    p.add_argument("--regularization", type=float, default=ALS_DEFAULTS.regularization, help="(default %(default)s)")
    p.add_argument("--alpha", type=float, default=ALS_DEFAULTS.alpha, help="confidence c = 1 + alpha * w (default %(default)s)")
    p.add_argument("--iterations", type=_positive_int, default=ALS_DEFAULTS.iterations, help="(default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_train)


def _add_profile(sub) -> None:
    p = sub.add_parser("profile", help="show a user's live profile (asks the running workers)")
    p.add_argument("user")
    p.set_defaults(func=cmd_profile)


def _add_recommend(sub) -> None:
    p = sub.add_parser("recommend", help="a user's live recommendations (asks the running workers)")
    p.add_argument("user")
    p.add_argument("--k", type=_positive_int, default=10)
    p.add_argument("--category", help="only items of this category")
    p.add_argument("--exclude-seen", action="store_true", help="leave out every item the user touched")
    p.add_argument("--json", action="store_true", help="print the raw JSON answer")
    p.set_defaults(func=cmd_recommend)


def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks (print JSON and a one-line summary)")
    p.add_argument("what", choices=["serve", "stream", "train", "recovery", "profiles", "ingest"])
    p.add_argument("--events", type=_positive_int, help="stream: synthetic events in the backlog (default 300000); "
                                                         "recovery: events (default 300000); ingest: events posted (default 50000)")
    p.add_argument("--batch", type=_positive_int, default=100, help="ingest: events a request (1: POST /events; more: POST /events:batch)")
    p.add_argument("--workers", type=_positive_int, default=1, help="stream: worker processes in the group")
    p.add_argument("--rate", type=_positive_float, default=2_000.0, help="stream: offered events/s of the latency phase")
    p.add_argument("--runs", type=_positive_int, default=1, help="stream: runs one after the other, each on fresh topics; the JSON keeps each and their median and range")
    p.add_argument("--in-process", action="store_true", help="rank in this process, no HTTP")
    p.add_argument("--items", type=_positive_int, default=250_000)
    p.add_argument("--dims", type=_positive_int, help=f"serve: factors of the in-process model (default 64, docs/design.md §7); train: ALS factors (default {ALS_DEFAULTS.factors})")
    p.add_argument("--requests", type=_positive_int, help="serve: requests measured (default 500 in-process, 5000 over HTTP)")
    p.add_argument("--url", action="append",
                   help="serve, ingest: a worker's URL (default: STRATA_WEB_HOST/PORT); repeat it to spread the clients over several workers")
    p.add_argument("--concurrency", type=_positive_int, default=16, help="serve, ingest: requests in flight (in-process: also ranked this many at a time, as a worker batches concurrent requests)")
    p.add_argument("--k", type=_positive_int, default=10, help="serve: recommendations per request")
    p.add_argument("--users", type=_positive_int, help="serve: ask for users PREFIX0…PREFIX(N-1) (default 1000); stream: users of the synthetic log (default 20000, docs/design.md §7); recovery: users (default 100000)")
    p.add_argument("--user-prefix", default="u", help="serve: user id prefix (synthetic logs use u)")
    p.add_argument("--log", help="train: a shipped log to fit ALS on; profiles: the log whose profiles are measured (with --format)")
    p.add_argument("--format", default="taobao", help="train, profiles: format of --log")
    p.add_argument("--iterations", type=_positive_int, default=ALS_DEFAULTS.iterations, help=f"train: ALS iterations (default {ALS_DEFAULTS.iterations})")
    p.add_argument("--synthetic-users", type=_positive_int, default=1_000_000)
    p.add_argument("--synthetic-items", type=_positive_int, default=250_000)
    p.add_argument("--synthetic-events", type=int, default=10_000_000, help="train: synthetic events (0 skips)")
    p.add_argument("--snapshot-events", type=int, default=0, help="train: also time the Kafka snapshot read of N events (needs a broker)")
    p.add_argument("--json", metavar="OUT", help="also write the JSON to this file")
    p.set_defaults(func=cmd_bench)


def _add_forget(sub) -> None:
    p = sub.add_parser("forget", help="forget a user: delete the live profile everywhere and drop them from training")
    p.add_argument("user")
    p.set_defaults(func=cmd_forget)


def _add_model(sub) -> None:
    p = sub.add_parser("model", help="which item-factor version the workers serve: pin one, unpin, or show the status")
    p.add_argument("action", choices=("pin", "unpin", "status"))
    p.add_argument("version", nargs="?", type=int, help="pin: the version to serve (as /metrics' strata_model_version)")
    p.set_defaults(func=cmd_model)


def _add_evaluate(sub, formats: tuple[str, ...]) -> None:
    p = sub.add_parser("evaluate", help="prequential evaluation of Strata against baselines (docs/design.md §6)")
    p.add_argument("--events", required=True, help="the log: a file or directory, by format")
    p.add_argument("--format", required=True, choices=formats)
    p.add_argument("--catalog", help="catalog as NDJSON (default: derived from the log)")
    p.add_argument("--k", type=_positive_int, default=10, help="list length K (default 10)")
    p.add_argument("--targets", default="next-new",
                   help="'next-new' (default, docs/design.md §6: every event whose item differs from the user's previous item), "
                        "'all' (every event), or event types, comma-separated")
    p.add_argument("--next-new", action="store_true", help="with --targets TYPES: only those whose item differs from the user's previous item")
    p.add_argument("--warmup", type=_fraction, default=0.3, help="share of the log (see --cut) that only trains (default 0.3)")
    p.add_argument("--until", type=_fraction, default=1.0, help="stop after this share of the log (default 1)")
    p.add_argument("--cut", choices=("time", "events"), default="time", help="--warmup and --until are shares of the time span (default) or of the events")
    p.add_argument("--refit-every", type=_duration, default=None, help="ALS re-fit schedule in event time (default: the log's span / 20)")
    p.add_argument("--exclude", choices=("in-view", "none", "purchased", "seen"), default="in-view",
                   help="the candidate filter of every model (default in-view: the user's previous item)")
    p.add_argument("--models", default="all", help="comma-separated models, or 'all'")
    p.add_argument("--exclude-purchased", action="store_true", help="filter each user's past purchases, for every model")
    p.add_argument("--exclude-seen", action="store_true", help="filter every item the user has seen, for every model")
    p.add_argument("--rank-params", help="Strata's RankParams overrides, e.g. 'item_own_weight=3,base_weights=0.6/0.2/0.2'")
    p.add_argument("--tune", action="store_true", help="tune the hand-weighted scorer on the first half of the log and add 'strata-fixed-tuned'")
    p.add_argument("--target-sample", type=_fraction, default=1.0, help="share of the targets scored (default 1; a fixed sample by event-id hash)")
    p.add_argument("--tune-sample", type=_fraction, default=1.0, help="share of the tuning window's targets scored (default 1; by event-id hash)")
    p.add_argument("--tune-knobs", help="tune only these knobs (comma-separated; default all of models.evaluation.prequential.TUNING_GRID)")
    p.add_argument("--factors", type=_positive_int, default=ALS_DEFAULTS.factors, help=f"ALS factors (default {ALS_DEFAULTS.factors})")
    p.add_argument("--iterations", type=_positive_int, default=ALS_DEFAULTS.iterations, help=f"ALS iterations (default {ALS_DEFAULTS.iterations})")
    p.add_argument("--limit", type=_positive_int, help="read at most N events of the log")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="OUT", help="write the full result as JSON")
    p.add_argument("--plot", metavar="OUT.png", help="plot NDCG@K over time")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)


def _add_ab(sub) -> None:
    p = sub.add_parser("ab", help="A/B tests: the report of the variants (STRATA_VARIANTS), or a simulated shop acting on the workers' lists")
    p.add_argument("action", choices=("report", "simulate"))
    p.add_argument("--users", type=_positive_int, default=2_000, help="simulate: shoppers")
    p.add_argument("--items", type=_positive_int, default=5_000, help="simulate: items")
    p.add_argument("--history", type=_positive_int, default=60_000, help="simulate: events of the shop's history, replayed first")
    p.add_argument("--lists", type=_positive_int, default=20_000, help="simulate: recommendation lists asked for and acted on")
    p.add_argument("--concurrency", type=_positive_int, default=8, help="simulate: shoppers at once")
    p.add_argument("--seed", type=int, default=0, help="simulate: seed of the shop and its shoppers")
    p.add_argument("--url", action="append", help="simulate: a worker's URL (default: STRATA_WEB_HOST/PORT); repeat for several")
    p.add_argument("--json", metavar="OUT", help="also write the result as JSON")
    p.set_defaults(func=cmd_ab)


def _add_topics(sub) -> None:
    p = sub.add_parser("topics", help="create Strata's topics (idempotent) and check their partition counts")
    p.add_argument("--check", action="store_true", help="only check, create nothing")
    p.set_defaults(func=cmd_topics)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="broker, worker, a synthetic replay and live profiles on this machine")
    p.add_argument("--events", type=_positive_int, default=30_000, help="synthetic events to replay")
    p.add_argument("--users", type=_positive_int, default=2_000)
    p.add_argument("--rate", type=_positive_float, default=5_000.0, help="events per second")
    p.add_argument("--keep", action="store_true", help="leave the worker and broker running at the end")
    p.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    from strata.models.logs.loaders import FORMATS
    from strata.streams import kafka_local

    parser = argparse.ArgumentParser(prog="strata", description="Streaming three-layer interest profiles on Kafka.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    kafka_local.register(sub)
    _add_worker(sub)
    _add_replay(sub, FORMATS)
    _add_train(sub)
    _add_profile(sub)
    _add_recommend(sub)
    _add_bench(sub)
    _add_forget(sub)
    _add_model(sub)
    _add_evaluate(sub, FORMATS)
    _add_ab(sub)
    _add_topics(sub)
    _add_demo(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"strata: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command != "worker":  # (the worker installs it while it checks the broker)
        kafka_log.install()
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
