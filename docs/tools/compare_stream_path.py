"""Paired comparison of the stream hot path's model work in two checkouts, in one process.

    python docs/tools/compare_stream_path.py /path/to/old/checkout [--events 300000] [--rounds 4]

`strata bench stream` measures the whole worker, but this machine's speed drifts by ±20 % within
minutes, more than most changes to the hot path.  Here the old checkout's `models` package (see
compare_ranking.py) and this checkout's take turns on the same records: the bench's synthetic
log (20,000 users, 5,000 items, keyed by user onto 8 partitions, fetched `--per-fetch` records
a partition at a time: 6,250 by default, as a backlog fetches with STRATA_BATCH_SIZE=50000;
the comparisons recorded before that default use 1,250), each doing what `streams/agents.py` does with a fetched batch — parse and
validate every record, the shop's online rates, the profile update, the encoding of every
touched profile, the batch's activity aggregate, and the popularity feed learning it — with
Kafka and RocksDB left out.  The two alternate fetch by fetch, so that both see the same
moments of the machine.  It prints the CPU time per event of each, round by round.
"""
from __future__ import annotations

import argparse
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
from strata.streams.worker import tune_garbage_collector  # noqa: E402

Record = namedtuple("Record", "key value offset")
PARTITIONS = 8


def fetches(events: list[dict], per_fetch: int) -> list[dict[int, list[Record]]]:
    parts: dict[int, list[Record]] = defaultdict(list)
    for e in events:
        key = e["user_id"].encode()
        part = parts[zlib.crc32(key) % PARTITIONS]
        part.append(Record(key, orjson.dumps(e), len(part)))
    out, start = [], 0
    while any(start < len(records) for records in parts.values()):
        out.append({p: records[start:start + per_fetch] for p, records in parts.items() if start < len(records)})
        start += per_fetch
    return out


class HotPath:
    """One checkout's model work on fresh state; `step(batch)` processes one fetch and returns
    its CPU seconds."""

    def __init__(self, package: str, catalog_records: list[dict]) -> None:
        m = {name: importlib.import_module(f"{package}.{name}")
             for name in ("catalog", "events", "popularity", "profile", "ranking")}
        self.Profile, self.ShopRates = m["profile"].Profile, m["ranking"].ShopRates
        self.encode = getattr(m["profile"], "encode_profiles", None) or (lambda profiles: [p.to_bytes() for p in profiles])
        self.parse = m["events"].parse_keyed_message
        self.catalog = m["catalog"].Catalog.from_records(catalog_records)
        self.params, self.rank_params = m["profile"].ProfileParams(), m["ranking"].RankParams()
        self.popularity = m["popularity"].Popularity(half_life_s=self.rank_params.popularity_half_life_s)
        self.cache: dict[bytes, object] = {}
        self.store: dict[bytes, bytes] = {}
        self.now = time.time()

    def step(self, batch: dict[int, list[Record]]) -> float:
        Profile, ShopRates, popularity, params = self.Profile, self.ShopRates, self.popularity, self.params
        cache, store, beta, h = self.cache, self.store, params.beta, popularity.half_life_s
        start = time.process_time()
        applied, shop = [], ShopRates()
        for records in batch.values():
            profiles: dict[str, object] = {}
            for record in records:
                event = self.parse(record.key, record.value, self.now)
                profile = profiles.get(event.user_id)
                if profile is None:
                    profile = cache.get(record.key)
                    if profile is None:
                        raw = store.get(record.key)
                        profile = Profile() if raw is None else Profile.from_bytes(raw)
                    profiles[event.user_id] = profile
                domain, overall = self.catalog.layers_for(event.item_id, event.category_id)
                seen = ShopRates.observe(profile, event.item_id, domain, popularity, self.rank_params, params)
                if profile.learn(event, domain, overall, params):
                    applied.append((event, domain))
                    shop.add(seen)
                profile.seq = record.offset
            for (user_id, profile), raw in zip(profiles.items(), self.encode(list(profiles.values()))):
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
    parser.add_argument("--per-fetch", type=int, default=6_250, help="records of a partition in one fetch")
    args = parser.parse_args()
    if not (args.old / "models").is_dir():
        parser.error(f"{args.old} has no models/ package")
    from strata.models.logs.loaders import open_log

    source = open_log(f"users=20000,items=5000,events={args.events}", "synthetic", seed=7)
    catalog_records, events = list(source.catalog()), list(source.events())
    batches = fetches(events, args.per_fetch)
    tune_garbage_collector()  # as the worker does: collections are part of the hot path's cost
    with tempfile.TemporaryDirectory() as tmp:
        old = load_old(args.old, Path(tmp))
        rows = []
        for r in range(args.rounds):
            # Fetch by fetch, in alternating order, so that both see the same moments of the machine.
            sides = {"old": HotPath(old, catalog_records), "new": HotPath("strata.models", catalog_records)}
            cpu = {"old": 0.0, "new": 0.0}
            for i, batch in enumerate(batches):
                for name in ("old", "new") if (i + r) % 2 == 0 else ("new", "old"):
                    cpu[name] += sides[name].step(batch)
            row = {"round": r + 1, **{f"{name}_us_per_event": round(cpu[name] / len(events) * 1e6, 2) for name in cpu},
                   "new_over_old": round(cpu["new"] / cpu["old"], 3)}
            rows.append(row)
            print(f"round {r + 1}: old {row['old_us_per_event']:6.2f} µs, new {row['new_us_per_event']:6.2f} µs CPU an event"
                  f" · new / old {row['new_over_old']:.3f}", flush=True)
    ratios = sorted(row["new_over_old"] for row in rows)
    print(json.dumps({"events": len(events), "fetches": len(batches), "rounds": rows,
                      "median_new_over_old": ratios[len(ratios) // 2]}))
    print(f"new / old, median of {len(rows)} rounds: {ratios[len(ratios) // 2]:.3f} (range {ratios[0]:.3f} … {ratios[-1]:.3f})")


if __name__ == "__main__":
    main()
