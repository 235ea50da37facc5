"""`strata ab report`: the A/B comparison, read from the impressions and attributions topics.

Every served list is on the impressions topic with its user and variant; every event attributed
to a list is on the attributions topic (at least once: de-duplicated here by `event_id`).  Both
are read whole, from the earliest offset kept to the end, into each variant's per-user totals,
and `models.ab.report` compares them: each outcome's rate per impression, its difference to the
control with an interval (the user is the unit), and the sample-ratio check of users per variant
against `STRATA_VARIANTS`' shares.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from typing import Callable

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from tqdm import tqdm

from strata.models.ab import UserTotals, report
from strata.models.events import Event
from strata.models.logs.synthetic import SyntheticConfig, generate
from strata.models.simulated_shop import SimulatedShop
from strata.streams.benchmarks.common import parse_metrics
from strata.streams.config import Settings
from strata.streams.replay import new_producer, publish
from strata.streams.topics import partitions_of, topic_specs

log = logging.getLogger(__name__)

Totals = dict[str, dict[str, UserTotals]]  # variant → user → totals


async def read_whole(settings: Settings, topic: str, handle: Callable[[bytes], None]) -> int:
    """Every record of `topic` now on the broker (up to the end offsets read at the start) to
    `handle`, its value only; the number of records."""
    tps = [TopicPartition(topic, p) for p in await partitions_of(settings, topic)]
    if not tps:
        return 0
    consumer = AIOKafkaConsumer(**settings.aiokafka_kwargs(), group_id=None, enable_auto_commit=False)
    await consumer.start()
    n = 0
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if end[tp] > await consumer.position(tp)}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=50_000)
            for tp, records in batches.items():
                for record in records:
                    if record.offset < end[tp]:
                        handle(record.value)
                        n += 1
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return n


class FeedbackTotals:
    """Each variant's per-user impressions, attributed events and revenue, from the two topics."""

    def __init__(self) -> None:
        self.totals: Totals = {}
        self.unreadable = 0
        self._lists: set[str] = set()
        self._events: set[str] = set()

    def _user(self, variant: str, user: str) -> UserTotals:
        users = self.totals.setdefault(variant, {})
        totals = users.get(user)
        if totals is None:
            totals = users[user] = UserTotals()
        return totals

    def _new(self, value: bytes, fields: tuple[str, ...], seen: set) -> dict | None:
        """The decoded record, unless it lacks one of `fields` (counted as unreadable) or its first
        field's value was read before (a copy: the topics are written at least once)."""
        try:
            record = orjson.loads(value)
            key = [record[name] for name in fields][0]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.unreadable += 1
            return None
        if key in seen:
            return None
        seen.add(key)
        return record

    def impression(self, value: bytes) -> None:
        record = self._new(value, ("rec_id", "user_id", "variant"), self._lists)
        if record is not None:
            self._user(record["variant"], record["user_id"]).impressions += 1

    def attribution(self, value: bytes) -> None:
        record = self._new(value, ("event_id", "user_id", "variant", "type"), self._events)
        if record is None:
            return
        totals, type_ = self._user(record["variant"], record["user_id"]), record["type"]
        totals.actions[type_] = totals.actions.get(type_, 0) + 1
        if type_ == "purchase" and isinstance(record.get("price"), (int, float)):
            totals.revenue += record["price"]


async def ab_report(settings: Settings) -> dict:
    """The report of `models.ab.report` over what the topics hold now, with the records read."""
    specs = topic_specs(settings)
    totals = FeedbackTotals()
    impressions = await read_whole(settings, specs["impressions"].name, totals.impression)
    attributions = await read_whole(settings, specs["attributions"].name, totals.attribution)
    rep = report(totals.totals, settings.variants)
    unknown = sorted(set(totals.totals) - {v.name for v in settings.variants})
    rep["read"] = {"impressions": impressions, "attributions": attributions, "unreadable": totals.unreadable,
                   "variants_not_configured": unknown}
    return rep


# -- the simulated shop --------------------------------------------------------------------------
HISTORY_SPAN_S = 7 * 86_400.0
THINK_S = 1.0  # a shopper acts this long after the list is served (while others are served meanwhile)


class SimulationTally:
    """Lists served and acted on, by variant and by quarter of the run."""

    def __init__(self, lists: int) -> None:
        self.lists = lists
        self.served: dict[str, list[int]] = {}
        self.acted: dict[str, list[int]] = {}
        self.failed = 0

    def add(self, n: int, variant: str, acted: bool) -> None:
        quarter = min(3, 4 * n // self.lists)
        self.served.setdefault(variant, [0] * 4)[quarter] += 1
        self.acted.setdefault(variant, [0] * 4)[quarter] += acted

    def summary(self) -> dict:
        return {v: {"lists": sum(self.served[v]), "acted": sum(self.acted[v]),
                    "acted_per_list_by_quarter": [round(a / s, 4) if s else None for a, s in zip(self.acted[v], self.served[v])]}
                for v in sorted(self.served)}


async def simulate(settings: Settings, urls: list[str], users: int, items: int, history: int, lists: int,
                   concurrency: int, seed: int, progress: bool = True) -> dict:
    """A synthetic shop's history replayed, then `lists` recommendation lists asked for random
    shoppers, each acted on by `models.simulated_shop` with clicks (and carts) that carry the
    list's `rec_id`.  What each variant's shoppers did, by quarter of the run."""
    config = SyntheticConfig(users=users, items=items, events=history, seed=seed,
                             start_ts=time.time() - HISTORY_SPAN_S - 3600.0, duration_s=HISTORY_SPAN_S)
    catalog, events = generate(config)
    events = list(events)
    before = await _applied(settings, urls)
    await publish(settings, catalog, events, progress=progress)
    await _wait_applied(settings, urls, before + len(events))
    category_of = {r["item_id"]: r["category_id"] for r in catalog if "item_id" in r}
    shop = SimulatedShop(category_of, ((e["user_id"], e["item_id"]) for e in events), seed=seed)
    shoppers = sorted({e["user_id"] for e in events})
    return await _serve_and_act(settings, urls, shop, shoppers, lists, concurrency, seed, progress)


async def _applied(settings: Settings, urls: list[str]) -> float:
    """Events the workers have applied, dropped as duplicates or dead-lettered, summed."""
    names = ("strata_events_processed_total", "strata_events_duplicate_total", "strata_events_deadlettered_total")
    total = 0.0
    async with aiohttp.ClientSession(headers=settings.auth_headers()) as session:
        for url in urls:
            async with session.get(f"{url}/metrics") as response:
                series = parse_metrics(await response.text())
            total += sum(v for k, v in series.items() if k.split("{")[0] in names)
    return total


async def _wait_applied(settings: Settings, urls: list[str], target: float, timeout: float = 900.0) -> None:
    deadline = time.monotonic() + timeout
    while await _applied(settings, urls) < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the workers did not apply the history within {timeout:.0f} s")
        await asyncio.sleep(0.5)


async def _serve_and_act(settings: Settings, urls: list[str], shop, shoppers: list[str], lists: int, concurrency: int,
                         seed: int, progress: bool) -> dict:
    """`lists` lists for random shoppers, `concurrency` at a time; the shoppers' acts go to the events topic."""
    rng = random.Random(seed)
    tally = SimulationTally(lists)
    events_topic = topic_specs(settings)["events"].name
    producer = new_producer(settings)
    await producer.start()
    bar = tqdm(total=lists, unit="list", disable=not progress, desc="shop", smoothing=0.05)
    queue = list(range(lists))
    queue.reverse()
    acts: list[asyncio.Future] = []

    async def shopper(session: aiohttp.ClientSession, url: str) -> None:
        while queue:
            n = queue.pop()
            user = shoppers[rng.randrange(len(shoppers))]
            async with session.get(f"{url}/users/{user}/recommendations", params={"k": "10"}) as response:
                if response.status != 200:
                    tally.failed += 1
                    continue
                body = await response.json()
            acted = shop.act(user, [i["item_id"] for i in body["items"]])
            tally.add(n, body["variant"], acted is not None)
            bar.update()
            if acted is None:
                continue
            position, actions = acted
            acts.append(asyncio.ensure_future(act(user, body["items"][position]["item_id"], actions, body["rec_id"])))

    async def act(user: str, item: str, actions: list[str], rec_id: str) -> None:
        await asyncio.sleep(THINK_S)
        for type_ in actions:
            event = Event(uuid.uuid4().hex, user, item, type_, time.time(), rec_id=rec_id)
            await producer.send(events_topic, key=user.encode(), value=event.to_json())

    try:
        async with aiohttp.ClientSession(headers=settings.auth_headers(), timeout=aiohttp.ClientTimeout(total=30)) as session:
            await asyncio.gather(*(shopper(session, urls[c % len(urls)]) for c in range(concurrency)))
        await asyncio.gather(*acts)
        await producer.flush()
    finally:
        bar.close()
        await producer.stop()
    return {"lists": lists, "failed": tally.failed, "variants": tally.summary()}
