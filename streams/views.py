"""HTTP views (Faust web): profile, health, metrics.

A user's request is routed with `table_route` to the worker that owns the
user's partition; ids are checked before routing so a bad request is answered
where it arrives.
"""
from __future__ import annotations

import functools
import re

from faust import web

from models.profile import LAYERS
import time

import numpy as np

from models.ranking import Ranker
from streams.app import app, catalog, catalog_table, factor_feed, popularity_feed, rank_params, settings, user_to_profile, user_to_vector
from streams.metrics import metrics
from streams.state import count_keys, read_profile

# Printable characters, 1-128 of them (SPEC §2 ids); anything else is a 400.
_ID = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")


def error(view: web.View, status: int, message: str) -> web.Response:
    return view.json({"error": message, "status": status}, status=status)


def checked_user(handler):
    """Answer 400 for a malformed user id before the request is routed anywhere."""

    @functools.wraps(handler)
    async def wrapper(view: web.View, request: web.Request, user_id: str):
        if not _ID.match(user_id):
            return error(view, 400, "user_id must be 1-128 printable characters")
        return await handler(view, request, user_id=user_id)

    return wrapper


@app.page("/users/{user_id}/profile")
@checked_user
@app.table_route(table=user_to_profile, match_info="user_id")
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
        "partitions": sorted(tp.partition for tp in assignment if tp.topic == settings.topic("events")),
        "catalog_entries": count_keys(catalog_table) if recovered else 0,
        "layers": list(LAYERS),
    }
    return view.json(body, status=200 if body["status"] == "ok" else 503)


@app.page("/metrics")
async def prometheus(view: web.View, request: web.Request) -> web.Response:
    metrics.gauges["profiles_stored"] = count_keys(user_to_profile) if app.tables.recovery.completed.is_set() else 0
    return view.text(metrics.render(), content_type="text/plain; version=0.0.4")


class _Rankers:
    """The ranker of the current factor version, rebuilt off the event loop when a new version lands."""

    def __init__(self) -> None:
        self.current = Ranker(None, catalog.category_of, catalog.root_of, rank_params)

    async def refresh(self) -> None:
        model = factor_feed.current
        if model is not None and self.current.version != model.version:
            ranker = await app.loop.run_in_executor(None, Ranker, model, catalog.category_of, catalog.root_of, rank_params)
            self.current = ranker  # one assignment: a request uses the old ranker or the new one


rankers = _Rankers()


@app.timer(interval=0.5)
async def refresh_ranker() -> None:
    await rankers.refresh()


def _long_term(user_id: str, version) -> np.ndarray | None:
    from streams.trainer import parse_user_vector

    raw = user_to_vector.data._get(user_id.encode())
    if raw is None:
        return None
    vector_version, vector = parse_user_vector(raw)
    model = factor_feed.current
    if model is None or vector.shape[0] != model.dims:
        return None
    return vector


@app.page("/users/{user_id}/recommendations")
@checked_user
@app.table_route(table=user_to_profile, match_info="user_id")
async def user_recommendations(view: web.View, request: web.Request, user_id: str) -> web.Response:
    query = request.query
    try:
        k = int(query.get("k", "10"))
    except ValueError:
        return error(view, 400, f"k must be a whole number from 1 to 1000, got {query.get('k')!r:.40}")
    if not 1 <= k <= 1000:
        return error(view, 400, f"k must be from 1 to 1000, got {k}")
    category = query.get("category")
    if category is not None and not _ID.match(category):
        return error(view, 400, "category must be 1-128 printable characters")
    explain = query.get("explain", "0").lower() in ("1", "true", "yes")
    exclude = query.get("exclude_purchased", "1").lower() not in ("0", "false", "no")

    profile = read_profile(user_to_profile, user_id)
    if rankers.current.version is None and factor_feed.current is not None:
        await rankers.refresh()  # just started with a model from disk: build its ranker before answering
    ranker = rankers.current
    # Event time, not wall time: the newest event seen anywhere, so a user who went quiet while
    # the shop moved on counts as stale (and leans on popularity).
    now = max(t for t in (profile.last_ts if profile else None, popularity_feed.popularity.last_ts, 0.0) if t is not None) or time.time()
    recs = ranker.recommend(
        profile,
        k=k,
        popularity=popularity_feed.popularity,
        now=now,
        category=category,
        exclude_purchased=exclude,
        long_term=_long_term(user_id, ranker.version),
        explain=explain,
        profile_params=settings.profile,
        user_id=user_id,
    )
    body = recs.to_dict()
    body["model_version"] = ranker.version
    return view.json(body)
