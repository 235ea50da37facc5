"""The behaviour event of docs/design.md §2 and its validation.

`parse_event` is the single gate every event passes, whether it arrives on the
events topic, is replayed from a log, or is fed to the offline evaluator.  A
rejected event raises `InvalidEvent` whose `reason` is a short stable code
(used as a metrics label and in the dead-letter record) and whose message says
what exactly was wrong.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

EVENT_TYPES: tuple[str, ...] = ("view", "click", "fav", "cart", "purchase")
_EVENT_TYPE_SET = frozenset(EVENT_TYPES)
MAX_ID_LEN = 128
MAX_CONTEXT_BYTES = 4096
MAX_FUTURE_S = 86_400.0
_ID_INT_BOUND = 10**MAX_ID_LEN  # an integer id beyond it has too many digits (and str() of it may fail)


class InvalidEvent(ValueError):
    """An event that breaks a rule of docs/design.md §2."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Event(NamedTuple):
    """A validated behaviour event.  A named tuple rather than a frozen dataclass: building
    one is ~5x cheaper (it happens for every event on every path), and tuples of plain
    values are invisible to the garbage collector."""

    event_id: str
    user_id: str
    item_id: str
    type: str
    ts: float
    category_id: str | None = None
    context: dict | None = None
    rec_id: str | None = None  # the served list it came from (docs/design.md §2, models.attribution)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "type": self.type,
            "ts": self.ts,
        }
        if self.category_id is not None:
            out["category_id"] = self.category_id
        if self.context is not None:
            out["context"] = self.context
        if self.rec_id is not None:
            out["rec_id"] = self.rec_id
        return out

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


def _id(obj: dict, field: str, required: bool = True) -> str | None:
    value = obj.get(field)
    if type(value) is str and 0 < len(value) <= MAX_ID_LEN and value.isprintable():
        return value  # the common case, checked in one line: this runs 3-4 times per event on the hot path
    if value is None:
        if required:
            raise InvalidEvent("missing_field", f"'{field}' is required")
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidEvent("wrong_type", f"'{field}' must be a string, got {type(value).__name__}")
    if isinstance(value, int) and not -_ID_INT_BOUND < value < _ID_INT_BOUND:
        raise InvalidEvent("bad_id", f"'{field}' must be 1-{MAX_ID_LEN} characters, got a longer integer")
    value = str(value)
    if not 1 <= len(value) <= MAX_ID_LEN:
        raise InvalidEvent("bad_id", f"'{field}' must be 1-{MAX_ID_LEN} characters, got {len(value)}")
    if not value.isprintable():
        raise InvalidEvent("bad_id", f"'{field}' contains control characters")
    return value


def _lenient_json(raw: bytes | str):
    import json

    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


def parse_event(raw: bytes | str | dict, now: float) -> Event:
    """Validate one event (raw JSON or an already decoded object) against docs/design.md §2.

    `now` is the wall-clock time the `ts` is checked against (at most one day
    in the future).  Integer ids are accepted and turned into strings, since
    several public logs use numeric ids.
    """
    if isinstance(raw, dict):
        obj = raw
    else:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            obj = _lenient_json(raw)  # NaN / Infinity: JSON-ish, and worth a precise reason
            if obj is None:
                raise InvalidEvent("not_json", f"not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise InvalidEvent("not_object", f"expected a JSON object, got {type(obj).__name__}")

    # The common case, every rule below checked in one expression (this runs for every event on
    # the hot path); anything it does not accept goes through the checks that say what is wrong.
    get = obj.get
    event_id, user_id, item_id, category_id = get("event_id"), get("user_id"), get("item_id"), get("category_id")
    etype, ts = get("type"), get("ts")
    if (
        type(event_id) is str and 0 < len(event_id) <= MAX_ID_LEN and event_id.isprintable()
        and type(user_id) is str and 0 < len(user_id) <= MAX_ID_LEN and user_id.isprintable()
        and type(item_id) is str and 0 < len(item_id) <= MAX_ID_LEN and item_id.isprintable()
        and (category_id is None or (type(category_id) is str and 0 < len(category_id) <= MAX_ID_LEN and category_id.isprintable()))
        and type(etype) is str and etype in _EVENT_TYPE_SET
        and (type(ts) is float or type(ts) is int) and 0 <= ts <= now + MAX_FUTURE_S  # NaN and ±inf fail
        and get("context") is None and get("rec_id") is None
    ):
        return Event(event_id, user_id, item_id, etype, float(ts), category_id, None)
    return _checked_event(obj, now)


def _checked_event(obj: dict, now: float) -> Event:
    """`parse_event` of a decoded object, one rule at a time: the reason of the first rule broken."""
    event_id = _id(obj, "event_id")
    user_id = _id(obj, "user_id")
    item_id = _id(obj, "item_id")
    category_id = _id(obj, "category_id", required=False)
    etype = _type(obj)
    ts = _ts(obj, now)
    context = _context(obj)
    rec_id = _id(obj, "rec_id", required=False)
    return Event(event_id, user_id, item_id, etype, ts, category_id, context, rec_id)  # type: ignore[arg-type]


def _type(obj: dict) -> str:
    etype = obj.get("type")
    if etype is None:
        raise InvalidEvent("missing_field", "'type' is required")
    if not isinstance(etype, str):
        raise InvalidEvent("wrong_type", f"'type' must be a string, got {type(etype).__name__}")
    if etype not in EVENT_TYPES:
        raise InvalidEvent("unknown_type", f"'type' must be one of {', '.join(EVENT_TYPES)}, got {etype[:32]!r}")
    return etype


def _ts(obj: dict, now: float) -> float:
    ts = obj.get("ts")
    if ts is None:
        raise InvalidEvent("missing_field", "'ts' is required")
    if isinstance(ts, bool) or not isinstance(ts, (int, float)):
        raise InvalidEvent("wrong_type", f"'ts' must be a number, got {type(ts).__name__}")
    if isinstance(ts, int) and not 0 <= ts <= now + MAX_FUTURE_S:
        # compared as an integer: float() of a 310-digit one raises OverflowError, and its
        # decimal form may be too long to print
        raise InvalidEvent("bad_ts" if ts < 0 else "future_ts", "'ts' is an integer outside 0 … one day after now")
    ts = float(ts)
    if not math.isfinite(ts):
        raise InvalidEvent("bad_ts", f"'ts' must be finite, got {ts}")
    if ts < 0:
        raise InvalidEvent("bad_ts", f"'ts' must not be negative, got {ts}")
    if ts > now + MAX_FUTURE_S:
        raise InvalidEvent("future_ts", f"'ts' {ts:.0f} is more than one day after now ({now:.0f})")
    return ts


def _context(obj: dict) -> dict | None:
    context = obj.get("context")
    if context is not None:
        if not isinstance(context, dict):
            raise InvalidEvent("wrong_type", f"'context' must be an object, got {type(context).__name__}")
        try:
            size = len(orjson.dumps(context))
        except TypeError as exc:  # from a decoded object only: JSON text cannot hold these
            raise InvalidEvent("wrong_type", f"'context' must hold JSON values only ({exc})") from None
        if size > MAX_CONTEXT_BYTES:
            raise InvalidEvent("context_too_large", f"'context' is {size} bytes, the limit is {MAX_CONTEXT_BYTES}")
    return context


_FIELD_CHECKS = (
    lambda obj, now: _id(obj, "event_id"),
    lambda obj, now: _id(obj, "user_id"),
    lambda obj, now: _id(obj, "item_id"),
    lambda obj, now: _id(obj, "category_id", required=False),
    lambda obj, now: _type(obj),
    _ts,
    lambda obj, now: _context(obj),
    lambda obj, now: _id(obj, "rec_id", required=False),
)


def event_problems(obj: object, now: float) -> list[InvalidEvent]:
    """Every rule of docs/design.md §2 a decoded event breaks (empty: `parse_event` accepts it), for a client
    that should hear all that is wrong at once (HTTP ingest), not the first reason only.

    >>> [p.reason for p in event_problems({"user_id": "u", "type": "look", "ts": -1}, 0.0)]
    ['missing_field', 'missing_field', 'unknown_type', 'bad_ts']
    """
    if not isinstance(obj, dict):
        return [InvalidEvent("not_object", f"expected a JSON object, got {type(obj).__name__}")]
    problems = []
    for check in _FIELD_CHECKS:
        try:
            check(obj, now)
        except InvalidEvent as exc:
            problems.append(exc)
        except Exception as exc:  # noqa: BLE001 - whatever else the content provokes
            problems.append(InvalidEvent("undecodable", f"{type(exc).__name__}: {str(exc)[:200]}"))
    return problems


@dataclass(frozen=True, slots=True)
class Forget:
    """A control record on the events topic: forget everything about `user_id` (privacy: `strata forget`).

    It travels keyed by the user, in the user's partition, so it is ordered with
    that user's events: everything before it is forgotten, anything after it
    starts a new profile.
    """

    user_id: str
    requested_at: float

    def to_json(self) -> bytes:
        return orjson.dumps({"control": "forget", "user_id": self.user_id, "requested_at": self.requested_at})


MAX_SERVED_ITEMS = 100  # the items of a served list kept for attribution (its top)
MAX_REC_ID_LEN = 64
MAX_VARIANT_LEN = 32


@dataclass(frozen=True, slots=True)
class Served:
    """A control record on the events topic: list `rec_id` was served to `user_id` at `ts` (wall-clock
    seconds) under A/B `variant`, with its first `MAX_SERVED_ITEMS` items in order.

    It travels keyed by the user, in the user's partition, so it is ordered with that user's
    events: the events after it are attributed to it (`models.attribution`) exactly once, and it
    is kept and recovered with the user's profile.  The full record of a served list (scores by
    layer and term, filters, model version) is on the impressions topic."""

    user_id: str
    rec_id: str
    ts: float
    variant: str
    items: tuple[str, ...]

    def to_json(self) -> bytes:
        return orjson.dumps({"control": "served", "user_id": self.user_id, "rec_id": self.rec_id, "ts": self.ts,
                             "variant": self.variant, "items": self.items[:MAX_SERVED_ITEMS]})


def _time(obj: dict, field: str, now: float, default: float | None = None) -> float:
    value = obj.get(field, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidEvent("wrong_type", f"'{field}' must be a number")
    if not (0 <= value <= now + MAX_FUTURE_S):  # NaN and ±inf fail; ints compared exactly
        raise InvalidEvent("bad_ts", f"'{field}' must be a time from 0 to one day after now")
    return float(value)


def _served(obj: dict, now: float) -> Served:
    user_id = _id(obj, "user_id")
    rec_id = _id(obj, "rec_id")
    if len(rec_id) > MAX_REC_ID_LEN:  # type: ignore[arg-type]
        raise InvalidEvent("bad_id", f"'rec_id' must be 1-{MAX_REC_ID_LEN} characters")
    variant = _id(obj, "variant")
    if len(variant) > MAX_VARIANT_LEN:  # type: ignore[arg-type]
        raise InvalidEvent("bad_id", f"'variant' must be 1-{MAX_VARIANT_LEN} characters")
    items = obj.get("items")
    if not isinstance(items, list) or len(items) > MAX_SERVED_ITEMS:
        raise InvalidEvent("wrong_type", f"'items' must be a list of at most {MAX_SERVED_ITEMS} item ids")
    ids = tuple(_id({"item_id": i}, "item_id") for i in items)
    return Served(user_id, rec_id, _time(obj, "ts", now), variant, ids)  # type: ignore[arg-type]


def _control(obj: dict, now: float) -> "Forget | Served":
    control = obj.get("control")
    if control == "served":
        return _served(obj, now)
    if control != "forget":
        shown = control[:32] if isinstance(control, str) else type(control).__name__
        raise InvalidEvent("unknown_control", f"unknown control record {shown!r}")
    user_id = _id(obj, "user_id")
    return Forget(user_id, _time(obj, "requested_at", now, now))  # type: ignore[arg-type]


def parse_keyed_message(key: bytes | None, raw: bytes | str | None, now: float) -> Event | Forget | Served:
    """`parse_message`, and the message key must be the user id (the events topic is keyed by
    user, so that a user's events and profile live on one partition).

    Total: whatever the bytes, the answer is a record or an `InvalidEvent`.  An exception the
    rules below do not foresee (a decoder's, a conversion's) becomes the reason `undecodable`,
    so that no message on the topic can stop whoever reads it (a worker, `strata train`)."""
    try:
        if raw is None:
            raise InvalidEvent("no_value", "the message has no value (a tombstone)")
        parsed = parse_message(raw, now)
        if key is None or key != parsed.user_id.encode():
            raise InvalidEvent("wrong_key", "the message key must be the event's user_id")
        return parsed
    except InvalidEvent:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure on one record's content is that record's
        raise InvalidEvent("undecodable", f"{type(exc).__name__}: {str(exc)[:200]}") from None


def parse_message(raw: bytes | str, now: float) -> Event | Forget | Served:
    """An events-topic message: a behaviour event (see `parse_event`) or a control record."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        obj = _lenient_json(raw)  # NaN, Infinity, integers beyond 64 bits
        if not (isinstance(obj, dict) and "control" in obj):
            return parse_event(raw, now)  # raises the precise InvalidEvent (or accepts lenient JSON)
    if isinstance(obj, dict) and "control" in obj:
        return _control(obj, now)
    return parse_event(obj if isinstance(obj, dict) else raw, now)
