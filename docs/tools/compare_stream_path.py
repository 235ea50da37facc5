"""Paired comparison of the stream hot path's model work in two checkouts, in one process.

    python docs/tools/compare_stream_path.py /path/to/old/checkout [--events 300000] [--rounds 4]

`strata bench stream` measures the whole worker, but this machine's speed drifts by ±20 % within
minutes, more than most changes to the hot path.  Here the old checkout's `models` package (see
compare_ranking.py) and this checkout's take turns on the same records: the bench's synthetic
log (20,000 users, 5,000 items, keyed by user onto 8 partitions, fetched 1,250 records a
partition at a time), each doing what `streams/agents.py` does with a fetched batch — parse and
validate every record, the shop's online rates, the profile update, the encoding of every
touched profile, the batch's activity aggregate, and the popularity feed learning it — with
Kafka and RocksDB left out.  It prints the CPU time per event of each, round by round.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import sys
import tempfile
import time
import zlib
from collections import defaultdict, namedtuple
from pathlib import Path

import msgpack
import orjson

HERE = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_ranking import load_old  # noqa: E402

Record = namedtuple("Record", "key value offset")
PARTITIONS, PER_FETCH = 8, 1_250


def fetches(events: list[dict]) -> list[dict[int, list[Record]]]:
    parts: dict[int, list[Record]] = defaultdict(list)
    for e in events:
        key = e["user_id"].encode()
        part = parts[zlib.crc32(key) % PARTITIONS]
        part.append(Record(key, orjson.dumps(e), len(part)))
    out, start = [], 0
    while any(start < len(records) for records in parts.values()):
        out.append({p: records[start:start + PER_FETCH] for p, records in parts.items() if start < len(records)})
        start += PER_FETCH
    return out


def hot_path(package: str, catalog_records: list[dict], batches: list) -> float:
    """CPU seconds of the model work of every batch, on fresh state."""
    m = {name: importlib.import_module(f"{package}.{name}") for name in ("catalog", "events", "popularity", "profile", "ranking")}
    Profile, ShopRates = m["profile"].Profile, m["ranking"].ShopRates
    encode = getattr(m["profile"], "encode_profiles", None) or (lambda profiles: [p.to_bytes() for p in profiles])
    parse = m["events"].parse_keyed_message
    catalog = m["catalog"].Catalog.from_records(catalog_records)
    params, rank_params = m["profile"].ProfileParams(), m["ranking"].RankParams()
    popularity = m["popularity"].Popularity(half_life_s=rank_params.popularity_half_life_s)
    beta, h = params.beta, popularity.half_life_s
    cache: dict[bytes, object] = {}
    store: dict[bytes, bytes] = {}
    now = time.time()
    gc.collect()
    start = time.process_time()
    for batch in batches:
        applied, shop = [], ShopRates()
        for records in batch.values():
            profiles: dict[str, object] = {}
            for record in records:
                event = parse(record.key, record.value, now)
                profile = profiles.get(event.user_id)
                if profile is None:
                    profile = cache.get(record.key)
                    if profile is None:
                        raw = store.get(record.key)
                        profile = Profile() if raw is None else Profile.from_bytes(raw)
                    profiles[event.user_id] = profile
                domain, overall = catalog.layers_for(event.item_id, event.category_id)
                seen = ShopRates.observe(profile, event.item_id, domain, popularity, rank_params, params)
                if profile.learn(event, domain, overall, params):
                    applied.append((event, domain))
                    shop.add(seen)
                profile.seq = record.offset
            for (user_id, profile), raw in zip(profiles.items(), encode(list(profiles.values()))):
                key = user_id.encode()
                store[key] = raw
                cache[key] = profile
        # the activity record every worker's popularity feed learns (streams/feeds.py)
        acc: dict[tuple, list[float]] = {}
        for e, category in applied:
            entry = acc.get((e.item_id, category))
            if entry is None:
                acc[(e.item_id, category)] = [beta[e.type], e.ts]
            elif e.ts >= entry[1]:
                entry[0], entry[1] = entry[0] * 2.0 ** (-(e.ts - entry[1]) / h) + beta[e.type], e.ts
            else:
                entry[0] += beta[e.type] * 2.0 ** (-(entry[1] - e.ts) / h)
        message = msgpack.unpackb(msgpack.packb({"items": [(i, c, w, t) for (i, c), (w, t) in acc.items()], **shop.to_dict()}))
        ShopRates.from_dict(message)
        for item, category, weight, ts in message["items"]:
            popularity.learn(item, category, float(weight), float(ts))
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", type=Path, help="the other checkout (its `models` package is loaded as `oldmodels`)")
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    if not (args.old / "models").is_dir():
        parser.error(f"{args.old} has no models/ package")
    from models.loaders import open_log

    source = open_log(f"users=20000,items=5000,events={args.events}", "synthetic", seed=7)
    catalog_records, events = list(source.catalog()), list(source.events())
    batches = fetches(events)
    with tempfile.TemporaryDirectory() as tmp:
        old = load_old(args.old, Path(tmp))
        rows = []
        for r in range(args.rounds):
            for name, package in (("old", old), ("new", "models")) if r % 2 == 0 else (("new", "models"), ("old", old)):
                seconds = hot_path(package, catalog_records, batches)
                rows.append({"round": r + 1, "code": name, "us_per_event": round(seconds / len(events) * 1e6, 2)})
                print(f"round {r + 1}  {name}: {rows[-1]['us_per_event']:6.2f} µs CPU an event", flush=True)
    per = {name: sorted(row["us_per_event"] for row in rows if row["code"] == name) for name in ("old", "new")}
    ratios = [n["us_per_event"] / o["us_per_event"] for n, o in zip(
        (row for row in rows if row["code"] == "new"), (row for row in rows if row["code"] == "old"))]
    summary = {"events": len(events), "fetches": len(batches), "rounds": rows,
               "median_us_per_event": {k: v[len(v) // 2] for k, v in per.items()},
               "new_over_old_per_round": [round(x, 3) for x in ratios]}
    print(json.dumps(summary))
    print(f"new / old, round by round: {' '.join(f'{x:.2f}' for x in ratios)}")


if __name__ == "__main__":
    main()
