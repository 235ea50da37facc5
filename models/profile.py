"""The three-layer interest profile of docs/design.md §3.

For user u, layer L and key k:

    w_L(k, T) = Σ_e β(type_e) · 2^(−(T − ts_e) / H_L)

kept incrementally as a pair (w, t) per key: an event at t′ ≥ t sets
w ← w·2^(−(t′−t)/H) + β, t ← t′; an older event adds β·2^(−(t−t′)/H) instead.
Either way the pair represents the same function of T, so the profile is a
function of the *set* of events, not of their arrival order (while no layer
overflows its cap).

Caps drop the smallest weights.  Comparing decayed weights at a common time T
ranks keys by log2(w) + t/H, whatever T is, so pruning needs no clock.

Weights are kept to single precision (float32, seven significant digits — far more
than the data supports): every update rounds its result, so the stored profile is
the live one bit for bit, and a profile at the default caps fits docs/design.md §7's 4 KiB.
Times are kept exactly as the events gave them.
"""
from __future__ import annotations

import hashlib
import heapq
import math
import struct
import sys
from array import array
from dataclasses import dataclass, field, replace
from itertools import islice
from types import MappingProxyType
from typing import Collection, Iterable, Mapping, Sequence

import msgpack
import numpy as np

from strata.models.events import EVENT_TYPES, Event, InvalidEvent, Served

LAYERS: tuple[str, ...] = ("item", "domain", "overall")
DAY = 86_400.0

DEFAULT_BETA = MappingProxyType(dict(zip(EVENT_TYPES, (1.0, 2.0, 3.0, 4.0, 6.0), strict=True)))  # β by behaviour
DEFAULT_HALF_LIFE_S = MappingProxyType({"item": 3 * DAY, "domain": 14 * DAY, "overall": 60 * DAY})
DEFAULT_CAPS = MappingProxyType({"item": 200, "domain": 50, "overall": 20})
#: the item layer's cap (when larger) never drops one of the last this many items touched,
#: whatever their weight: the ranker reads them as the shopper's recent items
#: (`Profile.recent_items`); the rest of the cap keeps the heaviest
KEEP_RECENT = 21
#: an event id is remembered this long (event time, before the user's newest event), so that a copy
#: arriving within it is dropped however many events lie between the two (docs/design.md §2)
DEFAULT_DEDUP_HORIZON_S = 7 * DAY
#: a purchase filters its item this long (event time, before the user's newest event)
DEFAULT_PURCHASE_HORIZON_S = 365 * DAY
#: hard bounds on one user's remembered ids and purchases, so that a stored profile always fits a
#: Kafka record (≈ 12 bytes an id, ≈ 8-20 a purchase): far above any shopper's, reached only by bots.
#: Past MAX_SEEN the oldest ids go and the user's `floor` rises above them (see `Profile.learn`).
MAX_SEEN = 20_000
MAX_PURCHASES = 10_000
#: how far a seen id's stored time (float32: 128 s apart at today's epoch times, 256 s past 2038)
#: may be from the event's; ids are kept this much past the horizon, so none is forgotten early
SEEN_SLACK_S = 1024.0


class TooLate(InvalidEvent):
    """An event older than its user's de-duplication horizon: whether it is a copy of an applied
    event can no longer be told, so it is refused (dead-lettered with this reason), never applied."""

    def __init__(self, ts: float, cut: float) -> None:
        super().__init__("too_late", f"ts {ts!r} is before {cut!r}: older than the de-duplication horizon "
                                     "before this user's newest event")


@dataclass(frozen=True)
class ProfileParams:
    """Behaviour weights, half-lives and caps: everything a profile update depends on."""

    beta: Mapping[str, float] = field(default_factory=lambda: DEFAULT_BETA)
    half_life_s: Mapping[str, float] = field(default_factory=lambda: DEFAULT_HALF_LIFE_S)
    caps: Mapping[str, int] = field(default_factory=lambda: DEFAULT_CAPS)
    dedup_horizon_s: float = DEFAULT_DEDUP_HORIZON_S
    purchase_horizon_s: float = DEFAULT_PURCHASE_HORIZON_S

    def __post_init__(self) -> None:
        for name in ("dedup_horizon_s", "purchase_horizon_s"):
            h = getattr(self, name)
            if not (isinstance(h, (int, float)) and math.isfinite(h) and h > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {h!r}")
        for etype in EVENT_TYPES:
            b = self.beta.get(etype)
            if b is None or not (math.isfinite(b) and b >= 0):
                raise ValueError(f"beta[{etype!r}] must be a finite number ≥ 0, got {b!r}")
        for layer in LAYERS:
            h = self.half_life_s.get(layer)
            if h is None or not (math.isfinite(h) and h > 0):
                raise ValueError(f"half_life_s[{layer!r}] must be a positive number of seconds, got {h!r}")
            c = self.caps.get(layer)
            if c is None or int(c) < 1:
                raise ValueError(f"caps[{layer!r}] must be ≥ 1, got {c!r}")
        # Freeze copies so that a caller's dict cannot change a running model.
        object.__setattr__(self, "beta", MappingProxyType({k: float(self.beta[k]) for k in EVENT_TYPES}))
        object.__setattr__(self, "half_life_s", MappingProxyType({k: float(self.half_life_s[k]) for k in LAYERS}))
        object.__setattr__(self, "caps", MappingProxyType({k: int(self.caps[k]) for k in LAYERS}))

    def __reduce__(self):  # the read-only views do not pickle; their contents do
        return ProfileParams, (dict(self.beta), dict(self.half_life_s), dict(self.caps), self.dedup_horizon_s,
                               self.purchase_horizon_s)

    def as_dict(self) -> dict:
        return {
            "beta": dict(self.beta),
            "half_life_s": dict(self.half_life_s),
            "caps": dict(self.caps),
            "dedup_horizon_s": self.dedup_horizon_s,
            "purchase_horizon_s": self.purchase_horizon_s,
        }


_F32 = struct.Struct("<f")


def single(x: float, _pack=_F32.pack, _unpack=_F32.unpack) -> float:
    """x rounded to the nearest float32: the precision profile weights are kept at.
    (The struct's methods are bound once: this runs three times per event.)"""
    return _unpack(_pack(x))[0]


def _event_hash(event_id: str, _blake2b=hashlib.blake2b, _from_bytes=int.from_bytes) -> int:
    return _from_bytes(_blake2b(event_id.encode(), digest_size=8).digest(), "big")


def _holds(recent: array, h: int, _byteorder=sys.byteorder) -> bool:
    """`h in recent`.  `in` makes a Python int of every element, on every event of a returning
    user; searching the bytes in C does not, and wins once the window holds a dozen or more."""
    if len(recent) < 12:
        return h in recent
    buf = recent.tobytes()
    needle = h.to_bytes(8, _byteorder)
    i = buf.find(needle)
    while i % 8:  # a match across two elements is no match (-1 % 8 is 7: not found)
        if i < 0:
            return False
        i = buf.find(needle, i + 1)
    return True


def _layer_dicts() -> dict[str, dict[str, float]]:
    return {layer: {} for layer in LAYERS}


@dataclass(slots=True)
class Profile:
    """One user's live interest state.

    `w[L][k]` is the weight of key k of layer L as of time `t[L][k]` (the (w, t) pair of
    docs/design.md §3, kept in two dicts of plain floats).  Besides the interest layers, two ledgers that
    the maths never reads:

    - `purchases` maps every item bought within `purchase_horizon_s` of the user's newest
      event to its last purchase time (the exact purchase filter);
    - `seen` / `seen_t` hold a 64-bit hash and the event time (float32: to `SEEN_SLACK_S`) of
      every event applied within `dedup_horizon_s` of the newest: a copy of one is dropped,
      however late it comes.  An event older than the horizon (or than `floor`, raised only past
      `MAX_SEEN` ids) could be a copy of a forgotten one: `learn` refuses it (`TooLate`).

    `seq` is the highest source sequence number applied (drops redelivery).

    Why floats in dicts rather than (w, t) pairs: a worker caches tens of thousands of decoded
    profiles, and every full garbage collection walks every element of every tracked
    container.  Dicts of floats are never tracked; dicts of pairs made each full collection walk
    every pair of every cached profile, and those pauses were the stream's latency tail.  What the
    collector still visits is each profile, its two dicts of layers and its two arrays (an `array`
    is tracked, though it holds no references): five objects a profile.
    """

    w: dict[str, dict[str, float]] = field(default_factory=_layer_dicts)
    t: dict[str, dict[str, float]] = field(default_factory=_layer_dicts)
    purchases: dict[str, float] = field(default_factory=dict)
    count: int = 0
    last_ts: float | None = None
    seen: array = field(default_factory=lambda: array("Q"))
    seen_t: array = field(default_factory=lambda: array("f"))
    seq: int = -1
    floor: float = -math.inf
    #: the time of the first id kept (when `_expire` is due; not stored)
    first_seen: float = field(default=math.inf, compare=False, repr=False)
    #: the lists recently served to the user, oldest first (`models.attribution`; their `user_id`
    #: is not stored: ""), None when there are none
    served: list | None = None

    # -- learning ----------------------------------------------------------
    def learn(self, event: Event, domain: str | None, overall: str, params: ProfileParams) -> bool:
        """Apply one event; `domain`/`overall` are its category and root (see Catalog.layers_for).

        Returns False (and changes nothing) for a duplicate event id; raises `TooLate` (and
        changes nothing) for an event before `self.cut(params)`.
        """
        ts = event.ts
        last = self.last_ts
        # (a later event than every one applied is no copy of a forgotten one)
        if last is not None and ts <= last and (ts < last - params.dedup_horizon_s or ts < self.floor):
            raise TooLate(ts, self.cut(params))
        h = _event_hash(event.event_id)
        seen = self.seen
        if _holds(seen, h):
            return False
        seen.append(h)
        self.seen_t.append(ts)

        beta = params.beta[event.type]
        w, t, half_life, caps = self.w, self.t, params.half_life_s, params.caps
        _add(w["item"], t["item"], event.item_id, beta, ts, half_life["item"], caps["item"], True)
        if domain is not None:
            _add(w["domain"], t["domain"], domain, beta, ts, half_life["domain"], caps["domain"])
        _add(w["overall"], t["overall"], overall, beta, ts, half_life["overall"], caps["overall"])

        if event.type == "purchase":
            prev = self.purchases.get(event.item_id)
            if prev is None or ts > prev:
                self.purchases[event.item_id] = ts
                if len(self.purchases) > MAX_PURCHASES:
                    self._prune(params)
        self.count += 1
        if last is None:
            self.last_ts = self.first_seen = ts
        elif ts > last:
            self.last_ts = ts
            # Expired entries go in sweeps, once the first is an eighth of a horizon past it; until
            # then they are kept, which changes no answer.
            if ts - self.first_seen > 1.125 * params.dedup_horizon_s + SEEN_SLACK_S:
                self._expire(params)
        if len(seen) > MAX_SEEN:
            self._prune(params)
        return True

    def cut(self, params: ProfileParams) -> float:
        """The earliest event time this profile still takes (−inf before its first event)."""
        if self.last_ts is None:
            return self.floor
        return max(self.last_ts - params.dedup_horizon_s, self.floor)

    def _expire(self, params: ProfileParams) -> None:
        """Forget the ids before the de-duplication horizon, from the front (the order they were
        applied in: each id is looked at once when it goes, and an id applied out of time order
        waits its turn), and the purchases before the purchase horizon."""
        cut = self.cut(params) - SEEN_SLACK_S  # an id is kept while its rounded time might be within the horizon
        times = self.seen_t
        n = 0
        for ts in times:
            if ts >= cut:
                break
            n += 1
        del times[:n], self.seen[:n]
        self.first_seen = times[0] if times else math.inf
        p_cut = self.last_ts - params.purchase_horizon_s
        purchases = self.purchases
        for item in [item for item, ts in purchases.items() if ts < p_cut]:
            del purchases[item]

    def _prune(self, params: ProfileParams) -> None:
        """Past `MAX_SEEN` ids, forget the oldest, raising `floor` above them; past `MAX_PURCHASES`
        purchases, forget the oldest (ties: the smaller id)."""
        times = self.seen_t
        if len(times) > MAX_SEEN:
            newest_gone = sorted(times)[len(times) - MAX_SEEN - 1]  # it and every time as old go
            self.floor = max(self.floor, newest_gone + SEEN_SLACK_S)  # above every forgotten id's time
            keep = [n for n, ts in enumerate(times) if ts > newest_gone]
            self.seen = array("Q", [self.seen[n] for n in keep])
            self.seen_t = times = array("f", [times[n] for n in keep])
            self.first_seen = times[0] if times else math.inf
        purchases = self.purchases
        if len(purchases) > MAX_PURCHASES:
            for item, _ in heapq.nsmallest(len(purchases) - MAX_PURCHASES, purchases.items(), key=lambda kv: (kv[1], kv[0])):
                del purchases[item]

    # -- reading -----------------------------------------------------------
    def weights(self, layer: str, params: ProfileParams, as_of: float | None = None) -> dict[str, float]:
        """Decayed weights of one layer as of `as_of` (default: the last event time)."""
        T = self.last_ts if as_of is None else as_of
        if T is None:
            return {}
        h = params.half_life_s[layer]
        # w[layer] and t[layer] hold the same keys in the same order (see to_bytes)
        return {k: w * 2.0 ** ((t - T) / h) for (k, w), t in zip(self.w[layer].items(), self.t[layer].values())}

    def recent_items(self, n: int) -> list[str]:
        """The user's last `n` distinct items, most recent first: the item layer's keys in the
        order they were last touched (an event older than the key's time leaves it in place); the
        cap never drops the last `KEEP_RECENT`.

        >>> p, params = Profile(), ProfileParams()
        >>> for n, item in enumerate(["a", "b", "a", "c"]):
        ...     _ = p.learn(Event(str(n), "u", item, "view", float(n)), None, "*", params)
        >>> p.recent_items(5)
        ['c', 'a', 'b']
        """
        return list(islice(reversed(self.t["item"]), n))

    def snapshot(self, params: ProfileParams, as_of: float | None = None) -> dict:
        """The profile as the HTTP view shows it (docs/design.md §4)."""
        T = self.last_ts if as_of is None else as_of
        return {
            "as_of": T,
            "layers": {layer: self.weights(layer, params, T) for layer in LAYERS},
            "events": self.count,
            "purchases": sorted(self.purchases, key=lambda k: -self.purchases[k]),
        }

    # -- persistence -------------------------------------------------------
    def to_bytes(self) -> bytes:
        """msgpack, version 5 (or 6): the keys of each layer and of the purchases, then one float32 column
        of every layer's weights, one column of every time (item, domain, overall, purchases), the
        seen ids' hashes (uint64) and times (float32), and `floor`; version 6 when the user has
        served lists (`served`): version 5 and the lists, [rec_id, time, variant, items] each.

        Lossless, and compact where the data allows it (docs/design.md §7: ≤ 4 KiB at the default caps for
        the interest layers; the ledgers add ≈ 12 bytes an id seen within the de-duplication
        horizon and 8-20 a purchase within the purchase horizon):
        a key column whose keys are all canonical decimal integers stores them as integers (4 bytes
        instead of 8 for a 7-digit id), and a time column whose times are all whole seconds — or
        whole milliseconds — before `last_ts` stores the differences as uint32 (else float64
        times).  One column of times and one of weights rather than one per layer: a profile is
        encoded on every micro-batch its user is in, and most profiles are small, so the fixed
        cost of each column is most of the encoding.  `w[L]` and `t[L]` always gain and lose keys
        together, so their orders agree.  `encode_profiles` encodes many at once.
        """
        return encode_profiles([self])[0]

    def interest_bytes(self) -> bytes:
        """The encoding without the ledgers (purchases, seen ids): what docs/design.md §7's 4 KiB is about."""
        return replace(self, purchases={}, seen=array("Q"), seen_t=array("f"), served=None).to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Profile":
        fields = msgpack.unpackb(data, raw=False)
        version = fields[0]
        if version in (5, 6):  # 6: version 5 and the served lists
            _, key_columns, ws, ts, count, last_ts, seen, seen_t, seq, floor = fields[:10]
            profile = cls._from_columns(key_columns, ws, ts, count, last_ts, _from_little_endian("Q", seen),
                                        _from_little_endian("f", seen_t), seq, floor)
            if version == 6:
                profile.served = [Served("", rec_id, t, variant, tuple(items)) for rec_id, t, variant, items in fields[10]]
            return profile
        if version == 4:  # the last 32 event ids, without times: kept as of the last event
            _, key_columns, ws, ts, count, last_ts, recent, seq = fields
            return cls._from_columns(key_columns, ws, ts, count, last_ts, _from_little_endian("Q", recent), None, seq)
        if version == 3:
            return cls._from_v3(fields)
        if version == 2:
            profile = cls._from_v2(fields)
        elif version == 1:
            profile = cls._from_v1(fields)
        else:
            raise ValueError(f"unknown profile encoding version {version}")
        # Earlier encodings kept float64 weights: rounded once, on reading, so that the live
        # profile from here on is exactly what versions 3 and 4 store.
        for ws in profile.w.values():
            for key, value in ws.items():
                ws[key] = single(value)
        return profile

    @classmethod
    def _from_columns(cls, key_columns: list, ws: bytes, ts: bytes, count: int, last_ts: float | None,
                      seen: array, seen_t: array | None, seq: int, floor: float = -math.inf) -> "Profile":
        """Versions 4 and 5: the key columns of the layers and the purchases, the weight column, and
        the time column (layers, then purchases)."""
        columns = [_unpack_keys(keys) for keys in key_columns]
        sizes = [len(keys) for keys in columns]
        weights = _f32_values(ws)
        times = _unpack_times(last_ts, ts, sum(sizes))
        w, t = {}, {}
        start = 0
        for layer, keys, n in zip(LAYERS, columns, sizes):
            end = start + n
            w[layer] = dict(zip(keys, weights[start:end]))
            t[layer] = dict(zip(keys, times[start:end]))
            start = end
        purchases = dict(zip(columns[3], times[start:]))
        if seen_t is not None:
            return cls(w, t, purchases, count, last_ts, seen, seen_t, seq, floor, seen_t[0] if seen_t else math.inf)
        return cls._with_seen(w, t, purchases, count, last_ts, seen, seen_t, seq, floor)

    @classmethod
    def _with_seen(cls, w, t, purchases, count, last_ts, seen: array, seen_t: array | None, seq: int,
                   floor: float = -math.inf) -> "Profile":
        """A decoded profile; ids of encodings before version 5 (`seen_t` None), stored without their
        times, count as of `last_ts`."""
        if seen_t is None:
            seen_t = array("f", [last_ts] * len(seen)) if last_ts is not None else array("f")
            if last_ts is None:
                seen = array("Q")
        return cls(w, t, purchases, count, last_ts, seen, seen_t, seq, floor, seen_t[0] if seen_t else math.inf)

    @classmethod
    def _from_v3(cls, fields: list) -> "Profile":
        """Per layer its keys, float32 weights and times (stores and changelogs written before version 4)."""
        _, layers, p_keys, p_ts, count, last_ts, recent, seq = fields
        w, t = {}, {}
        for layer, (keys, ws, ts) in zip(LAYERS, layers):
            keys = _unpack_keys(keys)
            w[layer] = dict(zip(keys, _f32_values(ws)))
            t[layer] = dict(zip(keys, _unpack_times(last_ts, ts, len(keys))))
        p_keys = _unpack_keys(p_keys)
        purchases = dict(zip(p_keys, _unpack_times(last_ts, p_ts, len(p_keys))))
        return cls._with_seen(w, t, purchases, count, last_ts, _from_little_endian("Q", recent), None, seq)

    @classmethod
    def _from_v2(cls, fields: list) -> "Profile":
        """Columns of float64 weights and times (stores and changelogs written before version 3)."""
        _, layers, p_keys, p_ts, count, last_ts, recent, seq = fields
        w, t = {}, {}
        for layer, (keys, ws, ts) in zip(LAYERS, layers):
            w[layer] = dict(zip(keys, _floats(ws)))
            t[layer] = dict(zip(keys, _floats(ts)))
        return cls._with_seen(w, t, dict(zip(p_keys, _floats(p_ts))), count, last_ts, _from_little_endian("Q", recent), None, seq)

    @classmethod
    def _from_v1(cls, fields: list) -> "Profile":
        """The first encoding (flat [key, w, t, …] lists), still found in stores and changelogs."""
        _, flat_layers, flat_purchases, count, last_ts, recent_ids, seq = fields
        w: dict[str, dict[str, float]] = {}
        t: dict[str, dict[str, float]] = {}
        for layer, flat in zip(LAYERS, flat_layers):
            w[layer] = {flat[i]: flat[i + 1] for i in range(0, len(flat), 3)}
            t[layer] = {flat[i]: flat[i + 2] for i in range(0, len(flat), 3)}
        purchases = {flat_purchases[i]: flat_purchases[i + 1] for i in range(0, len(flat_purchases), 2)}
        return cls._with_seen(w, t, purchases, count, last_ts, array("Q", recent_ids), None, seq)


def encode_profiles(profiles: Sequence[Profile]) -> list[bytes]:
    """`Profile.to_bytes` of each profile, byte for byte, computed together.

    A micro-batch writes hundreds of profiles of a dozen keys each; checking and converting
    their weight and time columns one profile at a time cost two thirds of the encoding (numpy's
    fixed cost per call, or Python's per element).  Here every column of every profile is one
    flat list, converted once, and each profile's bytes are slices of the result.
    """
    weights: list[float] = []
    times: list[float] = []
    bounds = [0]
    for p in profiles:
        w, t = p.w, p.t
        weights += w["item"].values()
        weights += w["domain"].values()
        weights += w["overall"].values()
        times += t["item"].values()
        times += t["domain"].values()
        times += t["overall"].values()
        times += p.purchases.values()
        bounds.append(len(times))
    weight_bytes = _f32_column(weights)
    time_columns = _pack_time_columns([p.last_ts for p in profiles], times, bounds)
    out = []
    start = 0  # into weights: each profile's weights are its times less its purchases
    pack = msgpack.Packer(use_bin_type=True).pack  # one packer for all: building one costs as much as a small pack
    for p, column in zip(profiles, time_columns):
        w, purchases = p.w, p.purchases
        item, domain, overall = w["item"], w["domain"], w["overall"]
        end = start + len(item) + len(domain) + len(overall)
        fields = [
            5,
            [_pack_keys(list(item)), _pack_keys(list(domain)), _pack_keys(list(overall)), _pack_keys(list(purchases))],
            weight_bytes[4 * start:4 * end],
            column,
            p.count,
            p.last_ts,
            _little_endian(p.seen),
            _little_endian(p.seen_t),
            p.seq,
            p.floor,
        ]
        if p.served:
            fields[0] = 6
            fields.append([[s.rec_id, s.ts, s.variant, list(s.items)] for s in p.served])
        out.append(pack(fields))
        start = end
    return out


def _f32_column(values: list[float]) -> bytes:
    """Little-endian float32s (the values are float32 already, so exact)."""
    column = array("f", values)
    if _BIG_ENDIAN:
        column.byteswap()
    return column.tobytes()


def _f32_values(raw: bytes) -> tuple[float, ...]:
    return struct.unpack(f"<{len(raw) // 4}f", raw)


def _f64(values: Collection[float]) -> bytes:
    return struct.pack(f"<{len(values)}d", *values)


def _floats(raw: bytes) -> tuple[float, ...]:
    return struct.unpack(f"<{len(raw) // 8}d", raw)


def _little_endian(values: array) -> bytes:
    """An array's machine values as little-endian bytes (the stored form of seen ids and their times)."""
    if _BIG_ENDIAN:
        values = array(values.typecode, values)
        values.byteswap()
    return values.tobytes()


def _from_little_endian(typecode: str, raw: bytes) -> array:
    """The array of `typecode` that `_little_endian` wrote as `raw`."""
    values = array(typecode)
    values.frombytes(raw)
    if _BIG_ENDIAN:
        values.byteswap()
    return values


def _pack_keys(keys: list[str]) -> list | bytes:
    """The keys as integers when every one is a canonical non-negative decimal integer (else as given):
    msgpack integers below 65,536 (1–3 bytes), packed uint32 up to 2^32 (4 bytes, against
    5 for msgpack and 8 for a 7-digit id as text)."""
    if not keys or not keys[0].isdigit():  # the common rejection, without joining every key
        return keys
    digits = "".join(keys)
    if not (digits.isascii() and digits.isdigit()):  # without parsing any
        return keys
    ints = list(map(int, keys))
    # int() also takes " 7", "+7", "0_7", "07" and other digits: only keys it gives back verbatim
    if list(map(str, ints)) != keys:
        return keys
    hi = max(ints)  # all ≥ 0: digits only
    if 2**16 <= hi < 2**32:
        return struct.pack(f"<{len(ints)}I", *ints)
    return ints if hi < 2**64 else keys  # msgpack's integers end at uint64


def _unpack_keys(keys: list | bytes) -> list[str]:
    if type(keys) is bytes:
        return list(map(str, struct.unpack(f"<{len(keys) // 4}I", keys)))
    return list(map(str, keys)) if keys and type(keys[0]) is int else keys


_MILLIS = b"\x03"  # marks a column of uint32 milliseconds (10^-3 s) before T


def _pack_time_columns(Ts: Sequence[float | None], times: list[float], bounds: Sequence[int]) -> list[bytes]:
    """The time column of each segment `times[bounds[i]:bounds[i + 1]]`, with its profile's last
    time `Ts[i]`: the times as uint32 whole seconds before T, else as uint32 milliseconds before T
    (live events' usual precision), whichever gives every time back exactly; else float64 times.
    The reader tells them apart by length: 4 bytes a key, 1 + 4 a key, or 8.

    Two implementations, the same arithmetic: numpy's fixed cost per call is most of the encoding
    of a small profile, and plain Python's per-element cost loses on long columns (`_SMALL`).
    Tested equal byte for byte."""
    if len(times) < _SMALL:
        return [_time_column_py(T, times[a:b]) for T, a, b in zip(Ts, bounds, bounds[1:])]
    return _time_columns_np(Ts, times, bounds)


_SMALL = 64


def _time_column_py(T: float | None, times: list[float]) -> bytes:
    if T is None or not times:
        return _f64(times)
    first = T - times[0]
    packed = None
    if first.is_integer():
        packed = _seconds_py(T, times)
    elif math.isfinite(first) and _is_millis(T) and _is_millis(times[0]):
        # In whole milliseconds, not seconds: T − d/1000 can miss t by an ulp; (T_ms − d)/1000
        # is one correctly rounded division of an exact integer, i.e. the t that "….123" parsed to.
        packed = _millis_py(T, times)
        if packed is not None:
            packed = _MILLIS + packed
    return _f64(times) if packed is None else packed


def _time_columns_np(Ts: Sequence[float | None], times: list[float], bounds: Sequence[int]) -> list[bytes]:
    """`_time_column_py` of every segment, each rule evaluated for all the times at once."""
    t = np.array(times, dtype=np.float64)
    lens = np.diff(np.asarray(bounds, dtype=np.int64))
    T = np.array([math.nan if x is None else x for x in Ts], dtype=np.float64)  # None: float64 times
    T_each = np.repeat(T, lens)
    with np.errstate(invalid="ignore", over="ignore"):
        back_s = np.trunc(T_each - t)  # whole seconds before T
        ok_s = (T_each - back_s == t) & (back_s >= 0) & (back_s < 2**32)
        t_ms = np.round(t * 1000.0)  # whole milliseconds before T
        back_m = np.round(T_each * 1000.0) - t_ms
        ok_m = (t_ms / 1000.0 == t) & (back_m >= 0) & (back_m < 2**32)
        seconds = np.where(ok_s, back_s, 0).astype("<u4").tobytes()
        millis = np.where(ok_m, back_m, 0).astype("<u4").tobytes()
        # per non-empty segment: the rule its first time picks, and whether all its times pass it
        filled = lens > 0
        starts = np.asarray(bounds[:-1], dtype=np.int64)[filled]
        T_seg, t_first = T[filled], t[starts]
        first = T_seg - t_first
        finite = np.isfinite(first)
        by_seconds = finite & (np.trunc(first) == first)
        by_millis = finite & ~by_seconds & _is_millis_np(T_seg) & _is_millis_np(t_first)
        kind = np.zeros(len(lens), dtype=np.int8)  # 0: float64, 1: seconds, 2: milliseconds
        if len(starts):
            kind[filled] = np.where(
                by_seconds, np.logical_and.reduceat(ok_s, starts),
                np.where(by_millis & np.logical_and.reduceat(ok_m, starts), 2, 0))
    out = []
    for code, a, b in zip(kind.tolist(), bounds, bounds[1:]):
        if code == 1:
            out.append(seconds[4 * a:4 * b])
        elif code == 2:
            out.append(_MILLIS + millis[4 * a:4 * b])
        else:
            out.append(_f64(times[a:b]))
    return out


def _seconds_py(T: float, times: list[float]) -> bytes | None:
    try:
        back = [int(T - x) for x in times]  # int(): ValueError for nan, OverflowError for ±inf
    except (ValueError, OverflowError):
        return None
    for b, x in zip(back, times):
        if T - b != x:
            return None
    return _u32(back)


def _millis_py(T: float, times: list[float]) -> bytes | None:
    try:
        t_ms = [round(x * 1000.0) for x in times]  # half to even, as np.round
    except (ValueError, OverflowError):
        return None
    for m, x in zip(t_ms, times):
        if m / 1000.0 != x:
            return None
    T_ms = round(T * 1000.0)
    return _u32([T_ms - m for m in t_ms])


def _u32(values: list[int]) -> bytes | None:
    """Little-endian uint32s, or None when one is negative or ≥ 2^32."""
    try:
        column = array("I", values)
    except OverflowError:
        return None
    if _BIG_ENDIAN:
        column.byteswap()
    return column.tobytes()


_BIG_ENDIAN = sys.byteorder == "big"
assert array("f").itemsize == 4 and array("I").itemsize == 4 and array("Q").itemsize == 8, \
    "array('f'), array('I') and array('Q') must be 32, 32 and 64 bits here"


def _is_millis(x: float) -> bool:
    """Whether x is the float a time in whole milliseconds (below 2^53 ms) parses to."""
    return abs(x) < 2**43 and round(x * 1000.0) / 1000.0 == x


def _is_millis_np(x: np.ndarray) -> np.ndarray:
    return (np.abs(x) < 2**43) & (np.round(x * 1000.0) / 1000.0 == x)


def _unpack_times(T: float | None, raw: bytes, n: int) -> list[float] | tuple[float, ...]:
    if n and len(raw) == 4 * n:
        return (T - np.frombuffer(raw, "<u4")).tolist()
    if n and len(raw) == 4 * n + 1 and raw[:1] == _MILLIS:
        return ((round(T * 1000.0) - np.frombuffer(raw, "<u4", offset=1).astype(np.float64)) / 1000.0).tolist()
    return _floats(raw)


def _add(ws: dict[str, float], ts: dict[str, float], key: str, beta: float, t_new: float, half_life: float, cap: int,
         to_end: bool = False) -> None:
    """One event of weight beta at t_new on `key` of a layer (its weights and times); keeps the cap.
    `to_end` moves a key touched at its latest time to the end of the dicts, so that their order
    is the order the keys were last touched in (`Profile.recent_items`).
    A function of the layer's dicts rather than a method: it runs three times per event."""
    t = ts.get(key)
    if t is None:
        ws[key] = single(beta)
        ts[key] = t_new
        if len(ws) > cap:
            _prune(ws, ts, cap, half_life, KEEP_RECENT if to_end and cap > KEEP_RECENT else 0)
    elif t_new >= t:
        w = single(ws[key] * 2.0 ** (-(t_new - t) / half_life) + beta)
        if to_end:
            del ws[key], ts[key]
        ws[key] = w
        ts[key] = t_new
    else:
        ws[key] = single(ws[key] + beta * 2.0 ** (-(t - t_new) / half_life))


def _prune(ws: dict[str, float], ts: dict[str, float], cap: int, half_life: float, keep_last: int = 0) -> None:
    """Drop the smallest weights down to `cap` keys, never one of the last `keep_last` in the dicts' order."""
    # rank = log2(w) + t/H orders keys by decayed weight at any common time;
    # ties drop the larger key so that pruning is deterministic.
    ranked = heapq.nsmallest(
        len(ws) - cap,
        islice(ws, max(0, len(ws) - keep_last)),
        key=lambda k: (_rank(ws[k], ts[k], half_life), _neg_key(k)),
    )
    for key in ranked:
        del ws[key], ts[key]


def _rank(w: float, t: float, half_life: float) -> float:
    return (math.log2(w) if w > 0 else -math.inf) + t / half_life


class _neg_key(str):
    """Reverses string order inside a sort key (ties drop the larger key first)."""

    def __lt__(self, other: str) -> bool:  # type: ignore[override]
        return str.__gt__(self, other)


def build_profiles(
    events: Iterable[Event], catalog, params: ProfileParams
) -> dict[str, Profile]:
    """The offline reference: every user's profile from a sequence of events."""
    profiles: dict[str, Profile] = {}
    for event in events:
        profile = profiles.get(event.user_id)
        if profile is None:
            profile = profiles[event.user_id] = Profile()
        domain, overall = catalog.layers_for(event.item_id, event.category_id)
        profile.learn(event, domain, overall, params)
    return profiles
