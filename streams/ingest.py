"""Ingest over HTTP, for web and mobile clients without a Kafka producer (docs/design.md §4).

`POST /events` takes one event, `POST /events:batch` up to `MAX_BATCH` (a JSON array, or an
object with an `events` array).  Each event is validated by the stream's own rules (docs/design.md §2,
`models.events`), every broken rule reported, and produced to the events topic keyed by its
user; an event is answered as accepted only once the broker acknowledged it (acks=all), so an
event that got a 2xx is on the topic whatever happens to the worker next.  Any worker takes
events for any user: the topic's partitioner puts each where its user's profile lives.
"""
from __future__ import annotations

import asyncio
import time

import orjson
from aiohttp.web import HTTPRequestEntityTooLarge
from faust import web

from strata.models.events import event_problems, parse_event
from strata.streams.app import app, events_topic
from strata.streams.metrics import metrics

MAX_BODY_BYTES = 1 << 20
MAX_BATCH = 1_000


def _error(view: web.View, status: int, message: str, headers: dict | None = None, **extra) -> web.Response:
    return view.json({"error": message, "status": status, **extra}, status=status, headers=headers)


async def _body(view: web.View, request: web.Request) -> tuple[object, web.Response | None]:
    """(the decoded JSON body, None), or (None, the error response to send instead: 413 over
    `MAX_BODY_BYTES`, 400 for what is no JSON)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return None, _error(view, 413, f"the body is {request.content_length:,} bytes; the limit is {MAX_BODY_BYTES:,}")
    try:
        raw = await request.read()  # aiohttp refuses more than its client_max_size, 1 MiB
    except HTTPRequestEntityTooLarge:
        return None, _error(view, 413, f"the body is over {MAX_BODY_BYTES:,} bytes")
    except Exception as exc:  # noqa: BLE001 - a broken upload
        return None, _error(view, 400, f"the body could not be read ({type(exc).__name__})")
    if len(raw) > MAX_BODY_BYTES:
        return None, _error(view, 413, f"the body is over {MAX_BODY_BYTES:,} bytes")
    try:
        return orjson.loads(raw), None
    except orjson.JSONDecodeError as exc:
        return None, _error(view, 400, f"the body is not valid JSON ({exc.msg})")


def _checked(obj: object, now: float) -> tuple[object, list[dict]]:
    """(the event, []) or (None, every problem as {"reason", "detail"})."""
    problems = event_problems(obj, now)
    if problems:
        return None, [{"reason": p.reason, "detail": p.detail} for p in problems]
    return parse_event(obj, now), []


async def _produce(events: list) -> list[dict]:
    """Each event produced keyed by its user; each result once the broker acknowledged it (or failed)."""
    sends = [await events_topic.send(key=e.user_id.encode(), value=e.to_json()) for e in events]
    acked = await asyncio.gather(*sends, return_exceptions=True)
    out = []
    for event, result in zip(events, acked):
        if isinstance(result, BaseException):
            metrics.ingested["failed"] += 1
            out.append({"status": 503, "event_id": event.event_id, "error": f"not acknowledged by Kafka ({type(result).__name__})"})
        else:
            metrics.ingested["accepted"] += 1
            out.append({"status": 202, "event_id": event.event_id, "partition": result.partition, "offset": result.offset})
    return out


@app.page("/events")
class Events(web.View):
    """One event: 202 once on the topic, 400 with every broken rule, 413, or 503 when Kafka did not take it."""

    async def post(self, request: web.Request) -> web.Response:
        body, refused = await _body(self, request)
        if refused is not None:
            return refused
        event, problems = _checked(body, time.time())
        if problems:
            metrics.ingested["rejected"] += 1
            return _error(self, 400, "the event breaks the rules of docs/design.md §2", reasons=problems)
        [result] = await _produce([event])
        if result["status"] != 202:
            return _error(self, 503, result["error"], headers={"Retry-After": "1"})
        return self.json(result, status=202)


@app.page("/events:batch")
class EventsBatch(web.View):
    """Up to `MAX_BATCH` events: one result each, in order ({"status": 202 | 400 | 503, …}); the
    answer is 200 when it could be read, whatever each event's outcome."""

    async def post(self, request: web.Request) -> web.Response:
        body, refused = await _body(self, request)
        if refused is not None:
            return refused
        items = body.get("events") if isinstance(body, dict) else body
        if not isinstance(items, list):
            return _error(self, 400, "expected a JSON array of events, or an object with an 'events' array")
        if not 1 <= len(items) <= MAX_BATCH:
            return _error(self, 400 if not items else 413, f"a batch holds 1-{MAX_BATCH} events, got {len(items):,}")
        now = time.time()
        results: list[dict | None] = [None] * len(items)
        valid, where = [], []
        for n, item in enumerate(items):
            event, problems = _checked(item, now)
            if problems:
                metrics.ingested["rejected"] += 1
                results[n] = {"status": 400, "reasons": problems}
            else:
                valid.append(event)
                where.append(n)
        for n, result in zip(where, await _produce(valid) if valid else []):
            results[n] = result
        accepted = sum(r["status"] == 202 for r in results)
        return self.json({"accepted": accepted, "rejected": len(items) - accepted, "results": results})
