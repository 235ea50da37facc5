"""Run real workers as subprocesses and talk to them the way users do: Kafka and HTTP."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Callable

from strata.streams.config import Settings

READY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def broker_port_pair(start: int = 19500) -> int:
    """A client port P for a test's own broker, with P + 1 (its controller) free as well.

    Taken below Linux's ephemeral range (32768+): an ephemeral port that is free now can be
    handed to some client socket before the broker binds it, or while the broker is stopped
    and restarted on the same pair.
    """
    for port in range(start, start + 400, 2):
        if _bindable(port) and _bindable(port + 1):
            return port
    raise RuntimeError(f"no two free consecutive ports in {start}-{start + 400} on 127.0.0.1")


class WorkerDied(AssertionError):
    """A worker process exited while a test waited on it: waiting longer cannot help."""


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout` seconds.
    A condition's errors count as "not yet" (a worker restarting does not answer), except
    `WorkerDied`, which fails at once with the worker's log."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except WorkerDied:
            raise
        except Exception as exc:  # noqa: BLE001 - remembered for the failure message
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last_error!r})" if last_error else ""))


def isolated_env(bootstrap: str, name: str, partitions: int = 4) -> dict[str, str]:
    """Environment of an isolated Strata deployment on a shared broker (own app id, topic prefix)."""
    app_id = f"t-{name}-{uuid.uuid4().hex[:8]}"
    return {
        "STRATA_KAFKA_BOOTSTRAP": bootstrap,
        "STRATA_APP_ID": app_id,
        "STRATA_TOPIC_PREFIX": f"{app_id}.",
        "STRATA_PARTITIONS": str(partitions),
        "STRATA_LOG_LEVEL": "warning",
    }


class Worker:
    """One `strata worker` process with its own data dir and web port."""

    def __init__(self, env: dict[str, str], data_dir: Path, port: int | None = None,
                 command: tuple[str, ...] = ("-m", "strata.streams", "worker")) -> None:
        self.command = command  # the arguments to Python that run the worker
        self.env = {**env, "STRATA_DATA_DIR": str(data_dir), "STRATA_WEB_PORT": str(port or free_port())}
        self.settings = Settings.from_env(self.env)
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"worker-{self.settings.web_port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return self.settings.web_url

    def spawn(self) -> None:
        """Start the process and return at once (`start` waits until it is ready)."""
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
        child_env.update(self.env)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, *self.command], env=child_env, stdout=self.log, stderr=subprocess.STDOUT)

    def start(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Start and wait until /healthz says ok; returns the seconds it took."""
        started = time.monotonic()
        self.spawn()
        wait_until(self._ready, timeout, f"worker on {self.url} to be ready; log: {self.log_path}")
        return time.monotonic() - started

    def _ready(self) -> bool:
        self.check_running()
        status, body = self.get("/healthz")
        return status == 200 and body.get("status") == "ok"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_running(self) -> None:
        """WorkerDied, with the log's tail, when the started process has exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise WorkerDied(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.log.close()

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def get(self, path: str, timeout: float = 10.0, headers: dict[str, str] | None = None) -> tuple[int, dict | str]:
        """GET a view, with the worker's API token (when it has one) unless `headers` are given."""
        request = urllib.request.Request(self.url + path, headers=self.settings.auth_headers() if headers is None else headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, {}
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None, timeout: float = 30.0) -> tuple[int, dict]:
        """POST a body to a view, with the worker's API token (when it has one) unless `headers` are given."""
        sent = {"Content-Type": "application/json", **(self.settings.auth_headers() if headers is None else headers)}
        request = urllib.request.Request(self.url + path, data=body, headers=sent, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                raw, status = response.read(), response.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        return status, json.loads(raw)

    def metric(self, name: str) -> float:
        """Sum of a Prometheus metric over its labels (WorkerDied when the worker has exited)."""
        status, text = self.get("/metrics")
        if status != 200:
            self.check_running()
        assert status == 200, text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in str(text).splitlines()
            if line.startswith(name + "{") or line.startswith(name + " ")
        )


def synthetic_log(spec: str, seed: int) -> tuple[list, list, list[str]]:
    """The catalog records, events and (sorted) user ids of a synthetic log, e.g. "users=300,items=1000,events=6000"."""
    from strata.models.logs.loaders import open_log

    source = open_log(spec, "synthetic", seed=seed)
    events = list(source.events())
    return list(source.catalog()), events, sorted({e["user_id"] for e in events})


def strata_cli(env: dict[str, str], *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess:
    """`strata ARGS` (e.g. "train", ...) with a deployment's STRATA_* environment (a worker's `env`)."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    child_env.update(env)
    return subprocess.run([sys.executable, "-m", "strata.streams", *args], env=child_env, capture_output=True, text=True, timeout=timeout)


def publish(settings: Settings, catalog, events) -> "ReplaySummary":  # noqa: F821
    from strata.streams.replay import publish as _publish

    return asyncio.run(_publish(settings, list(catalog), events, progress=False))


async def _produce_raw(settings: Settings, messages: list[tuple]) -> None:
    from strata.streams.replay import new_producer
    from strata.streams.topics import ensure_topics, topic_specs

    await ensure_topics(settings)
    topic = topic_specs(settings)["events"].name
    producer = new_producer(settings)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key, partition=partition) for key, value, partition in
                   (m if len(m) == 3 else (*m, None) for m in messages)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def produce_raw(settings: Settings, messages: list[tuple]) -> None:
    """Put messages on the events topic exactly as given (no validation): (key, value), or
    (key, value, partition) for a partition other than the default partitioner's."""
    asyncio.run(_produce_raw(settings, messages))


async def _read_topic(settings: Settings, topic: str, expected: int, timeout: float) -> list:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, **settings.aiokafka_kwargs(), auto_offset_reset="earliest", enable_auto_commit=False, group_id=None, max_partition_fetch_bytes=8 * 1024 * 1024)
    await consumer.start()
    out = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                out.extend(records)
    finally:
        await consumer.stop()
    return out


def read_topic(settings: Settings, topic: str, expected: int, timeout: float = 30.0) -> list:
    """Records of a topic from the beginning until `expected` have arrived (or the timeout)."""
    return asyncio.run(_read_topic(settings, topic, expected, timeout))


def assert_profile_matches(body: dict, reference, params, rel: float = 1e-9) -> None:
    """The profile view equals the in-process `models/` profile to `rel` relative tolerance."""
    from strata.models.profile import LAYERS

    assert body["as_of"] == reference.last_ts, (body["as_of"], reference.last_ts)
    for layer in LAYERS:
        expected = reference.weights(layer, params, reference.last_ts)
        got = body["layers"][layer]
        assert got.keys() == expected.keys(), f"{layer}: keys differ: {sorted(set(got) ^ set(expected))[:5]}"
        for key, value in expected.items():
            assert abs(got[key] - value) <= rel * abs(value), f"{layer}/{key}: {got[key]} != {value}"


async def _group_lag(settings: Settings) -> dict[int, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    from strata.streams.topics import partitions_of, topic_specs

    topic = topic_specs(settings)["events"].name
    tps = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
    consumer = AIOKafkaConsumer(**settings.aiokafka_kwargs(), group_id=None, enable_auto_commit=False)
    admin = AIOKafkaAdminClient(**settings.aiokafka_kwargs())
    await consumer.start()
    await admin.start()
    try:
        end = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(settings.app_id, partitions=tps)
    finally:
        await consumer.stop()
        await admin.close()
    out: dict[int, int | None] = {}
    for tp in tps:
        meta = committed.get(tp)
        if meta is not None and meta.offset >= 0:
            out[tp.partition] = end[tp] - meta.offset
        else:  # no commit yet, or the coordinator did not answer for it (e.g. while the group rebalances)
            out[tp.partition] = None if end[tp] else 0
    return out


def topic_end(settings: Settings, name: str) -> int:
    """The end offset of a one-partition topic of Strata's (`name` without the prefix)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def end() -> int:
        consumer = AIOKafkaConsumer(**settings.aiokafka_kwargs(), group_id=None, enable_auto_commit=False)
        await consumer.start()
        try:
            tp = TopicPartition(settings.topic(name), 0)
            return (await consumer.end_offsets([tp]))[tp]
        finally:
            await consumer.stop()

    return asyncio.run(end())


def shop_state_caught_up(worker: "Worker") -> bool:
    """The worker's events are committed and its activity feed has applied every activity record."""
    if not group_caught_up(worker.settings):
        return False
    return worker.get("/healthz")[1]["ranker"]["activity_offset"] == topic_end(worker.settings, "activity")


def group_lag(settings: Settings) -> dict[int, int | None]:
    """Per partition of the events topic: end offset − the worker group's committed offset (None: unknown)."""
    return asyncio.run(_group_lag(settings))


def group_caught_up(settings: Settings) -> bool:
    """True once the worker group has committed every event on the topic (so processed and flushed it)."""
    lag = group_lag(settings)
    return bool(lag) and all(v == 0 for v in lag.values())


class BackgroundReplay:
    """`streams.replay.publish` of events at a fixed rate, in a thread, while the test does other things.

    With `parts` > 1 the events are sent in that many equal parts: the first at `start()`, each
    further one after a `release()` (releases queue up, so a part released while the one before is
    still being sent follows it).  A test holds the last part back to know the replay cannot have
    finished before the moment it releases it, however fast or slow the machine.  Between parts
    no producer is open."""

    def __init__(self, settings: Settings, events: list, rate: float | None, parts: int = 1) -> None:
        import threading

        self.summary = None
        self.error: BaseException | None = None
        self._parts = [events[i * len(events) // parts:(i + 1) * len(events) // parts] for i in range(parts)]
        self._released = threading.Semaphore(0)
        self._held = parts - 1  # parts not released yet
        self._sending = False
        self._thread = threading.Thread(target=self._run, args=(settings, rate), daemon=True)

    def _run(self, settings, rate) -> None:
        from strata.streams.replay import ReplaySummary, publish as _publish

        async def send_parts() -> ReplaySummary:
            total = ReplaySummary()
            for n, part in enumerate(self._parts):
                if n:
                    self._released.acquire()  # blocks this thread's own loop only: it has nothing else to run
                self._sending = True
                done = await _publish(settings, [], part, rate=rate, progress=False)
                self._sending = False
                total.sent, total.rejected, total.seconds = total.sent + done.sent, total.rejected + done.rejected, total.seconds + done.seconds
            return total

        try:
            self.summary = asyncio.run(send_parts())
        except BaseException as exc:  # noqa: BLE001 - re-raised in join()
            self.error = exc

    def start(self) -> "BackgroundReplay":
        self._thread.start()
        return self

    def release(self) -> None:
        """Let the next part held back go."""
        assert self._held > 0, "every part is released already"
        self._held -= 1
        self._released.release()

    def running(self) -> bool:
        return self._thread.is_alive()

    def sending(self) -> bool:
        """A part is being sent now (not finished, not waiting for its `release()`)."""
        return self.running() and self._sending

    def join(self, timeout: float = 300.0):
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError(f"replay still running after {timeout:.0f}s ({self._held} parts not released)")
        if self.error is not None:
            raise self.error
        return self.summary


def all_profiles(worker: Worker, users) -> dict[str, dict]:
    out = {}
    for user in users:
        status, body = worker.get(f"/users/{user}/profile")
        assert status == 200, (user, status, body)
        out[user] = body
    return out


def assert_all_profiles_match(worker: Worker, reference: dict, params) -> None:
    """Every user of `reference` (models/ profiles) answers through the worker with the same profile (1e-9)."""
    for user_id, profile in reference.items():
        status, body = worker.get(f"/users/{user_id}/profile")
        assert status == 200, (user_id, status, body)
        assert body["events"] == profile.count, (user_id, body["events"], profile.count)
        assert_profile_matches(body, profile, params)


# Workers of one group (STRATA_STANDBY_REPLICAS=1): who owns what, and the standby copies.


def owned(worker: Worker) -> list[int] | None:
    """The worker's partitions of the events topic; None while it is not ready."""
    status, body = worker.get("/healthz")
    return body.get("partitions") if status == 200 and body.get("status") == "ok" else None


def split_between(*workers: Worker) -> bool:
    """Every worker is ready, owns at least one partition, and together they own each exactly once."""
    parts = [owned(w) for w in workers]
    if any(not p for p in parts):
        return False
    flat = sorted(p for ps in parts for p in ps)
    return flat == list(range(workers[0].settings.partitions))


def start_split(a: Worker, b: Worker, catalog_records: list) -> None:
    """Start a, load the catalog through it, start b, and wait until the two split the partitions."""
    a.start(timeout=60)
    publish(a.settings, catalog_records, [])
    wait_until(lambda: a.get("/healthz")[1].get("catalog_entries", 0) >= len(catalog_records), 60, "catalog loaded")
    b.start(timeout=90)
    wait_until(lambda: split_between(a, b), 120, "a and b to split the partitions")


def standby(worker: Worker) -> list[int]:
    return worker.get("/healthz")[1].get("standby_partitions", [])


def standby_lags(worker: Worker) -> dict[int, float]:
    """strata_standby_lag by partition (present once the standby has been fetched since the last rebalance)."""
    status, text = worker.get("/metrics")
    assert status == 200, text
    prefix = 'strata_standby_lag{partition="'
    return {int(line[len(prefix):].split('"')[0]): float(line.rsplit(" ", 1)[1])
            for line in str(text).splitlines() if line.startswith(prefix)}


def standbys_caught_up(*workers: Worker) -> bool:
    """Each worker keeps a standby copy of exactly the others' partitions, each at the changelog's end."""
    for w in workers:
        others = sorted(p for o in workers if o is not w for p in (owned(o) or []))
        if standby(w) != others or standby_lags(w) != {p: 0.0 for p in others}:
            return False
    return True


def recommendations(worker: Worker, users: list[str]) -> dict[str, dict]:
    """Each user's recommendations (k=5, explained) as the worker answers them; all must be 200."""
    out = {}
    for user in users:
        status, body = worker.get(f"/users/{user}/recommendations?k=5&explain=1")
        assert status == 200, (worker.url, user, status, body)
        out[user] = body
    return out


def assert_same_recommendations(got: dict, expected: dict) -> None:
    """The same model version, items and order, scores to 1e-9 relative."""
    for user, body in expected.items():
        g = got[user]
        assert g["model_version"] == body["model_version"], user
        assert [i["item_id"] for i in g["items"]] == [i["item_id"] for i in body["items"]], user
        for a, b in zip(g["items"], body["items"]):
            assert abs(a["score"] - b["score"]) <= 1e-9 * max(1.0, abs(b["score"])), (user, a, b)
