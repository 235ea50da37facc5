"""Attribution of events to served lists (models.attribution) and its state in the profile."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from strata.models.attribution import EXPIRED, MAX_SERVED, NOT_IN_LIST, UNKNOWN, attribute, passed_over, remember
from strata.models.events import Event, Served
from strata.models.profile import Profile, ProfileParams

W = 1800.0


def served(rec_id: str, ts: float, items=("a", "b", "c"), variant="control") -> Served:
    return Served("u", rec_id, ts, variant, tuple(items))


def click(item: str, ts: float, rec_id: str | None = None, type_: str = "click") -> Event:
    return Event(f"e{ts}", "u", item, type_, ts, rec_id=rec_id)


def test_a_click_with_its_rec_id_is_attributed_at_its_position():
    lists = remember(None, served("r1", 100.0, ("a", "b", "c")), W)
    a = attribute(lists, click("c", 160.0, "r1", "cart"), W)
    assert (a.rec_id, a.position, a.delay_s, a.type, a.view_through) == ("r1", 2, 60.0, "cart", False)


def test_an_explicit_rec_id_that_cannot_be_attributed_says_why():
    lists = remember(None, served("r1", 100.0), W)
    assert attribute(lists, click("b", 130.0, "nope"), W) == UNKNOWN
    assert attribute(None, click("b", 130.0, "r1"), W) == UNKNOWN
    assert attribute(lists, click("b", 100.0 + W + 1, "r1"), W) == EXPIRED
    assert attribute(lists, click("z", 130.0, "r1"), W) == NOT_IN_LIST


def test_view_through_inside_the_window_only_and_the_latest_list_wins():
    lists = remember(remember(None, served("r1", 100.0, ("a", "b")), W), served("r2", 200.0, ("x", "b")), W)
    inside = attribute(lists, click("b", 300.0), W)
    assert inside.view_through and inside.rec_id == "r2" and inside.position == 1
    assert attribute(lists, click("a", 150.0), W).rec_id == "r1"
    assert attribute(lists, click("b", 200.0 + W + 1), W) is None
    assert attribute(lists, click("q", 300.0), W) is None
    assert attribute(lists, click("a", 50.0), W) is None  # before the list was served


def test_remember_keeps_the_window_and_a_bound():
    lists = None
    for n in range(MAX_SERVED + 10):
        lists = remember(lists, served(f"r{n}", 10.0 * n), W)
    assert len(lists) == MAX_SERVED and lists[-1].rec_id == f"r{MAX_SERVED + 9}"
    lists = remember(lists, served("late", 10.0 * (MAX_SERVED + 9) + W + 1), W)
    assert [s.rec_id for s in lists] == ["late"]
    assert len(remember(lists, served("late", 5.0), W)) == 1  # the same list twice is kept once


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.text("abc", min_size=1, max_size=3), st.floats(0, 1e9), st.lists(st.text("xyz", min_size=1, max_size=2), max_size=5)), max_size=5))
def test_served_lists_survive_the_profile_encoding(lists):
    profile = Profile()
    profile.learn(Event("e", "u", "i", "view", 1000.0), "c", "*", ProfileParams())
    for rec_id, ts, items in lists:
        profile.served = remember(profile.served, Served("", rec_id, ts, "v", tuple(items)), W)
    back = Profile.from_bytes(profile.to_bytes())
    assert back.served == (profile.served or None)
    assert back.w == profile.w and back.seen == profile.seen
    assert len(profile.interest_bytes()) == len(replace_served(profile).to_bytes())


def replace_served(profile: Profile) -> Profile:
    from dataclasses import replace
    from array import array

    return replace(profile, purchases={}, seen=array("Q"), seen_t=array("f"), served=None)


def test_an_event_attributed_to_no_list_passed_over_the_latest_in_the_window():
    lists = remember(remember(None, served("r1", 100.0), W), served("r2", 200.0), W)
    assert passed_over(lists, click("z", 300.0), W).rec_id == "r2"
    assert passed_over(lists, click("z", 150.0), W).rec_id == "r1"
    assert passed_over(lists, click("z", 200.0 + W + 1), W) is None
    assert passed_over(None, click("z", 300.0), W) is None
