"""Dynamic shift (issue 23, docs/design.md §3 "dynamic adjustment"), against the real broker.

A shopper with a long purchase history — 300 purchases over six months of event time, in four
categories under two roots — views 20 distinct items of a category (under a third root) they
never touched.  Within 2 s of the broker acknowledging the last of those views, at least half of
their top-10 recommendations are in that category.  The category of every recommended item is
read from the catalog this test published, never from what the worker says about it.

The clock starts when the broker has acknowledged all 20 views (acks=all) and stops at the first
answer of GET /users/shifter/recommendations?k=10 that meets the criterion; the endpoint is polled
every 50 ms up to a deadline, so the measured time is the shift time within one poll interval.
"""
from __future__ import annotations

import asyncio
import random
import time

import pytest

from strata.models.events import parse_event
from tests.integration.harness import Worker, isolated_env, publish, wait_until

pytestmark = pytest.mark.integration

USER = "shifter"
DAY = 86_400.0
SHIFT_BUDGET_S = 2.0  # the criterion
POLL_S = 0.05
ITEMS_PER_CATEGORY = 40
# Three roots, three categories each.  The shifter's history lives in four categories under
# two roots; the new category sits under the third root, so neither the domain nor the
# overall layer of the shifter has ever seen it.
TREE = {
    "home": ("kitchen", "garden", "bath"),
    "fashion": ("shoes", "bags", "hats"),
    "tech": ("phones", "audio", "cameras"),
}
HISTORY_CATEGORIES = ("kitchen", "garden", "shoes", "bags")
NEW_CATEGORY = "cameras"
# Event time of the end of the history: fixed, in the past, so that nothing depends on the wall clock.
HISTORY_END = 1_760_000_000.0
HISTORY_SPAN = 180 * DAY
PURCHASES = 300


def catalog_records() -> list[dict]:
    records: list[dict] = []
    for root, categories in TREE.items():
        records.append({"category_id": root})
        for category in categories:
            records.append({"category_id": category, "parent_id": root})
            records.extend({"item_id": f"{category}-{n:02d}", "category_id": category} for n in range(ITEMS_PER_CATEGORY))
    return records


def items_of(category: str) -> list[str]:
    return [f"{category}-{n:02d}" for n in range(ITEMS_PER_CATEGORY)]


def shifter_history(rng: random.Random) -> list[dict]:
    """300 purchases spread evenly over six months, round-robin over the four history categories;
    each purchase follows a view of the same item two minutes earlier and a browse view of
    another item of the category three minutes before that."""
    events = []
    step = HISTORY_SPAN / PURCHASES
    for n in range(PURCHASES):
        t = HISTORY_END - HISTORY_SPAN + (n + 1) * step - rng.uniform(0, step / 2)
        category = HISTORY_CATEGORIES[n % len(HISTORY_CATEGORIES)]
        bought, browsed = rng.sample(items_of(category), 2)
        events += [
            {"event_id": f"h-{n}-browse", "user_id": USER, "item_id": browsed, "type": "view", "ts": t - 300},
            {"event_id": f"h-{n}-view", "user_id": USER, "item_id": bought, "type": "view", "ts": t - 120},
            {"event_id": f"h-{n}-buy", "user_id": USER, "item_id": bought, "type": "purchase", "ts": t},
        ]
    events[-1]["ts"] = HISTORY_END  # the history ends exactly at HISTORY_END
    return events


def other_shoppers(rng: random.Random, users: int = 60, each: int = 40) -> list[dict]:
    """The rest of the shop in the last week of the history, over every category (the new one
    included), so that popularity — and the overall layer's fill — is not empty.  None of their
    events lies after the shifter's, so the shop's clock does not make the shifter stale."""
    categories = [c for cs in TREE.values() for c in cs]
    types = ("view", "view", "view", "click", "cart", "purchase")
    events = []
    for u in range(users):
        for n in range(each):
            events.append({
                "event_id": f"o-{u}-{n}", "user_id": f"other-{u}", "item_id": rng.choice(items_of(rng.choice(categories))),
                "type": rng.choice(types), "ts": HISTORY_END - rng.uniform(60, 7 * DAY),
            })
    return events


async def _send_acknowledged(settings, events: list[dict]) -> float:
    """Produce `events` keyed by user (as `strata replay` does) and return the monotonic time at
    which the broker acknowledged the last of them."""
    from strata.streams.replay import new_producer
    from strata.streams.topics import ensure_topics

    await ensure_topics(settings)
    producer = new_producer(settings)
    await producer.start()
    acked: list[float] = []
    try:
        futures = []
        for raw in events:
            event = parse_event(raw, time.time())
            future = await producer.send(settings.topic("events"), event.to_json(), key=event.user_id.encode())
            future.add_done_callback(lambda f: acked.append(time.monotonic()))
            futures.append(future)
        await asyncio.gather(*futures)  # raises if any send failed
    finally:
        await producer.stop()
    assert len(acked) == len(events)
    return max(acked)


def in_category(items: list[dict], category_of: dict[str, str], category: str) -> int:
    return sum(category_of.get(i["item_id"]) == category for i in items)


def describe(body: dict, category_of: dict[str, str]) -> str:
    """One line per recommended item: id, category by the catalog, score and layer contributions."""
    return "\n".join(
        f"  {i['item_id']:<12} {category_of.get(i['item_id'], '?'):<8} score={i['score']:.4g} "
        f"layers={ {k: round(v, 4) for k, v in i.get('layers', {}).items()} } because={i.get('because')}"
        for i in body.get("items", [])
    )


def test_a_long_history_gives_way_to_a_new_category_within_2s(kafka, tmp_path):
    rng = random.Random(23)
    catalog = catalog_records()
    category_of = {r["item_id"]: r["category_id"] for r in catalog if "item_id" in r}
    history = shifter_history(rng)
    others = other_shoppers(rng)

    worker = Worker(isolated_env(kafka, "shift"), tmp_path / "data")
    worker.start()
    try:
        # The catalog first, as in production: the domain and overall layers come from it.
        publish(worker.settings, catalog, [])
        wait_until(lambda: worker.get("/healthz")[1].get("catalog_entries", 0) >= len(catalog), 30, "catalog loaded")

        summary = publish(worker.settings, [], history + others)
        assert summary.rejected == 0 and summary.sent == len(history) + len(others)
        wait_until(lambda: worker.metric("strata_events_processed_total") >= summary.sent, 60, f"{summary.sent} events processed")

        # The shifter's profile holds the whole history: every event counted, the four history
        # categories in the domain layer and nothing of the new category's root.
        def history_visible():
            status, body = worker.get(f"/users/{USER}/profile")
            return body if status == 200 and body["events"] == len(history) and body["as_of"] == HISTORY_END else None

        profile = wait_until(history_visible, 30, f"{USER}'s {len(history)} history events in the profile", interval=POLL_S)
        assert set(profile["layers"]["domain"]) == set(HISTORY_CATEGORIES), profile["layers"]["domain"]
        assert set(profile["layers"]["overall"]) == {"home", "fashion"}, profile["layers"]["overall"]

        # Popularity is not empty: a shopper with no history is served a full list of popular items.
        wait_until(lambda: len(worker.get("/users/nobody/recommendations?k=10")[1].get("items", [])) == 10, 30,
                   "popularity to fill a cold-start list", interval=POLL_S)

        # Before the shift, the new category is not what the shifter is shown (else the test
        # below would prove nothing).
        status, before = worker.get(f"/users/{USER}/recommendations?k=10&explain=1")
        assert status == 200 and len(before["items"]) == 10, before
        assert in_category(before["items"], category_of, NEW_CATEGORY) < 5, describe(before, category_of)

        # The shift: 20 views of distinct items of the new category, just after the history.
        viewed = rng.sample(items_of(NEW_CATEGORY), 20)
        views = [
            {"event_id": f"shift-{n}", "user_id": USER, "item_id": item, "type": "view", "ts": HISTORY_END + 60 + 15 * n}
            for n, item in enumerate(viewed)
        ]
        acked_at = asyncio.run(_send_acknowledged(worker.settings, views))

        # Poll every 50 ms from the acknowledgement; keep going past the 2 s budget (up to a
        # deadline) so that a failure reports how long the shift really took, if it came at all.
        deadline = acked_at + 10.0
        shifted_at, last = None, {}
        while time.monotonic() < deadline:
            status, body = worker.get(f"/users/{USER}/recommendations?k=10", timeout=2.0)
            polled_at = time.monotonic()
            if status == 200:
                last = body
                if len(body["items"]) == 10 and in_category(body["items"], category_of, NEW_CATEGORY) >= 5:
                    shifted_at = polled_at
                    break
            time.sleep(max(0.0, POLL_S - (time.monotonic() - polled_at)))
        status, explained = worker.get(f"/users/{USER}/recommendations?k=10&explain=1")
        report = f"last answer:\n{describe(last, category_of)}\nexplained now:\n{describe(explained, category_of)}"
        assert shifted_at is not None, f"no top-10 with ≥ 5 {NEW_CATEGORY} items within 10 s of the last view's ack\n{report}"
        shift_s = shifted_at - acked_at
        # Said, not asserted: how many of the new category's items in the list are the viewed ones
        # themselves (the own-item layer) rather than items the shopper has not seen yet.
        revisits = sum(i["item_id"] in set(viewed) for i in last["items"] if category_of.get(i["item_id"]) == NEW_CATEGORY)
        print(f"\n{USER}: {in_category(last['items'], category_of, NEW_CATEGORY)} of the top-10 in {NEW_CATEGORY} "
              f"({revisits} of them among the 20 viewed) {shift_s * 1000:.0f} ms after the last view was acknowledged\n{report}")
        assert shift_s <= SHIFT_BUDGET_S, f"the shift took {shift_s:.2f} s (budget {SHIFT_BUDGET_S} s)\n{report}"

        # The profile moved with it: all 20 views are counted and the new category is in the domain layer.
        status, after = worker.get(f"/users/{USER}/profile")
        assert status == 200 and after["events"] == len(history) + len(views), after.get("events")
        assert NEW_CATEGORY in after["layers"]["domain"], after["layers"]["domain"]

        # exclude_seen=1 leaves out every item the profile holds (its item layer keeps the 200
        # heaviest), the 20 viewed among them, and still answers ten.
        status, unseen = worker.get(f"/users/{USER}/recommendations?k=10&exclude_seen=1")
        touched = set(after["layers"]["item"]) | set(viewed)
        assert status == 200 and len(unseen["items"]) == 10, unseen
        assert not touched & {i["item_id"] for i in unseen["items"]}, describe(unseen, category_of)
        assert worker.get(f"/users/{USER}/recommendations?exclude_seen=maybe")[0] == 400
    finally:
        worker.stop()
