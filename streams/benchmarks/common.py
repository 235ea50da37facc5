"""`strata bench stream|serve|train|recovery`: the benchmarks of docs/design.md §7.

Every bench prints one JSON object (with `machine`: cores, memory, Python, library versions) on
stdout, writes it to `--json OUT` if asked, and a one-line summary on stderr.  Figures measured on
a shared 2-core machine are noisy; docs/RESULTS.md records them with the command, machine and date.
"""
from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import numpy as np

from strata.streams.config import Settings
from strata.streams.topics import delete_app_topics

LIBRARIES = ("faust-streaming", "aiokafka", "rocksdict", "numpy", "scipy", "implicit", "aiohttp", "orjson", "msgpack")


class BenchError(Exception):
    """A benchmark that cannot run (no worker, no model, bad sizes): one line, exit status 1."""


def machine_info() -> dict:
    """Cores, memory, Python and the versions of the libraries on the measured paths."""
    from importlib import metadata

    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        mem = None
    libraries = {}
    for name in LIBRARIES:
        try:
            libraries[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libraries[name] = None
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cores": os.cpu_count(),
        "usable_cores": affinity,
        "memory_bytes": mem,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "libraries": libraries,
        "load_average_at_start": load,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def percentiles_ms(samples_s: list[float]) -> dict:
    a = np.asarray(samples_s, dtype=np.float64) * 1000.0
    return {q: round(float(np.percentile(a, p)), 3) for q, p in (("p50", 50), ("p95", 95), ("p99", 99))} | {"max": round(float(a.max()), 3)}


# -- serve over HTTP -------------------------------------------------------------------------------


def _get_json(url: str, headers: dict[str, str], timeout: float = 10.0) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError) as exc:
        raise BenchError(f"no Strata worker answers at {url} ({getattr(exc, 'reason', exc)}); start one with `strata worker`") from None


async def _serve_http(bases: list[str], users: list[str], requests: int, concurrency: int, k: int, warmup: int,
                      headers: dict[str, str]) -> dict:
    """`concurrency` clients, client i sending to `bases[i % len(bases)]` over its own keep-alive
    connection; each worker's /metrics is read before and after the timed run."""
    import aiohttp

    rng = random.Random(0)
    paths = [f"/users/{u}/recommendations?k={k}" for u in users]
    latencies: list[float] = []
    errors: dict[int, int] = {}

    timeout = aiohttp.ClientTimeout(total=30)
    per_worker = -(-concurrency // len(bases))
    sessions = [aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=per_worker), timeout=timeout, headers=headers)
                for base in bases]
    try:

        async def run(n: int, record: bool) -> float:
            queue = [paths[rng.randrange(len(paths))] for _ in range(n)]
            queue.reverse()

            async def client(session) -> None:
                while queue:
                    path = queue.pop()
                    t0 = time.perf_counter()
                    async with session.get(path) as response:
                        await response.read()
                        status = response.status
                    took = time.perf_counter() - t0
                    if record:
                        if status == 200:
                            latencies.append(took)
                        else:
                            errors[status] = errors.get(status, 0) + 1

            started = time.perf_counter()
            await asyncio.gather(*(client(sessions[i % len(sessions)]) for i in range(concurrency)))
            return time.perf_counter() - started

        await run(warmup, record=False)  # connections, caches; same concurrency
        before, client_cpu = [await _worker_metrics(s) for s in sessions], time.process_time()
        elapsed = await run(requests, record=True)
        client_cpu = time.process_time() - client_cpu
        after = [await _worker_metrics(s) for s in sessions]
    finally:
        for session in sessions:
            await session.close()
    before_total, after_total = summed(before), summed(after)
    return {"latencies": latencies, "errors": errors, "elapsed": elapsed,
            "worker_cpu": (thread_cpu(before), thread_cpu(after)),
            "standby_share": counter_share("strata_recommendations_from_standby_total", before_total, after_total),
            "client_cpu": client_cpu}


async def _worker_metrics(session) -> dict[str, float]:
    """The worker's /metrics, parsed ({} if it does not answer)."""
    async with session.get("/metrics") as response:
        text = await response.text() if response.status == 200 else ""
    return parse_metrics(text)


def summed(scrapes: list[dict[str, float]]) -> dict[str, float]:
    """Several workers' parsed /metrics as one: each series summed."""
    out: dict[str, float] = {}
    for series in scrapes:
        for name, value in series.items():
            out[name] = out.get(name, 0.0) + value
    return out


def counter_share(name: str, before: dict[str, float], after: dict[str, float]) -> float | None:
    """The share of the requests ranked between two scrapes of /metrics that counter `name` counted
    (e.g. answered by a factor-norm bound without a dense pass, or from a standby copy); None when
    none were ranked or the worker does not count them."""
    ranked = after.get("strata_recommendations_total", 0.0) - before.get("strata_recommendations_total", 0.0)
    if ranked <= 0 or name not in after:
        return None
    return round((after[name] - before.get(name, 0.0)) / ranked, 4)


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → {series: value}, the labels kept in the series name."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


_THREAD_LABEL = re.compile(r'thread="((?:[^"\\]|\\.)*)"')  # a label value, escapes included


def thread_cpu(scrapes: list[dict[str, float]]) -> dict[str, float]:
    """CPU seconds by thread name (`strata_thread_cpu_seconds_total`), summed over workers' scrapes."""
    out: dict[str, float] = {}
    for k, v in summed(scrapes).items():
        if k.startswith("strata_thread_cpu_seconds_total{"):
            label = _THREAD_LABEL.search(k)
            if label:
                name = re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], label[1])
                out[name] = out.get(name, 0.0) + v
    return out


def cpu_per_unit(before: dict[str, float], after: dict[str, float], units: int, client_cpu: float | None,
                 shared_cores: int | None, loops: int = 1) -> dict:
    """CPU ms per unit of work (a request, an event) of each worker thread that worked between
    two readings of its CPU seconds by thread (`thread_cpu`, summed over workers) and of the
    client, and the rate each bound allows: the event loop's (its Python holds the GIL; with
    `loops` workers sharing the work evenly, theirs together) and, when the client shares the
    workers' machine, the cores'."""
    spent = {name: s - before.get(name, 0.0) for name, s in after.items()}
    worker = {name: round(s / units * 1000, 4) for name, s in sorted(spent.items(), key=lambda kv: -kv[1]) if s > 0}
    out: dict = {"worker_ms": worker, "bound_per_s": {}}
    if client_cpu is not None:
        out["client_ms"] = round(client_cpu / units * 1000, 4)
    if worker.get("main"):
        out["bound_per_s"]["event_loop" if loops == 1 else f"{loops}_event_loops"] = round(loops * 1000 / worker["main"], 1)
    if shared_cores and worker:
        out["bound_per_s"][f"{shared_cores}_cores"] = round(shared_cores * 1000 / (sum(worker.values()) + out.get("client_ms", 0.0)), 1)
    return out


def bench_serve_http(settings: Settings, *, urls: list[str] | None, users: int, user_prefix: str, requests: int,
                     concurrency: int, k: int, warmup: int = 200) -> dict:
    """Recommendation requests over HTTP against running workers, `concurrency` at a time spread
    evenly over `urls` (default: this machine's STRATA_WEB_HOST/PORT), for users
    `{user_prefix}0 … {user_prefix}{users-1}` in random order.  Needs a loaded model."""
    bases = [url.rstrip("/") for url in (urls or [settings.web_url])]
    if len(set(bases)) != len(bases):
        raise BenchError(f"--url given twice: {', '.join(bases)}")
    if concurrency < len(bases):
        raise BenchError(f"--concurrency {concurrency} is less than the {len(bases)} URLs: some worker would get no client")
    partitions: dict[str, list] = {}
    for base in bases:
        status, health = _get_json(base + "/healthz", settings.auth_headers())
        if status != 200:
            raise BenchError(f"the worker at {base} is not ready (/healthz {status})")
        partitions[base] = health.get("partitions")
        status, probe = _get_json(f"{base}/users/{user_prefix}0/recommendations?k={k}", settings.auth_headers())
        if status != 200:
            raise BenchError(f"{base}/users/{user_prefix}0/recommendations answered {status}")
        if probe.get("model_version") is None:
            raise BenchError(f"the worker at {base} serves no factor model yet: run `strata train` first")
    ids = [f"{user_prefix}{n}" for n in range(users)]
    run = asyncio.run(_serve_http(bases, ids, requests, concurrency, k, warmup, settings.auth_headers()))
    ok = len(run["latencies"])
    if not ok:
        raise BenchError(f"no request succeeded: {run['errors']}")
    local = all(urllib.parse.urlsplit(base).hostname in ("127.0.0.1", "localhost", "::1") for base in bases)
    return {
        "requests": ok,
        "errors": run["errors"],
        "req_per_s": round(ok / run["elapsed"], 1),
        "latency_ms": percentiles_ms(run["latencies"]),
        "cpu_per_request": cpu_per_unit(*run["worker_cpu"], requests, run["client_cpu"], os.cpu_count() if local else None,
                                        loops=len(bases)),
        "from_standby": run["standby_share"],
        "concurrency": concurrency,
        "k": k,
        "users": users,
        "url": bases[0] if len(bases) == 1 else bases,
        "model_version": probe.get("model_version"),
        "worker_partitions": partitions[bases[0]] if len(bases) == 1 else partitions,
        "note": "client and workers share the machine's cores" if local else "the workers run elsewhere",
        "machine": machine_info(),
    }


# -- ingest over HTTP ------------------------------------------------------------------------------


async def _ingest_http(base: str, headers: dict[str, str], bodies: list[bytes], batch: int, concurrency: int) -> dict:
    """`concurrency` clients posting the bodies, each over its own keep-alive connection."""
    import aiohttp

    path = "/events" if batch == 1 else "/events:batch"
    latencies: list[float] = []
    errors: dict[int, int] = {}
    accepted = 0
    queue = list(reversed(bodies))
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(base, connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout,
                                     headers={**headers, "Content-Type": "application/json"}) as session:

        async def client() -> None:
            nonlocal accepted
            while queue:
                body = queue.pop()
                t0 = time.perf_counter()
                async with session.post(path, data=body) as response:
                    answer = await response.json(content_type=None)
                    status = response.status
                latencies.append(time.perf_counter() - t0)
                if status in (200, 202):
                    accepted += answer["accepted"] if status == 200 else 1
                else:
                    errors[status] = errors.get(status, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"accepted": accepted, "elapsed": elapsed, "latencies": latencies, "errors": errors}


def bench_ingest_http(settings: Settings, *, url: str, events: int, batch: int, concurrency: int) -> dict:
    """Synthetic events (fresh ids each run) posted to a running worker, `batch` a request."""
    import orjson

    from strata.models.logs.loaders import open_log

    base = url.rstrip("/")
    status, health = _get_json(base + "/healthz", settings.auth_headers())
    if status != 200:
        raise BenchError(f"the worker at {base} is not ready (/healthz {status})")
    run = f"ingest-{int(time.time())}"
    log = [{**e, "event_id": f"{run}-{e['event_id']}"} for e in
           open_log(f"users={max(events // 15, 1)},items=5000,events={events}", "synthetic", seed=11).events()]
    bodies = [orjson.dumps(log[i] if batch == 1 else log[i:i + batch]) for i in range(0, len(log), batch)]
    result = asyncio.run(_ingest_http(base, settings.auth_headers(), bodies, batch, concurrency))
    if not result["accepted"]:
        raise BenchError(f"no event was accepted: {result['errors']}")
    return {
        "events": result["accepted"],
        "events_per_s": round(result["accepted"] / result["elapsed"], 1),
        "requests": len(bodies),
        "batch": batch,
        "concurrency": concurrency,
        "latency_ms": percentiles_ms(result["latencies"]),
        "errors": result["errors"],
        "url": base,
        "note": "client and worker share the machine's cores",
        "machine": machine_info(),
    }


# -- train -----------------------------------------------------------------------------------------


def _fit_seconds(user_codes, item_codes, type_codes, ts, shape, params) -> dict:
    from strata.models.als import confidence_matrix, fit
    from strata.models.profile import ProfileParams

    t0 = time.perf_counter()
    Cui = confidence_matrix(user_codes, item_codes, type_codes, ts, params=ProfileParams(), as_of=float(ts.max()), alpha=params.alpha, shape=shape)
    t1 = time.perf_counter()
    fit(Cui, params)
    t2 = time.perf_counter()
    return {"matrix_s": round(t1 - t0, 3), "fit_s": round(t2 - t1, 3), "nnz": int(Cui.nnz)}


def bench_train_log(path: str, fmt: str, params) -> dict:
    from strata.models.als import encode_events
    from strata.models.events import parse_event
    from strata.models.logs.loaders import open_log

    t0 = time.perf_counter()
    source = open_log(path, fmt)
    events = [parse_event(e, time.time()) for e in source.events()]
    enc = encode_events(events)
    load_s = time.perf_counter() - t0
    out = {"log": str(path), "format": fmt, "events": len(enc.ts), "users": len(enc.user_ids), "items": len(enc.item_ids), "load_s": round(load_s, 3)}
    out.update(_fit_seconds(enc.user_codes, enc.item_codes, enc.type_codes, enc.ts, (len(enc.user_ids), len(enc.item_ids)), params))
    return out


def bench_profile_size(path: str, fmt: str, params) -> dict:
    """Encoded profile sizes (docs/design.md §7: ≤ 4 KiB at the default caps) after every event of a log,
    built in-process with models/ exactly as the workers store them."""
    import numpy as np

    from strata.models.catalog import Catalog
    from strata.models.events import parse_event
    from strata.models.logs.loaders import open_log
    from strata.models.profile import build_profiles

    from strata.models.logs.loaders import LoaderError

    try:
        source = open_log(path, fmt)
        catalog = Catalog.from_records(list(source.catalog()))
        now = time.time()
        profiles = build_profiles((parse_event(e, now) for e in source.events()), catalog, params)
    except LoaderError as exc:
        raise BenchError(str(exc)) from None
    if not profiles:
        raise BenchError(f"{path}: no valid events")
    interest = np.array([len(p.interest_bytes()) for p in profiles.values()])
    stored = np.array([len(p.to_bytes()) for p in profiles.values()])
    capped = [len(p.interest_bytes()) for p in profiles.values() if len(p.w["item"]) >= params.caps["item"]]

    def spread(sizes: np.ndarray) -> dict:
        return {"p50": int(np.percentile(sizes, 50)), "p99": int(np.percentile(sizes, 99)), "max": int(sizes.max()),
                "share_within_4KiB": round(float(np.mean(sizes <= 4096)), 4)}

    return {
        "log": str(path), "format": fmt, "users": len(profiles), "caps": dict(params.caps),
        # the capped interest layers (the 4 KiB target), and the whole record a worker stores: with
        # the ledgers of the exact de-duplication (ids of the horizon) and purchase filter, which grow
        # with a user's activity, not with the caps
        "interest_bytes": spread(interest), "stored_bytes": spread(stored),
        "users_at_item_cap": len(capped), "max_interest_bytes_at_item_cap": max(capped) if capped else None,
    }


def bench_train_synthetic(users: int, items: int, events: int, params, seed: int = 0) -> dict:
    """ALS on the synthetic generator's stream (numpy chunks, no dicts): users × items × events."""
    from strata.models.logs.synthetic import SyntheticConfig, build_world, iter_chunks

    config = SyntheticConfig(users=users, items=items, events=events, seed=seed)
    t0 = time.perf_counter()
    world = build_world(config)
    cols: dict[str, list] = {"user": [], "item": [], "type": [], "ts": []}
    for chunk in iter_chunks(config, world):
        for name in cols:
            cols[name].append(getattr(chunk, name))
    u, i, t, ts = (np.concatenate(cols[n]) for n in ("user", "item", "type", "ts"))
    gen_s = time.perf_counter() - t0
    out = {"users": users, "items": items, "events": int(len(u)), "generate_s": round(gen_s, 3),
           "users_seen": int(np.unique(u).size), "items_seen": int(np.unique(i).size)}
    out.update(_fit_seconds(u, i, t.astype(np.int64), ts.astype(np.float64), (users, items), params))
    return out


def bench_snapshot_read(settings: Settings, events: int, users: int, items: int) -> dict:
    """Produce `events` synthetic events to a throwaway topic prefix, then time `strata train`'s
    snapshot read (streams.trainer.read_snapshot) of them."""
    from strata.models.logs.loaders import open_log
    from strata.streams.replay import publish
    from strata.streams.trainer import read_snapshot

    tag = f"bench-snap-{uuid.uuid4().hex[:8]}"
    env = {"STRATA_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "STRATA_APP_ID": tag, "STRATA_TOPIC_PREFIX": f"{tag}.",
           "STRATA_PARTITIONS": str(settings.partitions)}
    s = Settings.from_env(env)
    source = open_log(f"users={users},items={items},events={events}", "synthetic")
    asyncio.run(publish(s, [], source.events(), progress=False))
    t0 = time.perf_counter()
    try:
        read, skipped = asyncio.run(read_snapshot(s))
        took = time.perf_counter() - t0
    finally:
        forget_topics(s)
    if len(read.ts) != events:
        raise BenchError(f"snapshot read {len(read.ts)} events of {events} produced")
    return {"events": events, "seconds": round(took, 3), "events_per_s": round(events / took, 1), "topic_prefix": s.topic_prefix}


# -- recovery --------------------------------------------------------------------------------------


class BenchWorker:
    """A `strata worker` subprocess of a benchmark, with its own environment, log and metrics."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env, self.log_path, self.proc, self.log = env, log_path, None, None
        settings = Settings.from_env(env)
        self.url, self.headers = settings.web_url, settings.auth_headers()

    def start(self) -> None:
        child = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")} | self.env
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "strata.streams", "worker"], env=child, stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, path: str) -> tuple[int, object]:
        try:
            with urllib.request.urlopen(urllib.request.Request(self.url + path, headers=self.headers), timeout=10) as response:
                body = response.read()
                return response.status, (json.loads(body) if path != "/metrics" else body.decode())
        except urllib.error.HTTPError as exc:
            return exc.code, {}
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            return 0, {}

    def memory(self) -> dict[str, int] | None:
        """The worker process's resident memory now and at its peak (Linux /proc; None elsewhere)."""
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except (OSError, AttributeError):
            return None
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        try:
            return {"rss_bytes": int(fields["VmRSS"].split()[0]) * 1024, "peak_rss_bytes": int(fields["VmHWM"].split()[0]) * 1024}
        except (KeyError, ValueError):
            return None

    def scrape(self) -> dict[str, float]:
        """The worker's /metrics as {series: value} (labels kept in the series name); {} while it
        does not answer; BenchError once the process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"worker exited ({self.proc.returncode}); log {self.log_path}")
        status, text = self.get("/metrics")
        return parse_metrics(str(text)) if status == 200 else {}

    def metric(self, name: str) -> float:
        """Sum of a metric over its labels; -1 while the worker does not answer."""
        series = self.scrape()
        if not series:
            return -1.0
        return sum(v for k, v in series.items() if k == name or k.startswith(name + "{"))

    def wait(self, condition, timeout: float, what: str) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.proc.poll() is not None:
                raise BenchError(f"worker exited ({self.proc.returncode}) while waiting for {what}; log {self.log_path}")
            if condition():
                return time.monotonic() - started
            time.sleep(0.1)
        raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}; log {self.log_path}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self.log is not None:
            self.log.close()
            self.log = None


def bench_recovery(settings: Settings, users: int, events: int, partitions: int, keep: bool = False) -> dict:
    """Replay `events` synthetic events of `users` users into a fresh worker, stop it, delete its data
    dir, start it again and time until /healthz is ok and every profile is back (from the changelog)."""
    from strata.models.logs.loaders import open_log
    from strata.streams.replay import publish

    tag = f"bench-recovery-{uuid.uuid4().hex[:8]}"
    root = Path(tempfile.mkdtemp(prefix="strata-bench-recovery-"))
    env = {"STRATA_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "STRATA_APP_ID": tag, "STRATA_TOPIC_PREFIX": f"{tag}.",
           "STRATA_PARTITIONS": str(partitions), "STRATA_DATA_DIR": str(root / "data"), "STRATA_LOG_LEVEL": "warning",
           "STRATA_WEB_PORT": str(free_port())}
    env.update(settings.security_env())
    s = Settings.from_env(env)
    source = open_log(f"users={users},items={max(2_000, users // 2)},events={events}", "synthetic")
    worker = BenchWorker(env, root / "worker.log")
    try:
        worker.start()
        worker.wait(lambda: worker.get("/healthz")[0] == 200, 120, "the first start")
        print(f"replaying {events:,} events of {users:,} users …", file=sys.stderr)
        summary = asyncio.run(publish(s, list(source.catalog()), source.events(), progress=False))
        worker.wait(lambda: worker.metric("strata_events_processed_total") >= summary.sent, 1800, "the replay to be processed")
        worker.wait(lambda: worker.metric("strata_consumer_lag_total") == 0, 300, "lag 0")
        profiles = int(worker.metric("strata_profiles_stored"))
        worker.stop()
        shutil.rmtree(root / "data")
        print(f"{profiles:,} profiles stored; data dir deleted, restarting …", file=sys.stderr)
        started = time.monotonic()
        worker.start()
        ready = worker.wait(lambda: worker.get("/healthz")[0] == 200, 1800, "recovery from the changelog")
        worker.wait(lambda: worker.metric("strata_profiles_stored") == profiles, 60, "every profile back")
        total = time.monotonic() - started
    finally:
        worker.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
            forget_topics(s)
    return {"profiles": profiles, "events": summary.sent, "partitions": partitions, "ready_s": round(ready, 2),
            "recovery_s": round(total, 2), "profiles_per_s": round(profiles / total, 1), "topic_prefix": s.topic_prefix,
            "note": "worker start (process, Faust, group join) included", "machine": machine_info()}


def forget_topics(settings: Settings) -> None:
    """A run's topics hold its events and changelogs (≈ 150 MB and ~60 partitions at 300,000
    events): left behind, repeated runs fill the broker's disk and slow it down."""
    try:
        asyncio.run(delete_app_topics(settings))
    except Exception as exc:  # the figures are measured; a broker that refuses is worth a line, not a failure
        print(f"could not delete the run's topics ({exc!r}); prefix {settings.topic_prefix}", file=sys.stderr)


def free_port() -> int:
    """A free TCP port on loopback, for a benchmark worker's HTTP views."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the command -----------------------------------------------------------------------------------


def cpu_line(cpu: dict, unit: str) -> str:
    """`CPU per request: worker main 2.38 ms, strata-answers 1.20 ms; client 0.47 ms · at most
    420/s (event loop), 490/s (2 cores)` from `cpu_per_unit`'s dict."""
    def amount(ms: float) -> str:
        return f"{ms:.2f} ms" if ms >= 0.1 else f"{ms * 1000:.1f} µs"

    line = f"CPU per {unit}: worker " + (", ".join(f"{name} {amount(ms)}" for name, ms in cpu["worker_ms"].items()
                                                   if ms * 1000 >= 0.5) or "not reported")
    if cpu.get("client_ms") is not None:
        line += f"; client {amount(cpu['client_ms'])}"
    if cpu["bound_per_s"]:
        line += " · at most " + ", ".join(f"{v:,.0f}/s ({k.replace('_', ' ')})" for k, v in cpu["bound_per_s"].items())
    return line
