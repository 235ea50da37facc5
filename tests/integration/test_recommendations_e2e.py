"""Replay → train → live recommendations through the worker's HTTP view (docs/design.md §3-§4)."""
from __future__ import annotations

import asyncio
import random
import subprocess
import threading

import pytest

from strata.models.logs.loaders import open_log
from strata.streams import replay
from tests.integration.harness import Worker, isolated_env, publish, strata_cli, wait_until

pytestmark = pytest.mark.integration


def strata(worker: Worker, *args: str) -> subprocess.CompletedProcess:
    return strata_cli(worker.env, *args, timeout=300)


def model_version(worker: Worker):
    return worker.get("/model")[1].get("version")  # (asking for a list would serve one, and store it)


@pytest.fixture(scope="module")
def trained(kafka, tmp_path_factory):
    """A worker with a replayed synthetic shop and one trained factor version."""
    source = open_log("users=300,items=1500,events=12000", "synthetic", seed=21)
    events = list(source.events())
    catalog = list(source.catalog())
    worker = Worker(isolated_env(kafka, "recs"), tmp_path_factory.mktemp("recs") / "data")
    worker.start()
    try:
        publish(worker.settings, catalog, [])
        wait_until(lambda: worker.get("/healthz")[1].get("catalog_entries", 0) >= len(catalog), 30, "catalog loaded")
        # At a shop's pace, not all at once: the next-event learner takes ten steps a second, and
        # θ is checked for having learned from the replay.
        summary = asyncio.run(replay.publish(worker.settings, [], events, rate=3_000, progress=False))
        wait_until(lambda: worker.metric("strata_events_processed_total") >= summary.sent, 120, "replay processed")
        result = strata(worker, "train", "--factors", "16", "--iterations", "5")
        assert result.returncode == 0, result.stderr
        assert "published item factors version" in result.stdout
        wait_until(lambda: model_version(worker) is not None, 30, "the factor version to be served")
        yield worker, events, catalog
    finally:
        worker.stop()


def test_every_user_gets_k_recommendations_explained_and_unpurchased(trained):
    worker, events, _ = trained
    purchased: dict[str, set] = {}
    for e in events:
        if e["type"] == "purchase":
            purchased.setdefault(e["user_id"], set()).add(e["item_id"])
    users = sorted({e["user_id"] for e in events})
    for user in users:
        status, body = worker.get(f"/users/{user}/recommendations?k=10&explain=1")
        assert status == 200, body
        assert body["model_version"] is not None and not body["cold_start"]
        items = body["items"]
        assert len(items) == 10
        assert not {i["item_id"] for i in items} & purchased.get(user, set())
        for item in items:
            assert set(item["layers"]) == {"item", "domain", "overall"}
            assert sum(item["layers"].values()) == pytest.approx(item["score"], rel=1e-9, abs=1e-12)
            assert item["because"], item
        scores = [i["score"] for i in items]
        assert scores == sorted(scores, reverse=True)


def _pairs(events) -> dict[str, set[str]]:
    """The items each item can be co-visited with by the stream's rule: an event pairs its item with
    some of the user's last 20 distinct items."""
    pairs: dict[str, set[str]] = {}
    recent: dict[str, list[str]] = {}
    for e in sorted(events, key=lambda e: e["ts"]):
        window = recent.setdefault(e["user_id"], [])
        for other in window[-20:]:
            if other != e["item_id"]:
                pairs.setdefault(other, set()).add(e["item_id"])
                pairs.setdefault(e["item_id"], set()).add(other)
        if e["item_id"] in window:
            window.remove(e["item_id"])
        window.append(e["item_id"])
    return pairs


def test_similar_items_come_from_the_streams_co_visitation_and_theta_is_visible(trained):
    worker, events, _ = trained
    pairs = _pairs(events)
    item = max(pairs, key=lambda i: len(pairs[i]))
    status, body = worker.get(f"/items/{item}/similar?k=5")
    assert status == 200, body
    got = [i["item_id"] for i in body["items"]]
    assert len(got) == 5 and item not in got
    assert got[0] in pairs[item] and body["items"][0]["score"] > 0  # close to it in some shopper's history
    assert worker.get("/items/never-seen/similar?k=3")[0] == 404
    status, wide = worker.get(f"/items/{item}/similar?k=300")
    reasons = {r for i in wide["items"] for r in i["because"]}
    assert status == 200 and "shoppers who take it take this (item factors)" in reasons, reasons
    assert worker.get(f"/items/{item}/similar?k=0")[0] == 400
    assert worker.get(f"/items/{item}/similar?n=3")[0] == 400
    ranker = worker.get("/healthz")[1]["ranker"]
    assert ranker["covisit_items"] > 100 and set(ranker["theta"]) >= {"own", "cv_short", "factor", "domain", "pop"}
    # up to eight pairs an event paired (all of them below 2,000 events/s, a sample above: the replay is faster)
    assert 0 < worker.metric("strata_covisit_pairs") <= 8 * len(events)
    assert worker.metric('strata_ranker_weight{term="cv_short"}') == pytest.approx(ranker["theta"]["cv_short"], rel=1e-3, abs=1e-4)
    assert worker.metric("strata_ranker_steps") >= 1  # θ learned from the replay (ten events a second)


def test_new_user_gets_popular_items_and_category_filter_holds(trained):
    worker, _, catalog = trained
    status, body = worker.get("/users/someone-new/recommendations?k=5")
    assert status == 200 and body["cold_start"] is True and len(body["items"]) == 5
    item_category = {r["item_id"]: r["category_id"] for r in catalog if "item_id" in r}
    category = item_category[body["items"][0]["item_id"]]
    for user in ("someone-new", "u1"):
        status, body = worker.get(f"/users/{user}/recommendations?k=5&category={category}")
        assert status == 200 and body["items"] and "note" not in body
        assert {item_category[i["item_id"]] for i in body["items"]} == {category}
    status, body = worker.get("/users/u1/recommendations?k=5&category=no-such-category")
    assert status == 200 and body["items"] == [] and "no item of category 'no-such-category'" in body["note"]


@pytest.mark.parametrize("query", ["k=0", "k=1001", "k=ten", "category=%00bad"])
def test_bad_queries_get_400(trained, query):
    worker, _, _ = trained
    status, body = worker.get(f"/users/u1/recommendations?{query}")
    assert status == 400 and body["error"]


def test_concurrent_requests_are_ranked_together_and_answered_as_alone(trained):
    """Requests in flight together meet in the worker's rank queue (one matrix product for the
    batch); every answer is the one the same request gets on its own."""
    import aiohttp

    worker, events, catalog = trained
    users = sorted({e["user_id"] for e in events} - {"u1"})[:60]  # u1 moves in the next test
    category = next(r["category_id"] for r in catalog if "item_id" in r)
    paths = [f"/users/{u}/recommendations?k=10&explain=1" for u in users]
    paths += ["/users/nobody/recommendations?k=5", f"/users/u3/recommendations?k=5&category={category}"]
    alone = [worker.get(path) for path in paths]
    assert all(status == 200 for status, _ in alone)
    requests0 = worker.metric("strata_recommendations_total")
    batches0 = worker.metric("strata_recommendation_batches_total")

    async def together():
        async with aiohttp.ClientSession(worker.url, connector=aiohttp.TCPConnector(limit=len(paths))) as session:

            async def get(path):
                async with session.get(path) as response:
                    return response.status, await response.json()

            return await asyncio.gather(*(get(path) for path in paths))

    def listed(answers):  # each served list has its own rec_id: the lists themselves must agree
        return [(status, {k: v for k, v in body.items() if k != "rec_id"}) for status, body in answers]

    assert listed(asyncio.run(together())) == listed(alone)
    requests = worker.metric("strata_recommendations_total") - requests0
    batches = worker.metric("strata_recommendation_batches_total") - batches0
    assert requests == len(paths)
    assert batches < requests, f"{requests} requests in flight together were ranked one at a time"


def test_dynamic_adjustment_moves_a_user_to_a_new_category(trained):
    worker, events, catalog = trained
    user = "u1"
    _, profile = worker.get(f"/users/{user}/profile")
    domain = profile["layers"]["domain"]
    top = max(domain, key=domain.get)
    item_category = {r["item_id"]: r["category_id"] for r in catalog if "item_id" in r}
    by_category: dict[str, list[str]] = {}
    for item, cat in item_category.items():
        by_category.setdefault(cat, []).append(item)
    target = next(c for c in sorted(by_category) if c not in domain and len(by_category[c]) >= 20)
    rng = random.Random(1)
    ts = profile["as_of"] + 60
    burst = [
        {"event_id": f"burst-{n}", "user_id": user, "item_id": rng.choice(by_category[target]), "type": "click", "ts": ts + n, "category_id": target}
        for n in range(20)
    ]
    publish(worker.settings, [], burst)

    def moved():
        _, p = worker.get(f"/users/{user}/profile")
        d = p["layers"]["domain"]
        if max(d, key=d.get) != target:
            return False
        _, recs = worker.get(f"/users/{user}/recommendations?k=10")
        return sum(item_category.get(i["item_id"]) == target for i in recs["items"]) >= 5

    wait_until(moved, 2.0, f"{target} to lead {user}'s domain layer and half the top-10", interval=0.05)
    assert top != target


def test_swap_under_load_never_fails_nor_goes_back(trained):
    worker, _, _ = trained
    seen: list = []
    failures: list = []
    stop = threading.Event()

    def query():
        while not stop.is_set():
            status, body = worker.get("/users/u2/recommendations?k=10")
            if status != 200:
                failures.append((status, body))
            else:
                seen.append(body["model_version"])

    thread = threading.Thread(target=query)
    thread.start()
    try:
        start = model_version(worker)
        for _ in range(2):
            result = strata(worker, "train", "--factors", "16", "--iterations", "3")
            assert result.returncode == 0, result.stderr
        wait_until(lambda: seen and seen[-1] != start and len(set(seen)) >= 3, 60, "two new versions served")
    finally:
        stop.set()
        thread.join()
    assert not failures, failures[:3]
    assert seen == sorted(seen), "model_version went backwards"


def test_corrupt_factors_are_refused_and_the_last_version_survives_a_restart(trained):
    import numpy as np

    from strata.models.factors import FactorModel, to_messages
    from strata.streams.replay import new_producer

    worker, _, _ = trained
    serving = model_version(worker)
    bad = FactorModel(serving + 10**6, ("i1", "i2"), np.ones((2, 16), dtype=np.float32), {})
    messages = to_messages(bad)
    key, value = messages[0]
    messages[0] = (key, value[:-4] + b"\x00\x00\x80\x7f")  # a float turned into +inf: the checksum cannot hold

    async def send():
        producer = new_producer(worker.settings)
        await producer.start()
        try:
            for k, v in messages:
                await producer.send_and_wait(worker.settings.topic("item-factors"), v, key=k)
        finally:
            await producer.stop()

    asyncio.run(send())
    wait_until(lambda: worker.metric("strata_factor_messages_refused_total") >= 1, 30, "the corrupt version to be refused")
    assert model_version(worker) == serving

    # The last complete version is on disk: a restarted worker serves it from its first answer.
    worker.stop()
    worker.start()
    assert model_version(worker) == serving


def test_a_served_list_is_on_the_impressions_topic(trained):
    """Every served list has a rec_id and its impression — user, items with their scores by layer and
    term, variant, model version, time, the request's filters — is on the impressions topic, keyed by user."""
    import orjson

    from tests.integration.harness import read_topic

    worker, events, _ = trained
    user = events[5]["user_id"]
    status, body = worker.get(f"/users/{user}/recommendations?k=4&explain=1&exclude_seen=1")
    assert status == 200 and len(body["rec_id"]) == 32
    wait_until(lambda: worker.metric('strata_impressions_total{outcome="published"}') >= 1, 30, "the impression published")
    records = read_topic(worker.settings, worker.settings.topic("impressions"), 10_000, timeout=5)
    mine = [r for r in records if orjson.loads(r.value)["rec_id"] == body["rec_id"]]
    assert len(mine) == 1 and mine[0].key == user.encode()
    impression = orjson.loads(mine[0].value)
    assert [i["item_id"] for i in impression["items"]] == [i["item_id"] for i in body["items"]]
    assert [i["position"] for i in impression["items"]] == [0, 1, 2, 3]
    assert impression["items"][0]["terms"] and impression["items"][0]["layers"] == body["items"][0]["layers"]
    assert impression["variant"] == "control" and impression["model_version"] == body["model_version"]
    assert impression["filters"] == {"k": 4, "category": None, "exclude_purchased": True, "exclude_seen": True}
    assert worker.metric('strata_impressions_total{outcome="dropped"}') == 0
