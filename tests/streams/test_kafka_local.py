"""deploy/kafka/kafka.sh through streams.kafka_local: a real broker's whole life.

Uses its own port pair and a throwaway data dir, so it never touches a broker
a developer (or the rest of the test session) runs on 9092. The jars come from
the normal cache (fetched from Maven Central on the very first run).
"""
from __future__ import annotations

import asyncio
import uuid

import pytest

from strata.streams import kafka_local
from tests.integration.harness import broker_port_pair

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tmp_path):
    """(port, env) for a broker that the test starts; always stopped afterwards."""
    port = broker_port_pair(start=19392)
    env = {
        "STRATA_KAFKA_DIR": str(tmp_path / "kafka"),
        "STRATA_KAFKA_CONTROLLER_PORT": str(port + 1),
        "STRATA_PARTITIONS": "3",
        "STRATA_KAFKA_HEAP": "384m",
    }
    yield port, env
    kafka_local.run("stop", port=port, env=env, check=False)


async def _roundtrip(bootstrap: str, topic: str, group: str) -> tuple[set[int], list[tuple[bytes, bytes]]]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        # the topic does not exist: auto.create.topics.enable makes it with num.partitions
        await producer.send_and_wait(topic, b"hello strata", key=b"user-1")
        partitions = await producer.partitions_for(topic)
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got: list[tuple[bytes, bytes]] = []
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while not got and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            got = [(m.key, m.value) for records in batches.values() for m in records]
        await consumer.commit()
    finally:
        await consumer.stop()
    return partitions, got


def test_local_broker_lifecycle(broker):
    port, env = broker
    bootstrap = f"127.0.0.1:{port}"

    status = kafka_local.run("status", port=port, env=env, check=False)
    assert status.returncode == kafka_local.STOPPED, status
    assert "stopped" in status.stdout

    started = kafka_local.run("start", port=port, env=env)
    assert f"ready on {bootstrap}" in started.stdout

    status = kafka_local.run("status", port=port, env=env, check=False)
    assert status.returncode == 0, status
    assert f"running on {bootstrap}" in status.stdout

    again = kafka_local.run("start", port=port, env=env, check=False)
    assert again.returncode == 0, again
    assert f"Kafka already running on {bootstrap}" in again.stdout

    topic = f"strata-test.kafka-local.{uuid.uuid4().hex[:8]}"
    group = f"strata-test-{uuid.uuid4().hex[:8]}"
    partitions, got = asyncio.run(asyncio.wait_for(_roundtrip(bootstrap, topic, group), 90))
    assert got == [(b"user-1", b"hello strata")]
    assert partitions == {0, 1, 2}  # num.partitions follows STRATA_PARTITIONS

    lag = kafka_local.run("lag", group, port=port, env=env, check=False)
    assert lag.returncode == 0, lag
    assert topic in lag.stdout

    stopped = kafka_local.run("stop", port=port, env=env)
    assert "stopped" in stopped.stdout

    status = kafka_local.run("status", port=port, env=env, check=False)
    assert status.returncode == kafka_local.STOPPED, status

    again = kafka_local.run("stop", port=port, env=env)
    assert "Kafka is not running" in again.stdout
