"""The purchase filter is exact within STRATA_PURCHASE_HORIZON: 64 shoppers with hundreds of
purchases each (grocery-like: they re-buy from a few hundred items) are never recommended an item
they bought, however long ago within the horizon and however many purchases since."""
from __future__ import annotations

import random

import pytest

from tests.integration.harness import Worker, group_caught_up, isolated_env, publish, wait_until

pytestmark = pytest.mark.integration

SHOPPERS, PURCHASES, ITEMS, K = 64, 300, 400, 100
DAY = 86_400.0
T0 = 1_700_000_000.0


def _shop(rng: random.Random) -> tuple[list[dict], list[dict]]:
    """A catalogue of ITEMS items in 8 aisles; each shopper buys PURCHASES times over 200 days
    from their own favourite half of the shop, viewing an item before each purchase."""
    catalog = [{"category_id": f"aisle{a}", "parent_id": None} for a in range(8)]
    catalog += [{"item_id": f"i{n}", "category_id": f"aisle{n % 8}"} for n in range(ITEMS)]
    events = []
    for s in range(SHOPPERS):
        favourites = rng.sample(range(ITEMS), ITEMS // 2)
        for n in range(PURCHASES):
            item = f"i{rng.choice(favourites)}"
            ts = T0 + 200 * DAY * n / PURCHASES
            for etype, dt in (("view", 0.0), ("purchase", 30.0)):
                events.append({"event_id": f"s{s}-{n}-{etype}", "user_id": f"s{s}", "item_id": item,
                               "type": etype, "ts": ts + dt})
    events.sort(key=lambda e: e["ts"])
    return catalog, events


def test_no_purchased_item_is_ever_recommended(kafka, tmp_path):
    catalog, events = _shop(random.Random(3))
    bought: dict[str, list[str]] = {}
    for e in events:
        if e["type"] == "purchase":
            bought.setdefault(e["user_id"], []).append(e["item_id"])
    worker = Worker(isolated_env(kafka, "purchases"), tmp_path / "data")
    worker.start()
    try:
        publish(worker.settings, catalog, [])
        wait_until(lambda: worker.get("/healthz")[1].get("catalog_entries", 0) >= len(catalog), 30, "catalog loaded")
        publish(worker.settings, [], events)
        wait_until(lambda: group_caught_up(worker.settings) and worker.metric("strata_events_processed_total") == len(events),
                   180, "every event applied")
        old_ones_shown = 0  # with the filter off: items bought before a shopper's last 50 purchases
        for user, items in bought.items():
            status, body = worker.get(f"/users/{user}/recommendations?k={K}")
            assert status == 200, body
            shown = [r["item_id"] for r in body["items"]]
            assert len(shown) == K
            assert not set(shown) & set(items), (user, sorted(set(shown) & set(items)))
            status, unfiltered = worker.get(f"/users/{user}/recommendations?k={K}&exclude_purchased=0")
            assert status == 200, unfiltered
            early = set(items[:-50]) - set(items[-50:])
            old_ones_shown += len({r["item_id"] for r in unfiltered["items"]} & early)
        assert old_ones_shown > 0  # the filter had something to do that the last 50 purchases miss
    finally:
        worker.stop()
