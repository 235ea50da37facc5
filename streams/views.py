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
from streams.app import app, catalog_table, settings, user_to_profile
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
