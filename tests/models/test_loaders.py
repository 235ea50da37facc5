"""Loaders: the shipped public logs, a RetailRocket fixture, NDJSON, and bad input."""
from __future__ import annotations

import gzip
import os
from collections import Counter
from pathlib import Path

import orjson
import pytest

from strata.models.events import EVENT_TYPES, InvalidEvent, parse_event
from strata.models.logs.loaders import FORMATS, LoaderError, open_log

NOW = 2e9
DATA = Path(os.environ.get("STRATA_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
TAOBAO = DATA / "taobao-userbehavior"
REES46 = DATA / "rees46-multicategory-2019oct-head" / "events_2019-10-01_head.csv.gz"
MOVIELENS = DATA / "movielens-100k"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not available: {path} is missing (set STRATA_SHARED_DATA to its directory)")
    return path


def all_valid(events) -> list:
    out = []
    for e in events:
        assert isinstance(e, dict), e
        out.append(parse_event(e, now=NOW))
    return out


def check_tree(records: list[dict]) -> tuple[dict, dict]:
    """Split catalog records; assert the category part is a closed forest, parents listed first."""
    parents: dict[str, str | None] = {}
    items: dict[str, dict] = {}
    for r in records:
        if "item_id" in r:
            items[r["item_id"]] = r
        else:
            assert set(r) == {"category_id", "parent_id"}, r
            assert not items, "category records come before item records"
            assert r["parent_id"] is None or r["parent_id"] in parents, f"parent of {r} not listed before it"
            parents[r["category_id"]] = r["parent_id"]
    for cat in parents:  # no cycles: every chain reaches a root
        seen = set()
        while parents[cat] is not None:
            assert cat not in seen
            seen.add(cat)
            cat = parents[cat]
    return parents, items


# ----------------------------------------------------------------------------- Taobao


@pytest.fixture(scope="module")
def taobao_window():
    src = open_log(need(TAOBAO / "userbehavior_time_window_20171126.csv.gz"), "taobao")
    return src, list(src.events())


def test_taobao_time_window_matches_provenance(taobao_window):
    src, raw = taobao_window
    events = all_valid(raw)
    assert len(events) == 110_300
    assert Counter(e.type for e in events) == {"view": 98_361, "cart": 6_063, "fav": 3_383, "purchase": 2_493}
    assert len({e.user_id for e in events}) == 66_454
    assert len({e.item_id for e in events}) == 84_793
    assert len({e.category_id for e in events}) == 3_913
    assert events[0].ts == 1511658000 and events[-1].ts == 1511665811
    assert all(a.ts <= b.ts for a, b in zip(events, events[1:]))
    assert len({e.event_id for e in events}) == len(events)
    assert raw[0] == {"event_id": "taobao:userbehavior_time_window_20171126:1", "user_id": "543462",
                      "item_id": "1715", "type": "view", "ts": 1511658000, "category_id": "1464116"}


def test_taobao_catalog_is_items_only(taobao_window):
    src, raw = taobao_window
    records = list(src.catalog())
    assert all(set(r) == {"item_id", "category_id"} for r in records)  # no tree for Taobao
    assert len(records) == 84_793
    by_item = {r["item_id"]: r["category_id"] for r in records}
    assert all(by_item[e["item_id"]] == e["category_id"] for e in raw)


@pytest.mark.parametrize("name, rows, users, counts", [
    ("userbehavior_user_slice_head.csv.gz", 4_321, 43, {"view": 3_926, "cart": 190, "fav": 128, "purchase": 77}),
    ("userbehavior_user_slice_tail.csv.gz", 10_000, 114, {"view": 9_046, "cart": 536, "fav": 212, "purchase": 206}),
])
def test_taobao_user_slices(name, rows, users, counts):
    events = all_valid(open_log(need(TAOBAO / name), "taobao").events())
    assert len(events) == rows
    assert len({e.user_id for e in events}) == users
    assert Counter(e.type for e in events) == counts


def test_taobao_limit_and_catalog_follow_limit():
    src = open_log(need(TAOBAO / "userbehavior_user_slice_head.csv.gz"), "taobao", limit=100)
    events = list(src.events())
    assert len(events) == 100
    assert {r["item_id"] for r in src.catalog()} == {e["item_id"] for e in events}


# ----------------------------------------------------------------------------- REES46


@pytest.fixture(scope="module")
def rees46():
    src = open_log(need(REES46), "rees46")
    return src, list(src.events()), list(src.catalog())


def test_rees46_matches_provenance(rees46):
    src, raw, _ = rees46
    events = all_valid(raw)
    assert src.skipped.get("remove_from_cart", 0) == 0  # the October file has none
    assert len(events) == 17_434
    assert Counter(e.type for e in events) == {"view": 17_055, "cart": 165, "purchase": 214}
    assert len({e.user_id for e in events}) == 4_504
    assert len({e.item_id for e in events}) == 6_493
    assert events[0].ts == 1569888000  # 2019-10-01 00:00:00 UTC
    assert events[-1].ts == 1569888000 + 2 * 3600 + 50 * 60
    assert all(a.ts <= b.ts for a, b in zip(events, events[1:]))
    assert raw[0]["event_id"] == "rees46:events_2019-10-01_head:2"  # line 1 is the header
    assert len({e.event_id for e in events}) == len(events)
    # domain = the dotted code when there is one, else the numeric category id
    assert raw[1]["category_id"] == "appliances.environment.water_heater"
    assert raw[0]["category_id"] == "2103807459595387724"
    coded = [e for e in events if not e.category_id.isdigit()]
    assert len(events) - len(coded) == 5_746
    assert len({e.category_id for e in coded}) == 115


def test_rees46_catalog_tree(rees46):
    _, raw, records = rees46
    parents, items = check_tree(records)
    # every category an event refers to has a record (so it is in the tree)
    assert {e["category_id"] for e in raw} <= set(parents)
    dotted_roots = {c for c, p in parents.items() if p is None and not c.isdigit()}
    assert len(dotted_roots) == 13
    assert parents["appliances.environment.water_heater"] == "appliances.environment"
    assert parents["appliances.environment"] == "appliances"
    assert parents["appliances"] is None
    assert all(parents[c] is None for c in parents if c.isdigit())  # codeless categories are roots
    assert all(c.rsplit(".", 1)[0] == p for c, p in parents.items() if p)
    # one item record per product, with its category, price and (when known) brand
    assert len(items) == 6_493
    assert items["44600062"] == {"item_id": "44600062", "category_id": "2103807459595387724",
                                 "price": 35.79, "brand": "shiseido"}
    assert "brand" not in items["17200506"] and items["17200506"]["category_id"] == "furniture.living_room.sofa"
    assert all(items[e["item_id"]]["category_id"] == e["category_id"] for e in raw)


def test_rees46_remove_from_cart_is_skipped_not_counted(tmp_path):
    header = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session\n"
    rows = [
        "2019-11-01 00:00:00 UTC,view,1,10,a.b,x,1.00,7,s",
        "2019-11-01 00:00:01 UTC,cart,1,10,a.b,x,1.00,7,s",
        "2019-11-01 00:00:02 UTC,remove_from_cart,1,10,a.b,x,1.00,7,s",
        "2019-11-01 00:00:03 UTC,purchase,2,11,,,2.50,7,s",
        "not a time,view,3,12,c,,1,8,s",
        "2019-11-01 00:00:05 UTC,refund,3,12,c,,1,8,s",
    ]
    path = tmp_path / "2019-Nov.csv"
    path.write_text(header + "\n".join(rows) + "\n")
    src = open_log(path, "rees46")
    events = list(src.events())
    assert [e["type"] for e in events] == ["view", "cart", "purchase", "view", "refund"]
    assert src.skipped["remove_from_cart"] == 1
    assert events[0]["ts"] == 1572566400 and events[0]["category_id"] == "a.b"
    assert events[2]["category_id"] == "11" and events[2]["event_id"] == "rees46:2019-Nov:5"
    reasons = []
    for e in events[3:]:
        with pytest.raises(InvalidEvent) as err:
            parse_event(e, now=NOW)
        reasons.append(err.value.reason)
    assert reasons == ["wrong_type", "unknown_type"]  # malformed rows still flow, to be dead-lettered
    assert [e["type"] for e in open_log(path, "rees46", limit=3).events()] == ["view", "cart", "purchase"]
    parents, items = check_tree(list(src.catalog()))
    assert parents == {"a": None, "a.b": "a", "11": None, "c": None}
    assert items["2"] == {"item_id": "2", "category_id": "11", "price": 2.5}


# ----------------------------------------------------------------------------- MovieLens


@pytest.fixture(scope="module")
def movielens():
    src = open_log(need(MOVIELENS), "movielens")
    return src, list(src.events()), list(src.catalog())


def test_movielens_matches_provenance(movielens):
    _, raw, _ = movielens
    events = all_valid(raw)
    assert len(events) == 100_000
    assert Counter(e.type for e in events) == {"purchase": 34_174 + 21_201, "view": 6_110 + 11_370 + 27_145}
    assert len({e.user_id for e in events}) == 943
    assert len({e.item_id for e in events}) == 1_682
    assert events[0].ts == 874_724_710 and events[-1].ts == 893_286_638
    assert all(a.ts <= b.ts for a, b in zip(events, events[1:]))  # sorted, u.data is not
    assert len({e.event_id for e in events}) == 100_000
    assert all(e.event_id.startswith("movielens:u.data:") for e in events)
    assert {e.category_id for e in events} <= set(
        "unknown Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy Film-Noir "
        "Horror Musical Mystery Romance Sci-Fi Thriller War Western".split())


def test_movielens_sort_is_stable_and_keeps_line_ids(movielens):
    _, raw, _ = movielens
    lines = [int(e["event_id"].rsplit(":", 1)[1]) for e in raw]
    for a, b, la, lb in zip(raw, raw[1:], lines, lines[1:]):
        if a["ts"] == b["ts"]:
            assert la < lb
    first = next(e for e in raw if e["event_id"] == "movielens:u.data:1")
    assert first == {"event_id": "movielens:u.data:1", "user_id": "196", "item_id": "242", "type": "view",
                     "ts": 881250949, "category_id": "Comedy"}


def test_movielens_catalog_first_genre(movielens):
    _, raw, records = movielens
    assert all(set(r) == {"item_id", "category_id"} for r in records)  # genres are flat: no tree
    by_item = {r["item_id"]: r["category_id"] for r in records}
    assert len(by_item) == 1_682
    assert by_item["1"] == "Animation"  # Toy Story: Animation|Children's|Comedy
    assert by_item["2"] == "Action"  # GoldenEye: Action|Adventure|Thriller
    assert Counter(by_item.values())["unknown"] == 2
    assert all(by_item[e["item_id"]] == e["category_id"] for e in raw)


def test_movielens_accepts_the_data_file_and_limit():
    src = open_log(need(MOVIELENS) / "u.data.gz", "movielens", limit=500)
    events = list(src.events())
    assert len(events) == 500
    assert events[0]["ts"] == 874_724_710 and "category_id" in events[0]


# ----------------------------------------------------------------------------- RetailRocket (fixture)


def write(path: Path, text: str) -> Path:
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


@pytest.fixture()
def retailrocket(tmp_path):
    write(tmp_path / "events.csv.gz", "\n".join([
        "timestamp,visitorid,event,itemid,transactionid",
        "1433221332117,257597,view,355908,",
        "1433224214164,992329,view,248676,",
        "1433221999827,111016,addtocart,355908,",
        "1433222000000,111016,transaction,355908,4000",
        "1433222000000,111016,wishlist,355908,",  # unknown behaviour: flows to dead letters
        "oops,5,view,7,",  # bad time: flows to dead letters, sorted after the row before it
        "1433221000000,5,view,999,",
        "1433221500000,007,view,999,",  # an id that is not a plain number keeps its spelling and its time
    ]) + "\n")
    write(tmp_path / "item_properties_part1.csv", "\n".join([
        "timestamp,itemid,property,value",
        "1435460400000,355908,categoryid,1173",
        "1441508400000,248676,categoryid,1000",
        "1439694000000,248676,available,1",
        "1431226800000,355908,790,n24000.000",
    ]) + "\n")
    write(tmp_path / "item_properties_part2.csv.gz", "\n".join([
        "timestamp,itemid,property,value",
        "1433041200000,355908,categoryid,1338",  # older: 1173 stays
        "1431831600000,248676,categoryid,1000",
        "1442113200000,248676,categoryid,491",  # newer: wins
        "1442113200000,999,categoryid,77",  # 77 is not in the tree
    ]) + "\n")
    write(tmp_path / "category_tree.csv", "\n".join([
        "categoryid,parentid",
        "1016,213",
        "1173,1016",
        "213,",
        "491,1679",  # 1679 has no row of its own
        "1338,",
    ]) + "\n")
    return tmp_path


def test_retailrocket_events(retailrocket):
    src = open_log(retailrocket, "retailrocket")
    events = list(src.events())
    assert len(events) == 8
    good = [e for e in events if e.get("type") in EVENT_TYPES and isinstance(e.get("ts"), float)]
    assert [(e["type"], e["ts"]) for e in good] == [
        ("view", 1433221000.0), ("view", 1433221332.117), ("view", 1433221500.0), ("cart", 1433221999.827),
        ("purchase", 1433222000.0), ("view", 1433224214.164)]
    assert good[2]["user_id"] == "007"
    assert good[0]["event_id"] == "retailrocket:events:8" and good[0]["user_id"] == "5"
    assert good[4] == {"event_id": "retailrocket:events:5", "user_id": "111016", "item_id": "355908",
                       "type": "purchase", "ts": 1433222000.0}
    bad = [e for e in events if e not in good]
    assert [e["event_id"] for e in bad] == ["retailrocket:events:6", "retailrocket:events:7"]
    assert events.index(bad[0]) == 5  # stable: after the transaction of the same millisecond
    assert events.index(bad[1]) == 6  # no time of its own: stays after the row before it
    for e in bad:
        with pytest.raises(InvalidEvent):
            parse_event(e, now=NOW)
    all_valid(good)
    assert len(list(open_log(retailrocket / "events.csv.gz", "retailrocket", limit=2).events())) == 2


def test_retailrocket_catalog(retailrocket):
    parents, items = check_tree(list(open_log(retailrocket, "retailrocket").catalog()))
    assert parents == {"1016": "213", "1173": "1016", "213": None, "491": "1679", "1679": None,
                       "1338": None, "77": None}  # 1000 was 248676's category only before 491
    assert {i: r["category_id"] for i, r in items.items()} == {"355908": "1173", "248676": "491", "999": "77"}


# ----------------------------------------------------------------------------- NDJSON and catalog files


def test_ndjson_passes_objects_and_raw_bad_lines(tmp_path):
    lines = [
        orjson.dumps({"event_id": "a", "user_id": "u", "item_id": "i", "type": "view", "ts": 1.5}).decode(),
        "",
        "{not json",
        "[1, 2]",
        orjson.dumps({"event_id": "b", "user_id": "u", "item_id": "j", "type": "cart", "ts": 2,
                      "category_id": "c"}).decode(),
    ]
    path = write(tmp_path / "events.ndjson.gz", "\n".join(lines) + "\n")
    src = open_log(path, "ndjson")
    events = list(src.events())
    assert events[0]["event_id"] == "a" and events[3]["event_id"] == "b"
    assert events[1:3] == ["{not json", "[1, 2]"]
    reasons = []
    for e in events[1:3]:
        with pytest.raises(InvalidEvent) as err:
            parse_event(e, now=NOW)
        reasons.append(err.value.reason)
    assert reasons == ["not_json", "not_object"]
    assert list(src.catalog()) == [{"item_id": "j", "category_id": "c"}]
    assert len(list(open_log(path, "ndjson", limit=1).events())) == 1


def test_catalog_file_overrides_derived_catalog(tmp_path):
    catalog = write(tmp_path / "catalog.ndjson", "\n".join([
        '{"category_id": "root", "parent_id": null}',
        '{"category_id": "leaf", "parent_id": "root"}',
        "garbage",
        '{"item_id": "1715", "category_id": "leaf"}',
    ]) + "\n")
    log = write(tmp_path / "ub.csv", "543462,1715,1464116,pv,1511658000\n")
    src = open_log(log, "taobao", catalog_path=catalog)
    assert [r.get("item_id") or r["category_id"] for r in src.catalog()] == ["root", "leaf", "1715"]
    assert src.skipped["catalog_malformed"] == 1


def test_taobao_malformed_rows_flow_to_dead_letters(tmp_path):
    log = write(tmp_path / "ub.csv", "\n".join([
        "1,2,3,pv,1511658000",
        "1,2,3,like,1511658001",
        "1,2,3,buy",
        "1,2,3,buy,soon",
        "",
        "1,2,,cart,1511658003",
    ]) + "\n")
    events = list(open_log(log, "taobao").events())
    assert [e["event_id"] for e in events] == ["taobao:ub:1", "taobao:ub:2", "taobao:ub:3", "taobao:ub:4",
                                               "taobao:ub:6"]
    reasons = []
    for e in events:
        try:
            parse_event(e, now=NOW)
            reasons.append("ok")
        except InvalidEvent as err:
            reasons.append(err.reason)
    assert reasons == ["ok", "unknown_type", "missing_field", "wrong_type", "ok"]
    assert "category_id" not in events[-1]


# ----------------------------------------------------------------------------- errors


def test_unknown_format(tmp_path):
    with pytest.raises(LoaderError, match="unknown log format 'csv'; known formats: retailrocket"):
        open_log(tmp_path, "csv")
    assert set(FORMATS) == {"retailrocket", "taobao", "rees46", "movielens", "ndjson", "synthetic"}


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "synthetic"])
def test_missing_path(tmp_path, fmt):
    with pytest.raises(LoaderError, match="not found|no u.data|no events.csv") as err:
        open_log(tmp_path / "nope" / "events.csv", fmt)
    assert "nope" in str(err.value)


def test_directory_without_the_log(tmp_path):
    with pytest.raises(LoaderError, match="no u.data"):
        open_log(tmp_path, "movielens")
    with pytest.raises(LoaderError, match="no events.csv"):
        open_log(tmp_path, "retailrocket")
    with pytest.raises(LoaderError, match="is a directory"):
        open_log(tmp_path, "taobao")


def test_wrong_format_is_refused_on_the_first_row(tmp_path):
    rees = write(tmp_path / "r.csv", "event_time,event_type,product_id,category_id,category_code,brand,price,"
                                     "user_id,user_session\n2019-10-01 00:00:00 UTC,view,1,2,,,1,3,s\n")
    taobao = write(tmp_path / "t.csv", "543462,1715,1464116,pv,1511658000\n")
    with pytest.raises(LoaderError, match="does not look like a taobao log.*first row is 'event_time,"):
        open_log(rees, "taobao")
    with pytest.raises(LoaderError, match="does not look like a rees46 log"):
        open_log(taobao, "rees46")
    with pytest.raises(LoaderError, match="does not look like a movielens log"):
        open_log(taobao, "movielens")
    with pytest.raises(LoaderError, match="does not look like a retailrocket log"):
        open_log(taobao, "retailrocket")
    with pytest.raises(LoaderError, match="does not look like a ndjson log"):
        open_log(taobao, "ndjson")


def test_empty_damaged_and_fake_gzip(tmp_path):
    with pytest.raises(LoaderError, match="is empty"):
        open_log(write(tmp_path / "e.csv", ""), "taobao")
    assert list(open_log(write(tmp_path / "e.ndjson", ""), "ndjson").events()) == []
    (tmp_path / "x.csv.gz").write_text("543462,1715,1464116,pv,1511658000\n")
    with pytest.raises(LoaderError, match="ends in .gz but is not a gzip file"):
        open_log(tmp_path / "x.csv.gz", "taobao")
    data = gzip.compress(("543462,1715,1464116,pv,1511658000\n" * 20_000).encode())
    (tmp_path / "cut.csv.gz").write_bytes(data[: len(data) // 2])
    src = open_log(tmp_path / "cut.csv.gz", "taobao")  # the first row reads fine
    with pytest.raises(LoaderError, match="damaged or truncated gzip"):
        list(src.events())


def test_bad_arguments(tmp_path):
    log = write(tmp_path / "t.csv", "543462,1715,1464116,pv,1511658000\n")
    with pytest.raises(LoaderError, match="limit"):
        open_log(log, "taobao", limit=-1)
    with pytest.raises(LoaderError, match="catalog file not found"):
        open_log(log, "taobao", catalog_path=tmp_path / "nope.ndjson")
    with pytest.raises(LoaderError, match="bad synthetic spec"):
        open_log("users=ten", "synthetic")
    with pytest.raises(LoaderError, match="bad synthetic spec"):
        open_log("colour=blue", "synthetic")
    assert list(open_log(log, "TAOBAO", limit=0).events()) == []


# ----------------------------------------------------------------------------- synthetic through open_log


def test_synthetic_through_open_log():
    src = open_log("users=50,items=400,roots=3,categories_per_root=4,events=3000", "synthetic", seed=5, limit=1000)
    events = list(src.events())
    assert len(events) == 1000 and events[0]["event_id"] == "syn:5:0"
    all_valid(events)
    parents, items = check_tree(list(src.catalog()))
    assert len(parents) == 3 + 12 and len(items) == 400
    assert {e["category_id"] for e in events} <= set(parents)
    assert open_log(None, "synthetic", limit=10).synthetic_config.seed == 0


# ----------------------------------------------------------------------------- tree closure


def test_category_tree_with_a_cycle_becomes_a_forest(tmp_path):
    write(tmp_path / "events.csv", "timestamp,visitorid,event,itemid,transactionid\n1433221332117,1,view,2,\n")
    write(tmp_path / "category_tree.csv", "categoryid,parentid\n1,2\n2,3\n3,1\n4,4\n5,1\n")
    parents, _ = check_tree(list(open_log(tmp_path, "retailrocket").catalog()))
    assert set(parents) == {"1", "2", "3", "4", "5"}
    assert sum(p is None for p in parents.values()) == 2  # the cycle is cut once; 4 is its own root


def test_tree_records_are_always_a_closed_forest():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from strata.models.logs.loaders import _tree_records

    ids = st.sampled_from([str(i) for i in range(12)])

    @settings(max_examples=300, deadline=None, database=None)
    @given(st.dictionaries(ids, st.one_of(st.none(), ids), max_size=12))
    def check(parents):
        records = _tree_records(parents)
        got, _ = check_tree(records)
        assert set(parents) <= set(got)
        assert all(got[c] in (p, None) for c, p in parents.items())  # a link is kept or cut, never changed

    check()
