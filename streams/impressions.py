"""Served lists as impressions (SPEC §4): each list a worker serves gets a `rec_id` and goes to the
impressions topic, keyed by its user (co-partitioned with the events that may come of it).

Publishing never holds up or fails a response: the record is handed to a task, at most
`MAX_IN_FLIGHT` of them at once; past that, or when Kafka does not take it, it is dropped and
counted (`strata_impressions_total{outcome}`).
"""
from __future__ import annotations

import asyncio
import time
import uuid

import orjson

from streams.app import impressions_topic
from streams.metrics import metrics

MAX_IN_FLIGHT = 10_000
VARIANT = "control"  # until A/B variants exist, every list is the control's

_in_flight: set[asyncio.Task] = set()


def new_rec_id() -> str:
    return uuid.uuid4().hex


def impression(rec_id: str, user_id: str, body: dict, options: dict) -> dict:
    """The record of a served list: its items with their scores by layer (and term, when explained),
    the variant, the model version, the time and the request's filters."""
    return {
        "rec_id": rec_id,
        "user_id": user_id,
        "items": [{"item_id": i["item_id"], "position": n, "score": i["score"], "layers": i.get("layers"),
                   **({"terms": i["terms"]} if "terms" in i else {})} for n, i in enumerate(body["items"])],
        "variant": VARIANT,
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
    try:
        sent = await impressions_topic.send(key=record["user_id"].encode(), value=orjson.dumps(record))
        await sent
    except Exception:  # noqa: BLE001 - an impression lost is counted, never a response lost
        metrics.impressions["dropped"] += 1
    else:
        metrics.impressions["published"] += 1
