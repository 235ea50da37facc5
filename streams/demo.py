"""`strata demo`: the whole loop on one machine — broker, worker, a synthetic replay, live
profiles, a training run and explained recommendations."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import urllib.parse

from strata.streams.config import Settings

WATCHED = 3
DEMO_SPAN_S = 6 * 86_400


def _fmt_layer(weights: dict[str, float], n: int = 3) -> str:
    top = sorted(weights.items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k} {w:.2f}" for k, w in top) or "—"


def _show(settings: Settings, users: list[str], header: str) -> None:
    from strata.streams.client import http_get

    print(f"\n── {header} " + "─" * max(0, 60 - len(header)))
    for user in users:
        status, body = http_get(settings, f"/users/{urllib.parse.quote(user, safe='')}/profile")
        if status != 200:
            print(f"  user {user}: {body.get('error', status)}")
            continue
        layers = body["layers"]
        print(f"  user {user}  ({body['events']} events, as of {time.strftime('%Y-%m-%d %H:%M', time.gmtime(body['as_of']))} UTC)")
        print(f"    overall  {_fmt_layer(layers['overall'])}")
        print(f"    domain   {_fmt_layer(layers['domain'])}")
        print(f"    item     {_fmt_layer(layers['item'])}")


def _wait_ready(settings: Settings, proc: subprocess.Popen, log_path: str, timeout: float = 60.0) -> None:
    from strata.streams.client import CommandError, http_get

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CommandError(f"the worker exited with status {proc.returncode}; see {log_path}")
        try:
            status, body = http_get(settings, "/healthz", timeout=2)
            if status == 200:
                return
        except CommandError:
            pass
        time.sleep(0.25)
    raise CommandError(f"the worker was not ready within {timeout:.0f}s; see {log_path}")


def _wait_for(condition, timeout: float, what: str) -> None:
    from strata.streams.client import CommandError

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise CommandError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)


def _handled(settings: Settings) -> dict[str, float]:
    """Events the worker has applied, dropped as duplicates and dead-lettered, from its metrics."""
    import urllib.request

    with urllib.request.urlopen(settings.web_url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    out = {"processed": 0.0, "duplicate": 0.0, "deadlettered": 0.0}
    for line in text.splitlines():
        for name in out:
            if line.startswith(f"strata_events_{name}_total"):
                out[name] += float(line.rsplit(" ", 1)[1])
    return out


def _train_and_recommend(settings: Settings, users: list[str]) -> None:
    """One `strata train` run, then the watched users' recommendations once the worker has swapped the model in."""
    from strata.models.als import ALSParams
    from strata.streams.client import http_get
    from strata.streams.trainer import train_once

    print("\n── training ALS on the events topic " + "─" * 26)
    report = asyncio.run(train_once(settings, ALSParams(), progress=lambda line: print("  " + line)))
    for line in report.lines():
        print("  " + line)

    def recommendations(user: str) -> dict | None:
        status, body = http_get(settings, f"/users/{urllib.parse.quote(user, safe='')}/recommendations?k=5&explain=1")
        return body if status == 200 and body.get("model_version") == report.version else None

    _wait_for(lambda: recommendations(users[0]), 60, f"the worker to swap in model version {report.version}")
    for user in users:
        body = recommendations(user)
        if body is None:
            continue
        print(f"\n  top 5 for {user} (model version {body['model_version']}):")
        for rank, item in enumerate(body["items"], 1):
            layers = " ".join(f"{k} {v:.2f}" for k, v in item["layers"].items())
            because = "; ".join(item.get("because", []))
            print(f"   {rank}. {item['item_id']:<8} {item['score']:.2f}  [{layers}]  {because}")


def run_demo(args, settings: Settings) -> int:
    from strata.models.logs.loaders import open_log
    from strata.streams import kafka_local
    from strata.streams.client import http_get
    from strata.streams.replay import publish

    started = time.monotonic()
    kafka_local.run("start", port=kafka_local.bootstrap_address(settings.kafka_bootstrap)[1])

    log_dir = settings.data_dir.parent
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = str(log_dir / "demo-worker.log")
    print(f"starting a worker (log: {log_path}) …")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "strata.streams", "worker"], stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    try:
        _wait_ready(settings, proc, log_path)
        print(f"worker ready at {settings.web_url} after {time.monotonic() - started:.1f}s")

        # The same events every run (seeded ids and times, six days: within the de-duplication
        # horizon), so a second demo on the same broker is dropped as duplicates: the same profiles.
        source = open_log(f"users={args.users},items={args.users * 3},events={args.events},duration_s={DEMO_SPAN_S}",
                          "synthetic", seed=42)
        events = list(source.events())
        catalog = list(source.catalog())
        users: list[str] = []
        for e in events:  # the first few distinct shoppers, whose profiles we watch fill up
            if e["user_id"] not in users:
                users.append(e["user_id"])
            if len(users) == WATCHED:
                break

        print(f"publishing the catalog ({len(catalog):,} items and categories) …")
        asyncio.run(publish(settings, catalog, [], progress=False))
        _wait_for(lambda: http_get(settings, "/healthz")[1].get("catalog_entries", 0) >= len(catalog), 120, "the catalog to load")

        print(f"replaying {len(events):,} synthetic events at {args.rate:,.0f}/s …")
        result: dict = {}
        replay = threading.Thread(
            target=lambda: result.update(summary=asyncio.run(publish(settings, [], events, rate=args.rate, progress=False)))
        )
        replay.start()
        while replay.is_alive():
            replay.join(timeout=2.0)
            _show(settings, users, f"live profiles at +{time.monotonic() - started:.0f}s")
        if "summary" in result:
            print("\n" + result["summary"].line())
            # Every event sent is applied, dropped as a duplicate or dead-lettered.
            _wait_for(lambda: sum(_handled(settings).values()) >= result["summary"].sent, 120, "the worker to catch up")
            handled = _handled(settings)
            print(f"applied {handled['processed']:,.0f}, dropped as already applied {handled['duplicate']:,.0f}, "
                  f"dead-lettered {handled['deadlettered']:,.0f}"
                  + (" (a demo ran on this broker before: its events count once)" if handled["duplicate"] else ""))
        _show(settings, users, "final profiles")
        _train_and_recommend(settings, users)
        status, health = http_get(settings, "/healthz")
        print(f"\nworker health: {health}")
        print(f"\nTry:  curl {settings.web_url}/users/{users[0]}/profile   ·   strata recommend {users[0]}   ·   curl {settings.web_url}/metrics")
        if args.keep:
            print(f"\nThe worker (pid {proc.pid}) and the broker keep running; stop them with `kill {proc.pid}` and `strata kafka stop`.")
            return 0
        if sys.stdin.isatty():
            try:
                input("\nPress Enter to stop the worker (the broker keeps running; `strata kafka stop` stops it) … ")
            except EOFError:
                pass
        return 0
    finally:
        if not args.keep and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
