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

from streams.config import Settings

READY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
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

    def __init__(self, env: dict[str, str], data_dir: Path, port: int | None = None) -> None:
        self.env = {**env, "STRATA_DATA_DIR": str(data_dir), "STRATA_WEB_PORT": str(port or free_port())}
        self.settings = Settings.from_env(self.env)
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"worker-{self.settings.web_port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return self.settings.web_url

    def start(self, timeout: float = READY_TIMEOUT_S) -> float:
        """Start and wait until /healthz says ok; returns the seconds it took."""
        started = time.monotonic()
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
        child_env.update(self.env)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "streams", "worker"], env=child_env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self._ready, timeout, f"worker on {self.url} to be ready; log: {self.log_path}")
        return time.monotonic() - started

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
        status, body = self.get("/healthz")
        return status == 200 and body.get("status") == "ok"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

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

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, dict | str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
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

    def metric(self, name: str) -> float:
        """Sum of a Prometheus metric over its labels."""
        status, text = self.get("/metrics")
        assert status == 200, text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in str(text).splitlines()
            if line.startswith(name + "{") or line.startswith(name + " ")
        )


def publish(settings: Settings, catalog, events) -> "ReplaySummary":  # noqa: F821
    from streams.replay import publish as _publish

    return asyncio.run(_publish(settings, list(catalog), events, progress=False))


async def _produce_raw(settings: Settings, messages: list[tuple[bytes | None, bytes]]) -> None:
    from streams.replay import new_producer
    from streams.topics import ensure_topics, topic_specs

    await ensure_topics(settings)
    topic = topic_specs(settings)["events"].name
    producer = new_producer(settings)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def produce_raw(settings: Settings, messages: list[tuple[bytes | None, bytes]]) -> None:
    """Put messages on the events topic exactly as given (no validation), keyed as given."""
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
    from models.profile import LAYERS

    assert body["as_of"] == reference.last_ts, (body["as_of"], reference.last_ts)
    for layer in LAYERS:
        expected = reference.weights(layer, params, reference.last_ts)
        got = body["layers"][layer]
        assert got.keys() == expected.keys(), f"{layer}: keys differ: {sorted(set(got) ^ set(expected))[:5]}"
        for key, value in expected.items():
            assert abs(got[key] - value) <= rel * abs(value), f"{layer}/{key}: {got[key]} != {value}"
