"""Which served list an event came from (docs/design.md §4: impressions and feedback).

A served list reaches its user's partition of the events topic as a `models.events.Served`
record, ordered with the user's events, and is kept in the user's profile (`Profile.served`:
the lists served within the attribution window, at most `MAX_SERVED`).  An event after it is
attributed to it:

- **explicitly**, when the event carries the list's `rec_id` and its item is in the list;
- **view-through**, when it carries no `rec_id` and its item was in a list served to the user
  within the window before it (the latest such list).

What is attributed is the event's position in the list, the time since the list was served and
the event's type; an event with a `rec_id` that is unknown, too old or not about an item of its
list is counted under that reason and still applied to the profile like any other.  An event
attributed to no list after a list was served (`passed_over`) says the shopper saw the list
and went elsewhere.  Being a
function of the user's ordered records, attribution is exact under redelivery: a record applied
once is attributed once.

>>> from strata.models.events import Event, Served
>>> lists = remember(None, Served("u", "r1", 100.0, "control", ("a", "b", "c")), 1800.0)
>>> attribute(lists, Event("e1", "u", "b", "click", 130.0, rec_id="r1"), 1800.0)[:6]
('r1', 'control', 1, 30.0, 'click', False)
>>> attribute(lists, Event("e2", "u", "c", "view", 200.0), 1800.0).view_through
True
>>> attribute(lists, Event("e3", "u", "c", "view", 5000.0), 1800.0) is None
True
>>> attribute(lists, Event("e4", "u", "b", "click", 130.0, rec_id="r9"), 1800.0)
'unknown_rec_id'
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

from strata.models.events import Event, Served

ATTRIBUTION_WINDOW_S = 1800.0  # default of STRATA_ATTRIBUTION_WINDOW
MAX_SERVED = 16  # lists kept per user
CLOCK_SLACK_S = 5.0  # an event this much before its list was served (client and server clocks) still counts

UNKNOWN = "unknown_rec_id"
EXPIRED = "expired"
NOT_IN_LIST = "not_in_list"
UNMATCHED = (UNKNOWN, EXPIRED, NOT_IN_LIST)


class Attribution(NamedTuple):
    """An event attributed to a served list."""

    rec_id: str
    variant: str
    position: int  # of the event's item in the list, 0 first
    delay_s: float  # event time − the time the list was served
    type: str  # the event's behaviour type
    view_through: bool  # matched by item and time, not by `rec_id`
    items: tuple[str, ...]  # the list as served (the others shown: negatives for the learner)


def remember(served: Sequence[Served] | None, record: Served, window: float) -> list[Served]:
    """The user's lists with `record` added: those served within `window` of the newest one, at
    most `MAX_SERVED` (the newest), oldest first.  A list already kept (same `rec_id`) is kept once."""
    newest = max([record.ts] + [s.ts for s in served or ()])
    kept = [s for s in served or () if s.rec_id != record.rec_id and s.ts >= newest - window]
    kept.append(record)
    kept.sort(key=lambda s: s.ts)
    return kept[-MAX_SERVED:]


def attribute(served: Sequence[Served] | None, event: Event, window: float) -> Attribution | str | None:
    """The list `event` is attributed to, the reason an explicit `rec_id` is not (`UNMATCHED`), or
    None (no `rec_id`, and its item in no list served within `window` before it)."""
    if event.rec_id is not None:
        for s in served or ():
            if s.rec_id == event.rec_id:
                delay = event.ts - s.ts
                if not -CLOCK_SLACK_S <= delay <= window:
                    return EXPIRED
                if event.item_id not in s.items:
                    return NOT_IN_LIST
                return Attribution(s.rec_id, s.variant, s.items.index(event.item_id), delay, event.type, False, s.items)
        return UNKNOWN
    for s in reversed(served or ()):
        delay = event.ts - s.ts
        if -CLOCK_SLACK_S <= delay <= window and event.item_id in s.items:
            return Attribution(s.rec_id, s.variant, s.items.index(event.item_id), delay, event.type, True, s.items)
    return None


def passed_over(served: Sequence[Served] | None, event: Event, window: float) -> Served | None:
    """The latest list served to the user within `window` before `event`, for an event attributed to
    none: the user was shown it and went to another item (every item of it a negative for the
    learner, against the one chosen)."""
    for s in reversed(served or ()):
        if -CLOCK_SLACK_S <= event.ts - s.ts <= window:
            return s
    return None


__all__ = ["ATTRIBUTION_WINDOW_S", "Attribution", "EXPIRED", "MAX_SERVED", "NOT_IN_LIST", "UNKNOWN", "UNMATCHED",
           "attribute", "passed_over", "remember"]
