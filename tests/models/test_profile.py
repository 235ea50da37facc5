"""Properties of the interest profile (docs/design.md §3)."""
from __future__ import annotations

import math

import pytest
from hypothesis import given, settings, strategies as st

from strata.models.catalog import ROOT_UNKNOWN, Catalog
from strata.models.events import EVENT_TYPES, Event
from strata.models.profile import DAY, LAYERS, MAX_PURCHASES, MAX_SEEN, Profile, ProfileParams, TooLate, build_profiles

#: a de-duplication horizon longer than any generated events' span: within it, order does not matter
PARAMS = ProfileParams(dedup_horizon_s=1_000 * DAY)
T0 = 1_500_000_000.0

event_st = st.builds(
    lambda i, item, cat, etype, dt: Event(f"e{i}", "u", f"i{item}", etype, T0 + dt, f"c{cat}"),
    st.integers(0, 10**9),
    st.integers(0, 30),
    st.integers(0, 5),
    st.sampled_from(EVENT_TYPES),
    st.floats(0, 30 * 86_400, allow_nan=False),
)
events_st = st.lists(event_st, min_size=1, max_size=60, unique_by=lambda e: e.event_id)
CATALOG = Catalog({}, {**{f"c{i}": f"r{i % 2}" for i in range(6)}, "r0": None, "r1": None})


def _profile(events, params=PARAMS) -> Profile:
    return build_profiles(events, CATALOG, params)["u"]


def _close(a: dict, b: dict, rel=1e-9) -> bool:
    return a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=rel, abs_tol=1e-300) for k in a)


def _single_precision(n: int) -> float:
    """Relative tolerance after n updates of a weight, each rounded to float32 (≤ 2^-24 each;
    the terms are all positive, so the relative errors add up at most)."""
    return n * 2.0**-23


@given(events_st, st.randoms(use_true_random=False))
def test_any_order_gives_the_same_weights(events, rnd):
    shuffled = list(events)
    rnd.shuffle(shuffled)
    a, b = _profile(events), _profile(shuffled)
    T = max(e.ts for e in events)
    for layer in LAYERS:
        assert _close(a.weights(layer, PARAMS, T), b.weights(layer, PARAMS, T), rel=_single_precision(len(events)))
    assert a.purchases == b.purchases and a.count == b.count and a.last_ts == b.last_ts


@given(events_st, st.floats(0, 90 * 86_400, allow_nan=False))
def test_incremental_equals_closed_form(events, later):
    profile = _profile(events)
    T = max(e.ts for e in events) + later
    for layer in LAYERS:
        h = PARAMS.half_life_s[layer]
        expected: dict[str, float] = {}
        for e in events:
            domain, overall = CATALOG.layers_for(e.item_id, e.category_id)
            key = {"item": e.item_id, "domain": domain, "overall": overall}[layer]
            expected[key] = expected.get(key, 0.0) + PARAMS.beta[e.type] * 2 ** (-(T - e.ts) / h)
        assert _close(profile.weights(layer, PARAMS, T), expected, rel=_single_precision(len(events)))


@given(events_st, st.integers(1, 8))
def test_cap_keeps_exactly_the_largest_weights(events, cap):
    params = ProfileParams(caps={"item": cap, "domain": 50, "overall": 20})
    profile = Profile()
    for e in sorted(events, key=lambda e: e.ts):
        candidates = profile.weights("item", params, e.ts)
        candidates[e.item_id] = candidates.get(e.item_id, 0.0) + params.beta[e.type]
        domain, overall = CATALOG.layers_for(e.item_id, e.category_id)
        profile.learn(e, domain, overall, params)
        kept = profile.weights("item", params, e.ts)
        assert len(kept) == min(cap, len(candidates))
        dropped = set(candidates) - set(kept)
        if dropped:
            assert max(candidates[k] for k in dropped) <= min(kept.values()) * (1 + _single_precision(2))


def test_decay_identity_half_life():
    e = Event("a", "u", "i", "purchase", T0, "c0")
    p = _profile([e])
    for layer in LAYERS:
        h = PARAMS.half_life_s[layer]
        assert p.weights(layer, PARAMS, T0 + h)[{"item": "i", "domain": "c0", "overall": "r0"}[layer]] == pytest.approx(3.0)


def test_duplicate_event_ids_are_dropped():
    e = Event("same", "u", "i", "view", T0, "c0")
    p = Profile()
    assert p.learn(e, "c0", "r0", PARAMS) is True
    assert p.learn(e, "c0", "r0", PARAMS) is False
    assert p.count == 1 and p.weights("item", PARAMS) == {"i": 1.0}


_u64_st = st.one_of(st.integers(0, 2**64 - 1), st.sampled_from([0, 2**64 - 1, 0x0101010101010101, 0xFF << 32]))


@given(st.lists(_u64_st, max_size=33), _u64_st, st.integers(0, 40))
def test_the_window_search_is_membership(window, h, straddle):
    """`_holds` searches the window's bytes: it finds exactly the elements, never 8 bytes that
    straddle two of them."""
    import sys
    from array import array

    from strata.models.profile import _holds

    recent = array("Q", window)
    raw = recent.tobytes()
    if len(raw) >= 16:  # also ask for the bytes across a boundary
        at = 8 * (straddle % (len(window) - 1)) + 1 + straddle % 7
        assert _holds(recent, int.from_bytes(raw[at:at + 8], sys.byteorder)) == (int.from_bytes(raw[at:at + 8], sys.byteorder) in window)
    assert _holds(recent, h) == (h in window)
    if window:
        assert _holds(recent, window[straddle % len(window)])


@given(events_st)
def test_bytes_round_trip(events):
    p = _profile(events)
    q = Profile.from_bytes(p.to_bytes())
    assert q == p


def _v1_bytes(p: Profile) -> bytes:
    """The first encoding, as workers before the columnar one wrote it to stores and changelogs."""
    import msgpack

    flat = [[x for k in p.w[l] for x in (k, p.w[l][k], p.t[l][k])] for l in LAYERS]
    purchases = [x for kv in p.purchases.items() for x in kv]
    return msgpack.packb([1, flat, purchases, p.count, p.last_ts, list(p.seen), p.seq], use_bin_type=True)


@given(events_st)
def test_the_first_encoding_still_reads(events):
    p = _profile(events)
    assert Profile.from_bytes(_v1_bytes(p)) == _legacy(p)


def _legacy(p: Profile) -> Profile:
    """`p` as read from an encoding before version 5, which kept event ids without their times:
    each counts as of the profile's last event."""
    from array import array
    from dataclasses import replace

    return replace(p, seen_t=array("f", [p.last_ts] * len(p.seen)))


def test_profile_state_is_invisible_to_the_garbage_collector():
    """A worker caches tens of thousands of profiles; a full collection must not walk their entries."""
    import gc

    p = _profile([Event(f"e{i}", "u", f"i{i}", "view", T0 + i, f"c{i % 6}") for i in range(50)])
    from array import array

    q = Profile.from_bytes(p.to_bytes())
    for profile in (p, q):
        assert not any(gc.is_tracked(d) for d in (*profile.w.values(), *profile.t.values(), profile.purchases))
        assert isinstance(profile.seen, array) and isinstance(profile.seen_t, array)  # no elements for the collector to visit


def test_every_purchase_within_the_horizon_is_kept_and_older_ones_go():
    params = ProfileParams(purchase_horizon_s=100 * DAY)
    evs = [Event(f"e{i}", "u", f"i{i}", "purchase", T0 + i * DAY, None) for i in range(400)]
    p = build_profiles(evs, Catalog(), params)["u"]
    assert {f"i{i}" for i in range(299, 400)} <= set(p.purchases)  # every one within 100 days of the last
    assert all(ts >= p.last_ts - 1.125 * params.purchase_horizon_s for ts in p.purchases.values())


def test_purchases_stop_at_the_hard_bound_keeping_the_latest():
    p = Profile()
    params = ProfileParams(dedup_horizon_s=1.0)
    for i in range(MAX_PURCHASES + 5):
        p.learn(Event(f"e{i}", "u", f"i{i}", "purchase", T0 + i, None), None, "*", params)
    assert len(p.purchases) == MAX_PURCHASES and min(p.purchases.values()) == T0 + 5


def test_a_copy_within_the_horizon_is_dropped_however_many_events_between():
    params = ProfileParams(dedup_horizon_s=7 * DAY)
    p = Profile()
    first = Event("first", "u", "i0", "cart", T0, "c0")
    assert p.learn(first, "c0", "r0", params)
    for n in range(5_000):  # far more than any window of recent ids
        p.learn(Event(f"e{n}", "u", f"i{n % 300}", "view", T0 + n * 60.0, "c1"), "c1", "r1", params)
    assert p.learn(first, "c0", "r0", params) is False  # 3.5 days later: still remembered


def test_an_event_older_than_the_horizon_is_refused_never_counted():
    params = ProfileParams(dedup_horizon_s=7 * DAY)
    p = Profile()
    old = Event("old", "u", "i0", "view", T0, "c0")
    p.learn(old, "c0", "r0", params)
    p.learn(Event("new", "u", "i1", "view", T0 + 8 * DAY, "c0"), "c0", "r0", params)
    before = Profile.from_bytes(p.to_bytes())
    for late in (old, Event("other", "u", "i2", "view", T0 + DAY - 1, "c0")):
        with pytest.raises(TooLate) as refused:
            p.learn(late, "c0", "r0", params)
        assert refused.value.reason == "too_late"
    assert p == before
    p.learn(Event("in-time", "u", "i3", "view", T0 + DAY + 1, "c0"), "c0", "r0", params)  # within 7 days of the newest
    assert p.count == 3


def test_ids_stop_at_the_hard_bound_and_the_floor_rises_above_the_forgotten():
    params = ProfileParams(dedup_horizon_s=365 * DAY)
    p = Profile()
    events = [Event(f"e{n}", "u", f"i{n % 50}", "view", T0 + n, "c0") for n in range(MAX_SEEN + 10)]
    for e in events:
        p.learn(e, "c0", "r0", params)
    assert len(p.seen) <= MAX_SEEN and p.floor > T0
    for e in events[:5]:  # forgotten: refused rather than counted twice
        with pytest.raises(TooLate):
            p.learn(e, "c0", "r0", params)
    assert p.learn(events[-1], "c0", "r0", params) is False


def test_unknown_category_and_tree_roots():
    cat = Catalog.from_records(
        [
            {"item_id": "x", "category_id": "a.b.c"},
            {"category_id": "a.b.c", "parent_id": "a.b"},
            {"category_id": "a.b", "parent_id": "a"},
            {"category_id": "a", "parent_id": None},
        ]
    )
    assert cat.layers_for("x", None) == ("a.b.c", "a")
    assert cat.layers_for("y", None) == (None, ROOT_UNKNOWN)
    assert cat.layers_for("y", "flat") == ("flat", ROOT_UNKNOWN)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"beta": {"view": -1, "click": 2, "fav": 3, "cart": 4, "purchase": 6}},
        {"half_life_s": {"item": 0, "domain": 1, "overall": 1}},
        {"caps": {"item": 0, "domain": 1, "overall": 1}},
        {"dedup_horizon_s": 0},
        {"purchase_horizon_s": float("inf")},
    ],
)
def test_bad_params_are_refused(kwargs):
    with pytest.raises(ValueError):
        ProfileParams(**kwargs)


def test_params_pickle():
    """The trainer's reader processes get the settings, profile parameters included, by pickle."""
    import pickle

    params = ProfileParams(caps={"item": 5, "domain": 3, "overall": 2}, purchase_horizon_s=7.0)
    again = pickle.loads(pickle.dumps(params))
    assert again == params and again.caps["item"] == 5 and again.purchase_horizon_s == 7.0


whole_second_events_st = st.lists(
    st.builds(
        lambda i, item, cat, etype, dt: Event(f"e{i}", "u", str(item), etype, T0 + dt, f"{cat}"),
        st.integers(0, 10**9),
        st.integers(0, 10**12),
        st.integers(0, 5),
        st.sampled_from(EVENT_TYPES),
        st.integers(0, 400 * 86_400),
    ),
    min_size=1,
    max_size=60,
    unique_by=lambda e: e.event_id,
)


@given(whole_second_events_st)
def test_bytes_round_trip_with_numeric_ids_and_whole_seconds(events):
    p = build_profiles(events, Catalog({}, {f"{i}": None for i in range(6)}), PARAMS)["u"]
    q = Profile.from_bytes(p.to_bytes())
    assert q == p
    assert all(isinstance(k, str) for layer in LAYERS for k in q.w[layer]) and all(isinstance(k, str) for k in q.purchases)


@pytest.mark.parametrize("keys", [["007", "7"], ["+7"], [" 7"], ["1_000"], ["٣"], ["-0"], [str(2**64)], ["12", "x"]])
def test_keys_that_only_look_like_integers_come_back_verbatim(keys):
    """(Canonical integers are stored as integers; these must not be.)"""
    p = Profile()
    for n, key in enumerate(keys):
        p.learn(Event(f"e{n}", "u", key, "view", T0 + n, None), None, ROOT_UNKNOWN, PARAMS)
    q = Profile.from_bytes(p.to_bytes())
    assert q == p and list(q.w["item"]) == keys


def test_millisecond_times_come_back_exactly_and_take_four_bytes():
    p = Profile()
    for n in range(40):
        ts = round(T0 + 123.456 + n * 1_234.567, 3)  # as a JSON "ts" with milliseconds gives them
        p.learn(Event(f"e{n}", "u", f"i{n}", "purchase" if n % 5 == 0 else "view", ts, "c1"), "c1", "r1", PARAMS)
    data = p.to_bytes()
    q = Profile.from_bytes(data)
    assert q == p and q.t["item"] == p.t["item"] and q.purchases == p.purchases
    assert len(_pack_times(p.last_ts, list(p.t["item"].values()))) == 1 + 40 * 4  # not 40 × 8


@given(st.lists(st.integers(0, 10**10), min_size=1, max_size=30))
def test_any_millisecond_times_come_back_exactly(millis):
    p = Profile()
    for n, ms in enumerate(millis):
        p.learn(Event(f"e{n}", "u", f"i{n}", "purchase", T0 + ms / 1000.0, None), None, ROOT_UNKNOWN, PARAMS)
    q = Profile.from_bytes(p.to_bytes())
    assert q == p and q.t["item"] == p.t["item"] and q.purchases == p.purchases


_offsets_st = st.one_of(
    st.integers(-5, 2**33).map(float),  # whole seconds, some out of the uint32 range
    st.integers(-5, 2**33).map(lambda ms: ms / 1000.0),  # whole milliseconds
    st.floats(allow_nan=True, allow_infinity=True),  # anything
)


_T_st = st.sampled_from([T0, T0 + 0.123, 1.5, 0.0, 2.0**40 + 0.5, 2.0**44 + 0.5, None])


@settings(max_examples=300)
@given(st.lists(st.tuples(_T_st, st.lists(_offsets_st, max_size=80)), min_size=1, max_size=6))
def test_the_python_and_numpy_time_columns_are_the_same_bytes(columns):
    """The time columns have a plain-Python implementation (one column at a time, fast for few
    times) and a numpy one (every column of a batch at once); on any input they accept the same
    times and give the same bytes."""
    from strata.models.profile import _time_column_py, _time_columns_np

    Ts, times, bounds = [], [], [0]
    for T, offsets in columns:
        Ts.append(T)
        times += [(T or 0.0) - d for d in offsets]
        bounds.append(len(times))
    expected = [_time_column_py(T, times[a:b]) for T, a, b in zip(Ts, bounds, bounds[1:])]
    assert _time_columns_np(Ts, times, bounds) == expected


millisecond_events_st = events_st.map(lambda events: [e._replace(ts=round(e.ts, 3)) for e in events])


@settings(max_examples=50)
@given(st.lists(st.one_of(events_st, whole_second_events_st, millisecond_events_st), min_size=1, max_size=12))
def test_profiles_encoded_together_are_the_bytes_of_each(event_lists):
    """A micro-batch encodes its profiles together (`encode_profiles`); each one's bytes are
    what it gives alone, and read back to it."""
    from strata.models.profile import encode_profiles

    profiles = [_profile(events) for events in event_lists]
    profiles += [Profile()]  # nothing learned: no times, no T
    together = encode_profiles(profiles)
    assert together == [p.to_bytes() for p in profiles]
    assert [Profile.from_bytes(b) for b in together] == profiles


def test_times_that_are_not_whole_seconds_come_back_exactly():
    p = Profile()
    for n, dt in enumerate([0.001, 0.1, 1.5, 1e-9, 86_400.25]):
        p.learn(Event(f"e{n}", "u", f"i{n}", "purchase", T0 + dt, None), None, ROOT_UNKNOWN, PARAMS)
    q = Profile.from_bytes(p.to_bytes())
    assert q == p and q.t["item"] == p.t["item"] and q.purchases == p.purchases


@pytest.mark.parametrize("keys", [["1", "127", "65535"], ["65536", "4294967295"], ["4294967296", "1"], ["-5", "12"]])
def test_integer_keys_of_every_width_come_back_as_text(keys):
    p = Profile()
    for n, key in enumerate(keys):
        p.learn(Event(f"e{n}", "u", key, "view", T0 + n, None), None, ROOT_UNKNOWN, PARAMS)
    data = p.to_bytes()
    q = Profile.from_bytes(data)
    assert q == p and list(q.w["item"]) == keys
    assert all(key.encode() not in data for key in keys if len(key) > 2)  # not stored as text


def _v2_bytes(p: Profile) -> bytes:
    """The second encoding (float64 columns), as workers before version 3 wrote it."""
    import msgpack
    import struct

    f64 = lambda vs: struct.pack(f"<{len(vs)}d", *vs)  # noqa: E731
    layers = [[list(p.w[l]), f64(list(p.w[l].values())), f64(list(p.t[l].values()))] for l in LAYERS]
    recent = struct.pack(f"<{len(p.seen)}Q", *p.seen)
    return msgpack.packb([2, layers, list(p.purchases), f64(list(p.purchases.values())), p.count, p.last_ts, recent, p.seq], use_bin_type=True)


@given(events_st)
def test_the_second_encoding_still_reads_and_is_rounded_once(events):
    p = _profile(events)
    widened = Profile.from_bytes(p.to_bytes())
    for layer in LAYERS:  # as a float64 profile of before would hold them: not float32 values
        for key in widened.w[layer]:
            widened.w[layer][key] *= 1 + 1e-12
    q = Profile.from_bytes(_v2_bytes(widened))
    assert q == _legacy(p)  # rounded to float32 on reading: what the live profile holds from then on
    assert Profile.from_bytes(q.to_bytes()) == q


def test_a_profile_at_the_default_caps_fits_4_kib():
    """docs/design.md §7: ≤ 4 KiB per user at the default caps — with shop-sized ids (7-digit items and
    categories, as in Taobao), whole-second times.  The ledgers (ids within the de-duplication
    horizon, purchases within the purchase horizon) grow with the shopper's activity and are
    bounded apart (`MAX_SEEN`, `MAX_PURCHASES`): the target is the interest layers'."""
    import random

    rnd = random.Random(7)
    params = ProfileParams()
    p = Profile()
    ts = T0
    for n in range(3_000):
        ts += rnd.randint(1, 600)
        item = str(rnd.randint(1_000_000, 5_000_000))
        category = str(rnd.randint(1_000_000, 5_000_000))
        root = str(rnd.randint(1_000_000, 5_000_000))
        etype = rnd.choice(EVENT_TYPES)
        p.learn(Event(f"e{n}", "u", item, etype, float(ts), category), category, root, params)
    assert [len(p.w[l]) for l in LAYERS] == [params.caps[l] for l in LAYERS]
    assert p.purchases and len(p.seen) > 1_000
    assert len(p.interest_bytes()) <= 4096
    assert Profile.from_bytes(p.to_bytes()) == p


def _pack_times(T: float | None, times: list[float]) -> bytes:
    """One time column, as the encoder writes it for a profile with last time T."""
    from strata.models.profile import _pack_time_columns

    return _pack_time_columns([T], times, [0, len(times)])[0]


def _v3_bytes(p: Profile) -> bytes:
    """The third encoding (per layer its keys, float32 weights and times), as workers before version 4 wrote it."""
    import msgpack

    from strata.models.profile import _f32_column, _little_endian, _pack_keys

    T = p.last_ts
    layers = [[_pack_keys(list(p.w[l])), _f32_column(list(p.w[l].values())), _pack_times(T, list(p.t[l].values()))] for l in LAYERS]
    return msgpack.packb(
        [3, layers, _pack_keys(list(p.purchases)), _pack_times(T, list(p.purchases.values())), p.count, T, _little_endian(p.seen), p.seq],
        use_bin_type=True,
    )


@given(st.one_of(events_st, whole_second_events_st))
def test_the_third_encoding_still_reads(events):
    p = build_profiles(events, Catalog({}, {f"{i}": None for i in range(6)}), PARAMS)["u"]
    assert Profile.from_bytes(_v3_bytes(p)) == _legacy(p)



def test_the_documented_defaults_by_hand():
    """docs/design.md §3's defaults, worked by hand: β view 1, click 2, fav 3, cart 4, purchase 6;
    H item 3 d, domain 14 d, overall 60 d."""
    day = 86_400.0
    p = Profile()
    pp = ProfileParams()
    t0 = 1_700_000_000.0
    p.learn(Event("1", "u", "i", "view", t0, "c"), "c", "r", pp)
    p.learn(Event("2", "u", "i", "cart", t0 + 3 * day, "c"), "c", "r", pp)
    p.learn(Event("3", "u", "j", "purchase", t0 + 3 * day, "c"), "c", "r", pp)
    p.learn(Event("4", "u", "j", "click", t0 + 3 * day, "c"), "c", "r", pp)
    p.learn(Event("5", "u", "k", "fav", t0 + 3 * day, "c"), "c", "r", pp)
    at = t0 + 3 * day
    item = p.weights("item", pp, at)
    # i: the view, one item half-life old, counts ½; the cart 4 → 4.5
    assert item["i"] == pytest.approx(4.5, rel=1e-6)
    assert item["j"] == pytest.approx(6 + 2, rel=1e-6)
    assert item["k"] == pytest.approx(3, rel=1e-6)
    # the domain and overall layers hold all five: the view decayed by 3 of 14 and 3 of 60 days
    assert p.weights("domain", pp, at)["c"] == pytest.approx(2 ** (-3 / 14) + 4 + 6 + 2 + 3, rel=1e-6)
    assert p.weights("overall", pp, at)["r"] == pytest.approx(2 ** (-3 / 60) + 4 + 6 + 2 + 3, rel=1e-6)


def test_the_item_cap_keeps_the_last_items_touched_however_light():
    """Old purchases outweigh today's views, yet the ranker's recent items are never dropped."""
    from strata.models.profile import KEEP_RECENT

    params = ProfileParams(caps={"item": 30, "domain": 50, "overall": 20})
    p = Profile()
    for n in range(30):
        p.learn(Event(f"b{n}", "u", f"bought{n}", "purchase", 1000.0 + n), None, "*", params)
    for n in range(KEEP_RECENT):
        p.learn(Event(f"v{n}", "u", f"viewed{n}", "view", 2000.0 + n), None, "*", params)
    assert len(p.w["item"]) == 30
    assert p.recent_items(KEEP_RECENT) == [f"viewed{n}" for n in reversed(range(KEEP_RECENT))]
    small = ProfileParams(caps={"item": 3, "domain": 50, "overall": 20})
    q = Profile()
    for n in range(10):
        q.learn(Event(f"s{n}", "u", f"i{n}", "view", 1000.0 + n), None, "*", small)
    assert q.recent_items(5) == ["i9", "i8", "i7"]  # a cap below KEEP_RECENT keeps the heaviest: here the newest
