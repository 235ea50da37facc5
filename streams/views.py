"""HTTP views (Faust web): profile, recommendations, health, metrics.

A user's request is routed with `table_route` to the worker that owns the
user's partition; ids are checked before routing so a bad request is answered
where it arrives.  A recommendation request is answered where it arrives when
that worker keeps a caught-up standby copy of the user's partition
(`answered_here`): with two workers, each serves every user from its own core.
"""
from __future__ import annotations

import asyncio
import functools
import hmac
import re
import time
from concurrent.futures import ThreadPoolExecutor

import aiohttp
from aiohttp import web as aiohttp_web
from faust import web

from strata.models.learned import LearnedRanker as Ranker
from strata.models.profile import LAYERS
from strata.models.ranking import RankRequest, Recommendations
from strata.streams.app import (
    app, catalog, catalog_table, end_offsets, events_route, factor_feed, profile_counts, served_ranker, settings,
    shop_feed, user_to_profile, user_to_vector,
)
from strata.streams import impressions
from strata.streams.batching import committed_offset, started_consumer
from strata.streams.metrics import metrics
from strata.streams.state import (
    count_keys, partition_of, read_profile, read_user_vector, read_value, standby_lag, track_changelogs,
)

# Printable characters, 1-128 of them (docs/design.md §2 ids); anything else is a 400.  Always with
# `fullmatch`: `$` would also match before a trailing newline.
_ID = re.compile(r"[^\x00-\x1f\x7f]{1,128}")
_FLAG = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
RECOMMENDATION_PARAMS = ("k", "category", "explain", "exclude_purchased", "exclude_seen")
MAX_QUERY_CHARS = 1024


#: what answers without the API token: probes and scrapes, which carry no shopper's data, and the
#: dashboard's page itself (no data: it asks for the token and sends it with every request it makes)
OPEN_PATHS = frozenset({"/healthz", "/metrics", "/ui"})


@aiohttp_web.middleware
async def require_token(request: aiohttp_web.Request, handler):
    """With STRATA_API_TOKEN set, every request but `OPEN_PATHS` must carry `Authorization: Bearer
    <token>` (compared in constant time): the views of this module, Faust's own (/router, /table,
    …) and requests another worker forwards (`table_route` passes the headers on)."""
    if request.path not in OPEN_PATHS:
        given = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(given, _EXPECTED_AUTHORIZATION):
            reason = "a bearer token is required" if not given else "the bearer token is not valid"
            return aiohttp_web.json_response({"error": f"{reason} (Authorization: Bearer <STRATA_API_TOKEN>)", "status": 401},
                                             status=401, headers={"WWW-Authenticate": 'Bearer realm="strata"'})
    return await handler(request)


_EXPECTED_AUTHORIZATION = f"Bearer {settings.api_token}".encode()
if settings.api_token:
    app.web.web_app.middlewares.append(require_token)


def check_query(query, allowed: tuple[str, ...]) -> str | None:
    """The reason a query string is refused (unknown, repeated or oversized parameters), or None."""
    if sum(len(k) + len(v) for k, v in query.items()) > MAX_QUERY_CHARS:
        return f"the query string is longer than {MAX_QUERY_CHARS} characters"
    for name in query.keys():
        if name not in allowed:
            return f"unknown query parameter {name[:40]!r}; known: {', '.join(allowed)}"
        if len(query.getall(name)) > 1:
            return f"query parameter {name!r} given more than once"
    return None


def flag(query, name: str, default: bool) -> bool:
    """A yes/no query parameter (1/0, true/false, yes/no); ValueError otherwise."""
    text = query.get(name)
    if text is None:
        return default
    try:
        return _FLAG[text.lower()]
    except KeyError:
        raise ValueError(f"{name} must be one of 1, 0, true, false, yes, no; got {text[:40]!r}") from None


def error(view: web.View, status: int, message: str) -> web.Response:
    return view.json({"error": message, "status": status}, status=status)


def parse_k(query) -> int:
    """The k of a query string (default 10): a whole number from 1 to 1000; ValueError otherwise."""
    k_text = query.get("k", "10")
    if not (k_text.isascii() and k_text.isdigit() and len(k_text) <= 4):
        raise ValueError(f"k must be a whole number from 1 to 1000, got {k_text[:40]!r}")
    k = int(k_text)
    if not 1 <= k <= 1000:
        raise ValueError(f"k must be from 1 to 1000, got {k}")
    return k


def parse_recommendation_query(query) -> dict:
    """k, category, explain, exclude_purchased, exclude_seen from a query string; ValueError says what is wrong."""
    problem = check_query(query, RECOMMENDATION_PARAMS)
    if problem:
        raise ValueError(problem)
    k = parse_k(query)
    category = query.get("category")
    if category is not None and not _ID.fullmatch(category):
        raise ValueError("category must be 1-128 printable characters")
    return {"k": k, "category": category, "explain": flag(query, "explain", False),
            "exclude_purchased": flag(query, "exclude_purchased", True), "exclude_seen": flag(query, "exclude_seen", False)}


def checked_user(allowed_query: tuple[str, ...] = (), parse=None):
    """Answer 400 for a malformed user id or query string where the request arrives, before
    `table_route` forwards it anywhere."""

    def decorate(handler):
        @functools.wraps(handler)
        async def wrapper(view: web.View, request: web.Request, user_id: str):
            if not _ID.fullmatch(user_id):
                return error(view, 400, "user_id must be 1-128 printable characters")
            try:
                if parse is not None:
                    parse(request.query)
                else:
                    problem = check_query(request.query, allowed_query)
                    if problem:
                        raise ValueError(problem)
            except ValueError as exc:
                return error(view, 400, str(exc))
            return await handler(view, request, user_id=user_id)

        return wrapper

    return decorate


# Changelog records a standby copy may trail its partition's end by and still answer: a few
# micro-batches of the owner.  Further behind (just assigned, catching up), the request is forwarded.
STANDBY_MAX_LAG = 2_000


OWNER_RETRY_AFTER_S = 1  # a rebalance hands a dead owner's partitions on within a session timeout


def owner_route(table, match_info: str):
    """`table_route`, except that an owner that cannot be reached (killed, restarting, its
    partitions not yet handed on) gets the client a JSON 503 with Retry-After instead of an
    HTML 500: the request is good, and the group has it answered again after the rebalance."""

    def decorate(handler):
        routed = app.table_route(table=table, match_info=match_info)(handler)

        @functools.wraps(handler)
        async def wrapper(view: web.View, request: web.Request, **kwargs):
            try:
                return await routed(view, request, **kwargs)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                metrics.owner_unreachable += 1
                return view.json({"error": f"the worker owning this user did not answer ({type(exc).__name__}); "
                                           "try again shortly", "status": 503},
                                 status=503, headers={"Retry-After": str(OWNER_RETRY_AFTER_S)})

        return wrapper

    return decorate


def answered_here(table, match_info: str):
    """`owner_route`, except that a worker keeping a caught-up standby copy of the key's partition
    answers the request itself, from that copy, instead of forwarding it to the owner.

    Forwarding costs the owner the whole request and this worker an HTTP round trip, so two
    workers that forward half their requests serve little more than one ("Scale-out" in
    docs/RESULTS.md).  The answer is the owner's as of the standby's last fetch (`standby_lag`).  Only for
    reads that tolerate that: the profile view keeps `table_route`, read-your-writes."""

    def decorate(handler):
        routed = owner_route(table=table, match_info=match_info)(handler)

        @functools.wraps(handler)
        async def wrapper(view: web.View, request: web.Request, **kwargs):
            lag = standby_lag(app, table, partition_of(table, request.match_info[match_info].encode()))
            if lag is not None and lag <= STANDBY_MAX_LAG:
                metrics.recommendations_from_standby += 1
                return await handler(view, request, **kwargs)
            return await routed(view, request, **kwargs)

        return wrapper

    return decorate


@app.task
async def track_routed_tables() -> None:
    await track_changelogs(app, (user_to_profile,))


@app.page("/users/{user_id}/profile")
@checked_user()
@owner_route(table=user_to_profile, match_info="user_id")
async def user_profile(view: web.View, request: web.Request, user_id: str) -> web.Response:
    profile = read_profile(user_to_profile, user_id)
    if profile is None:
        return error(view, 404, f"no profile for user {user_id!r}")
    params = settings.profile
    snap = profile.snapshot(params)
    return view.json(
        {
            "user_id": user_id,
            "as_of": snap["as_of"],
            "layers": snap["layers"],
            "events": snap["events"],
            "purchases": snap["purchases"],
            # the items touched last, most recent first, with the time each was last touched
            "recent": [{"item_id": item, "ts": profile.t["item"][item]} for item in profile.recent_items(10)],
            "params": {"beta": dict(params.beta), "half_life_s": dict(params.half_life_s), "caps": dict(params.caps)},
        }
    )


@app.page("/healthz")
async def healthz(view: web.View, request: web.Request) -> web.Response:
    assignment = app.assignor.assigned_actives()
    recovered = app.tables.recovery.completed.is_set()
    body = {
        "status": "ok" if recovered and not app.rebalancing else "starting",
        "app_id": settings.app_id,
        "advertised_url": str(app.conf.canonical_url),  # where table_route sends this worker's users
        "partitions": sorted(tp.partition for tp in assignment if tp.topic == settings.topic("events")),
        # Partitions of other workers whose profiles this one keeps a standby copy of (and answers
        # recommendations for); see `answered_here`.
        "standby_partitions": sorted(
            tp.partition for tp in app.assignor.assigned_standbys() if tp.topic == user_to_profile.changelog_topic.get_topic_name()
        ),
        "catalog_entries": catalog_entries() if recovered else 0,
        # Whether the activity (popularity, co-visitation, θ) and item-factor feeds have read their topics up
        # to where they ended at start-up; until then a worker serves from what it has read so far.
        "feeds_caught_up": {"activity": shop_feed.caught_up, "item-factors": factor_feed.caught_up},
        "layers": list(LAYERS),
        # The ranker's learned weights of the score's terms (models.terms) and how many steps they took.
        # `clock`: the shop's now in event time, which ranking decays profiles to (models.clock);
        # `activity_offset`: the activity topic's offset after the last record applied
        "ranker": {"theta": shop_feed.weights.as_dict(), "steps": shop_feed.steps, "covisit_items": len(shop_feed.covisits),
                   "clock": shop_feed.clock.now, "activity_offset": shop_feed.position},
    }
    if body["status"] != "ok":
        body["reason"] = ("recovering the tables from their changelogs" if body["partitions"] and not recovered
                          else "joining the group: partitions are being assigned")
    return view.json(body, status=200 if body["status"] == "ok" else 503)


@app.page("/model")
async def model_status(view: web.View, request: web.Request) -> web.Response:
    """The item-factor version this worker serves, the one an operator pinned (`strata model pin`;
    null: the newest is served), and the last messages of the factor topic it refused."""
    model = factor_feed.current
    return view.json({
        "version": model.version if model is not None else None,
        "items": len(model) if model is not None else 0,
        "dims": model.dims if model is not None else 0,
        "pinned": factor_feed.pinned,
        "refused": factor_feed.rejected[-5:],
    })


class _CatalogCount:
    """Items and categories in the catalog table.  Counting scans the whole table on the event
    loop, too much for every health probe, so it is redone only after the table changed: every applied or recovered catalog batch invalidates the catalog's views."""

    def __init__(self) -> None:
        self.changes: int | None = None
        self.count = 0

    def __call__(self) -> int:
        changes = catalog.item_category.changes
        if self.changes != changes:
            self.changes, self.count = changes, count_keys(catalog_table)
        return self.count


catalog_entries = _CatalogCount()


@app.page("/metrics")
async def prometheus(view: web.View, request: web.Request) -> web.Response:
    recovered = app.tables.recovery.completed.is_set()
    metrics.gauges["profiles_stored"] = profiles_stored() if recovered else 0
    model = factor_feed.current
    metrics.gauges["model_version"] = model.version if model is not None else 0
    metrics.gauges["model_items"] = len(model) if model is not None else 0
    metrics.gauges["changelog_records_recovered"] = events_route.recovered_records
    metrics.gauges["standby_records_applied"] = events_route.standby_records
    metrics.gauges["catalog_records_applied"] = events_route.global_records
    lags = {p: standby_lag(app, user_to_profile, p) for p in range(user_to_profile.partitions)}
    metrics.gauges["standby_lag"] = ("partition", {str(p): lag for p, lag in lags.items() if lag is not None})
    metrics.gauges["stale_batches_refetched"] = events_route.stale_batches
    metrics.gauges["ranker_weight"] = ("term", shop_feed.weights.as_dict())
    metrics.gauges["ranker_steps"] = shop_feed.steps
    metrics.gauges["covisit_items"] = len(shop_feed.covisits)
    metrics.gauges["covisit_pairs"] = shop_feed.pairs
    metrics.lag = await consumer_lag()
    return view.text(metrics.render(), content_type="text/plain; version=0.0.4")


def profiles_stored() -> int:
    """Profiles in the local store of this worker's active partitions (revoked partitions' files may
    linger on disk and are not counted): scanned once, then kept by the agent's writes."""
    topic = user_to_profile.changelog_topic.get_topic_name()
    return profile_counts.count(sorted({tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic}))


async def consumer_lag() -> dict[int, int]:
    """Per assigned partition of the events topic: the broker's end offset (asked now, so right
    while fetching is paused for recovery, by `streams.feeds.EndOffsets` on this loop; the last
    fetch's high-water mark if the broker does not answer within 2 s) minus the next offset this
    worker has to process (processed and flushed, else its committed offset).  Kafka's view of
    the same, from committed offsets: `strata kafka lag`."""
    consumer = started_consumer(app)
    if consumer is None:
        return {}
    topic = settings.topic("events")
    tps = [tp for tp in consumer.assignment() if tp.topic == topic]
    if not tps:
        return {}
    try:
        ends = dict(await asyncio.wait_for(end_offsets(tps), 2.0))
    except Exception:  # noqa: BLE001 - a broker hiccup must not fail the scrape
        ends = {}
    out: dict[int, int] = {}
    for tp in tps:
        end = ends.get(tp)
        if end is None:
            try:
                end = consumer.highwater(tp)
            except Exception:  # noqa: BLE001 - not fetched yet
                end = None
        if end is None:
            continue
        done = events_route.done.get(tp)
        if done is None:
            done = committed_offset(consumer, tp) or 0
        out[tp.partition] = max(0, end - done)
    return out


class _RankQueue:
    """Concurrent recommendation requests, ranked together.

    Ranking is plain Python: a batch is planned (the users' fold-ins) and answered on the event
    loop, or, when it asks for more than `HEAVY_K` items in all, answered on a thread, where the
    event loop's thread takes the GIL back at every switch interval and the stream keeps its
    share.  Requests that arrive while others are ranked wait in their sockets; here they meet
    again.  A request is queued, and the queue is planned once it stopped growing from one turn
    of the loop to the next (the requests read in one turn reach it over the next few, through
    aiohttp and the views), or after `MAX_TURNS` turns: at most `MAX_BATCH` requests together.
    A lone request waits for a turn or two of an idle loop, microseconds.  A batch that fails is
    ranked again request by request, so one bad request fails alone.
    """

    MAX_BATCH = 16  # requests planned together
    MAX_TURNS = 4
    AHEAD = 2  # batches being ranked; more waiting grows the next batch
    HEAVY_K = 200  # a batch asking for more items than this in all is answered on the thread

    def __init__(self) -> None:
        self.pending: list[tuple[Ranker, RankRequest, asyncio.Future]] = []
        self.scheduled = False
        self._seen = 0  # queue length at the last turn, while waiting for it to stop growing
        self._turns = 0
        self._ahead = 0  # batches being ranked
        self._tasks: set[asyncio.Task] = set()
        # One thread: its answers hold the GIL but for the switch intervals, more would only queue.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="strata-answers")

    def rank(self, ranker: Ranker, request: RankRequest) -> "asyncio.Future[Recommendations]":
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((ranker, request, future))
        if not self.scheduled:
            self.scheduled = True
            loop.call_soon(self._run)
        return future

    def _run(self) -> None:
        n = len(self.pending)
        loop = asyncio.get_running_loop()
        if self._ahead >= self.AHEAD:
            self.scheduled = False  # the next product to finish runs this again
            return
        if n < self.MAX_BATCH and n > self._seen and self._turns < self.MAX_TURNS:
            self._seen, self._turns = n, self._turns + 1
            loop.call_soon(self._run)
            return
        self._seen = self._turns = 0
        batch, self.pending = self.pending[: self.MAX_BATCH], self.pending[self.MAX_BATCH :]
        self.scheduled = bool(self.pending)
        if self.scheduled:  # the rest after the loop's next turn, so the stream gets its share
            loop.call_soon(self._run)
        batch = [item for item in batch if not item[2].done()]  # a client that went away
        by_ranker: dict[int, list[tuple[Ranker, RankRequest, asyncio.Future]]] = {}
        for item in batch:
            by_ranker.setdefault(id(item[0]), []).append(item)
        for items in by_ranker.values():
            self._ahead += 1
            task = loop.create_task(self._rank(items[0][0], items))
            self._tasks.add(task)  # the loop keeps only a weak reference to a task
            task.add_done_callback(self._tasks.discard)

    async def _rank(self, ranker: Ranker, items: list[tuple[Ranker, RankRequest, asyncio.Future]]) -> None:
        try:
            try:
                planned = ranker.plan([request for _, request, _ in items])
                loop = asyncio.get_running_loop()
                if sum(request.k for _, request, _ in items) > self.HEAVY_K:
                    answers = await loop.run_in_executor(self._thread, _answers, ranker, planned)
                else:  # a cheap batch: the hop to the thread and back would cost more than its answers
                    answers = None
            finally:
                self._ahead -= 1
                if self.pending and not self.scheduled:
                    self.scheduled = True
                    asyncio.get_running_loop().call_soon(self._run)
            if answers is None:
                answers = ranker.finish(planned)
        except Exception:  # noqa: BLE001 - find the request that fails
            for _, request, future in items:
                if future.done():
                    continue
                try:
                    future.set_result(ranker.recommend_many([request])[0])
                except Exception as exc:  # noqa: BLE001 - its own caller answers it
                    future.set_exception(exc)
        else:
            for (_, _, future), answer in zip(items, answers):
                if not future.done():  # its client went away meanwhile
                    future.set_result(answer)
        metrics.recommendations += len(items)
        metrics.recommendation_batches += 1


def _answers(ranker: Ranker, planned) -> list:
    """A planned batch's answers, on the thread: while they run the event loop's thread takes the
    GIL back at every switch interval, so a batch of expensive requests (k=1000&explain=1) shares
    the loop with the stream instead of holding it.  They read popularity and co-visitation that
    the stream may change meanwhile: an answer is then as of a moment later, and a read that fails
    sends the batch back to `_RankQueue._rank`'s one-by-one path on the loop."""
    return ranker.finish(planned)


rank_queue = _RankQueue()


class Admission:
    """At most `limit` units of recommendation work ranked or waiting at once (STRATA_MAX_RANKING):
    a request of k items costs ⌈k / `ITEMS_PER_UNIT`⌉ units (at most the whole limit), so the
    usual k ≤ 20 costs one and k=1000 fifty.

    Ranking shares the event loop with the stream; without a bound, a flood of expensive requests
    (k=1000&explain=1 from hundreds of clients) queues work the loop must do before events reach
    their profiles again, and every request waits behind all of it.  Over the limit a
    request is answered at once, 503 with Retry-After, and costs the loop next to nothing.  The
    bound caps the work queued, not the loop's share: the admitted requests can still keep the
    stream waiting (docs/RESULTS.md, "Under an HTTP flood")."""

    RETRY_AFTER_S = 1
    ITEMS_PER_UNIT = 20

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.inside = 0

    def cost(self, k: int) -> int:
        return min(self.limit, max(1, -(-k // self.ITEMS_PER_UNIT)))

    def enter(self, cost: int = 1) -> bool:
        if self.inside + cost > self.limit:
            metrics.recommendations_refused += 1
            return False
        self.inside += cost
        return True

    def leave(self, cost: int = 1) -> None:
        self.inside -= cost

    def busy(self, view: web.View) -> web.Response:
        return view.json({"error": "too many recommendations are being ranked; try again shortly", "status": 503},
                         status=503, headers={"Retry-After": str(self.RETRY_AFTER_S)})


admission = Admission(settings.max_ranking)


@app.page("/items/{item_id}/similar")
async def similar_items(view: web.View, request: web.Request, item_id: str) -> web.Response:
    """The items shoppers visit next to `item_id`, by the shop's co-visitation (every worker holds
    all of it, so any worker answers), then the items its factors are closest to (the batch
    model: shoppers who take one take the other), then popular items of its category to fill k.
    404 for an item none of them knows."""
    if not _ID.fullmatch(item_id):
        return error(view, 400, "item_id must be 1-128 printable characters")
    try:
        problem = check_query(request.query, ("k",))
        if problem:
            raise ValueError(problem)
        k = parse_k(request.query)
    except ValueError as exc:
        return error(view, 400, str(exc))
    items = [{"item_id": j, "score": s, "because": ["often visited with it"]} for j, s in shop_feed.covisits.similar(item_id, k)]
    have = {item_id, *(i["item_id"] for i in items)}
    model = factor_feed.current
    known = bool(items) or (model is not None and item_id in model.index)
    if len(items) < k and model is not None:
        for j, s in model.neighbours(item_id, k + len(have)):
            if j not in have and len(items) < k:
                items.append({"item_id": j, "score": s, "because": ["shoppers who take it take this (item factors)"]})
                have.add(j)
    category = catalog.category_of(item_id)
    if not known and category is None:
        return error(view, 404, f"no item {item_id!r}: not in the catalog, the co-visitation or the item factors")
    if len(items) < k and category is not None:
        for j in shop_feed.popularity.top_ranked(k + len(have), category)[0]:
            if j not in have and len(items) < k:
                items.append({"item_id": j, "score": 0.0, "because": [f"popular in {category}"]})
    return view.json({"item_id": item_id, "category": category, "items": items})


@app.page("/users/{user_id}/recommendations")
@checked_user(parse=parse_recommendation_query)
@answered_here(table=user_to_profile, match_info="user_id")
async def user_recommendations(view: web.View, request: web.Request, user_id: str) -> web.Response:
    try:
        options = parse_recommendation_query(request.query)  # checked before routing too (checked_user)
    except ValueError as exc:
        return error(view, 400, str(exc))
    cost = admission.cost(options["k"])
    if not admission.enter(cost):
        return admission.busy(view)
    try:
        body = await _recommend(user_id, options)
    finally:
        admission.leave(cost)
    return view.json(body)


async def _recommend(user_id: str, options: dict) -> dict:
    k, category, explain, exclude = options["k"], options["category"], options["explain"], options["exclude_purchased"]
    profile = read_profile(user_to_profile, user_id)
    ranker = served_ranker()
    variant = impressions.variant_of(user_id)
    # Event time, not wall time: the shop's clock (models.clock: recent event times, which one
    # far-ahead timestamp cannot move), so a user who went quiet while the shop moved on counts as
    # stale; or the user's own latest event, which counts for them alone.
    now = max(t for t in (profile.last_ts if profile else None, shop_feed.clock.now, 0.0) if t is not None) or time.time()
    recs = await rank_queue.rank(ranker, RankRequest(
        profile=profile,
        k=k,
        popularity=shop_feed.popularity,
        now=now,
        profile_params=settings.profile,
        category=category,
        exclude_purchased=exclude,
        long_term=read_user_vector(user_to_vector, user_id, ranker.model),
        explain=explain,
        user_id=user_id,
        exclude_seen=options["exclude_seen"],
        theta=impressions.theta_of(variant),
    ))
    body = recs.to_dict()
    body["model_version"] = ranker.version
    body["rec_id"] = impressions.new_rec_id()
    body["variant"] = variant.name
    if category is not None and not body["items"]:
        body["note"] = f"no item of category {category!r} is known (neither a category nor a root of the catalog with items)"
    impressions.publish(impressions.impression(body["rec_id"], user_id, body, options, variant.name))
    return body
