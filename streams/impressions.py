"""Served lists as impressions (docs/design.md §4): each list a worker serves gets a `rec_id`, is ranked
under its user's A/B variant, and is published twice, keyed by its user:

- the full record on the impressions topic (items with their scores by layer and term, variant,
  model version, time, filters): what analytics and `strata ab report` read;
- a `models.events.Served` control record on the events topic: in the user's partition, ordered
  with the user's events, so that the worker owning the user attributes the events that follow to
  it (`models.attribution`) exactly once, with the list kept in the user's profile.

Publishing never holds up or fails a response: the records are handed to a task, at most
`MAX_IN_FLIGHT` of them at once; past that, or when Kafka does not take them, they are dropped and
counted (`strata_impressions_total{outcome}`).  They go through their own producer, not the
worker's: a list of 1,000 items is a record of ~100 KB, and on the shared producer a flood of
them sat in the flush every micro-batch of the stream waits for before its offsets commit.
"""
from __future__ import annotations

import asyncio
import time
import uuid

import numpy as np
import orjson

from strata.models.ab import Variant, assign, variant_theta
from strata.models.events import Served
from strata.models.learned import LAYER_TERMS
from strata.models.terms import TERMS, theta0
from strata.streams.app import app, settings, shop_feed
from strata.streams.metrics import metrics
from strata.streams.topics import MAX_MESSAGE_BYTES

MAX_IN_FLIGHT = 10_000

_in_flight: set[asyncio.Task] = set()


class Producer:
    """The impressions' own Kafka producer, started at the first list served (again after a failed
    start) and flushed when the worker stops."""

    def __init__(self) -> None:
        self._kafka = None
        self._starting: asyncio.Future | None = None

    async def get(self):
        if self._kafka is None:
            if self._starting is None:
                self._starting = asyncio.ensure_future(self._start())
            try:
                await asyncio.shield(self._starting)
            except Exception:
                self._starting = None
                raise
        return self._kafka

    async def _start(self) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(**settings.aiokafka_kwargs(), linger_ms=20, max_request_size=MAX_MESSAGE_BYTES)
        await producer.start()
        self._kafka = producer

    async def stop(self) -> None:
        if self._kafka is not None:
            await self._kafka.stop()  # sends what is pending first
            self._kafka = None


producer = Producer()


@app.on_before_shutdown.connect
async def _flush_impressions(app, **kwargs) -> None:  # noqa: ARG001 - the signal's signature
    await producer.stop()


def new_rec_id() -> str:
    return uuid.uuid4().hex


def variant_of(user_id: str) -> Variant:
    """The user's A/B variant: sticky, the same on every worker (`models.ab.assign`)."""
    return assign(user_id, settings.variants, settings.experiment)


def theta_of(variant: Variant) -> np.ndarray | None:
    """θ the variant ranks with; None for the shop's learned θ as it is."""
    if variant.learning and not variant.scale:
        return None
    return variant_theta(variant, shop_feed.weights.theta, theta0(), TERMS, LAYER_TERMS)


def impression(rec_id: str, user_id: str, body: dict, options: dict, variant: str) -> dict:
    """The record of a served list: its items with their scores by layer (and term, when explained),
    the variant, the model version, the time and the request's filters."""
    return {
        "rec_id": rec_id,
        "user_id": user_id,
        "items": [{"item_id": i["item_id"], "position": n, "score": i["score"], "layers": i.get("layers"),
                   **({"terms": i["terms"]} if "terms" in i else {})} for n, i in enumerate(body["items"])],
        "variant": variant,
        "model_version": body.get("model_version"),
        "ts": time.time(),
        "filters": {name: options[name] for name in ("k", "category", "exclude_purchased", "exclude_seen")},
    }


def publish(record: dict) -> None:
    """Send `record` in the background; never waits, never raises."""
    if len(_in_flight) >= MAX_IN_FLIGHT:
        metrics.impressions["dropped"] += 1
        return
    task = asyncio.ensure_future(_send(record))
    _in_flight.add(task)
    task.add_done_callback(_in_flight.discard)


async def _send(record: dict) -> None:
    key = record["user_id"].encode()
    served = Served(record["user_id"], record["rec_id"], record["ts"], record["variant"],
                    tuple(i["item_id"] for i in record["items"]))
    try:
        kafka = await producer.get()
        sent = [await kafka.send(settings.topic("impressions"), key=key, value=orjson.dumps(record)),
                await kafka.send(settings.topic("events"), key=key, value=served.to_json())]
        for ack in sent:
            await ack
    except Exception:  # noqa: BLE001 - an impression lost is counted, never a response lost
        metrics.impressions["dropped"] += 1
    else:
        metrics.impressions["published"] += 1
