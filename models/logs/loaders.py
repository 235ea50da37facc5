"""Public behaviour logs → events and catalog records (docs/design.md §2).

`open_log(path, fmt)` checks that the log is there and looks like the format
(the first row is read at once, so a wrong path or format fails before any
event is produced) and returns a `LogSource`:

- `LogSource.events()` yields events as plain dicts in the event JSON shape
  (`event_id`, `user_id`, `item_id`, `type`, `ts`, optional `category_id`),
  ids as strings, `ts` in epoch seconds.  They are *not* validated here: a
  malformed row still becomes a dict (a missing field is left out, a `ts`
  that is not a number stays the raw string, an unknown behaviour stays the
  raw word) so that `parse_event` rejects it with a reason and the caller can
  dead-letter it.  For `ndjson`, a line that is not a JSON object is yielded
  as the raw `str` line (without its newline) — callers must accept
  `dict | str` and hand either to `parse_event`.
- `LogSource.catalog()` yields catalog records: `{"item_id", "category_id"}`
  (REES46 adds `price`/`brand`) and `{"category_id", "parent_id"}` (None for
  a root), categories first, parents before children.  From `catalog_path`
  (NDJSON) when given, else derived from the log.  A log with a category
  tree (REES46, RetailRocket, synthetic) gives a record to *every* category
  it knows, roots included, so each is in the tree; a category whose place
  is unknown (the numeric `category_id` of a REES46 product without a
  `category_code`; a RetailRocket category missing from `category_tree.csv`)
  is a root of its own.  A log without a tree (Taobao, MovieLens, NDJSON)
  gives item records only, so its categories fall under the overall key `*`.
- `LogSource.skipped` counts what the last pass dropped on purpose
  (`remove_from_cart` rows, malformed catalog-file lines).

Order: events come in file order, except MovieLens and RetailRocket, whose
files are not time-ordered: they are sorted by `ts` (stable; a row whose
time does not parse keeps its place after the row before it).  Note that
the Taobao user slices are in file order, i.e. grouped by user, not by time.  `limit` cuts the stream after
that many events (rows skipped by design, like REES46 `remove_from_cart`,
do not count); a catalog derived from the log covers the same rows, except
where the catalog comes from its own files (MovieLens `u.item`,
RetailRocket `item_properties*` / `category_tree`), which are read whole.

`event_id` is `"{fmt}:{file}:{line}"` (file name without `.gz`/`.csv`, line
number 1-based in the file, header included), so it is unique per row and
stable across runs; NDJSON events keep their own.  Files ending in `.gz` (or
starting with the gzip magic) are decompressed on the fly.

Every failure the caller can do something about (missing file, unknown
format, a file that is not of the format, an unreadable gzip) is a
`LoaderError` with a message meant for a person.
"""
from __future__ import annotations

import array
import calendar
import csv
import gzip
import io
import math
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import orjson

FORMATS: tuple[str, ...] = ("retailrocket", "taobao", "rees46", "movielens", "ndjson", "synthetic")

TAOBAO_TYPES = {"pv": "view", "fav": "fav", "cart": "cart", "buy": "purchase"}
REES46_TYPES = {"view": "view", "cart": "cart", "purchase": "purchase"}
REES46_SKIPPED = frozenset({"remove_from_cart"})
REES46_HEADER = ["event_time", "event_type", "product_id", "category_id", "category_code",
                 "brand", "price", "user_id", "user_session"]
RETAILROCKET_TYPES = {"view": "view", "addtocart": "cart", "transaction": "purchase"}
RETAILROCKET_HEADER = ["timestamp", "visitorid", "event", "itemid", "transactionid"]
MOVIELENS_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
MOVIELENS_PURCHASE_RATING = 4

_GZIP_MAGIC = b"\x1f\x8b"
_READ_ERRORS = (OSError, EOFError, zlib.error, UnicodeDecodeError)


class LoaderError(ValueError):
    """A log that cannot be read as asked; the message says why, for a person."""


# --------------------------------------------------------------------------- files


def _open_binary(path: Path) -> io.BufferedIOBase:
    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise LoaderError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise LoaderError(f"{path} is a directory, expected a file") from None
    except OSError as exc:
        raise LoaderError(f"cannot open {path}: {exc.strerror or exc}") from None
    head = raw.peek(2)[:2] if hasattr(raw, "peek") else b""
    if head == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if path.name.endswith(".gz") and head:
        raw.close()
        raise LoaderError(f"{path} ends in .gz but is not a gzip file")
    return raw  # type: ignore[return-value]


def _open_text(path: Path, encoding: str = "utf-8-sig") -> io.TextIOWrapper:
    return io.TextIOWrapper(_open_binary(path), encoding=encoding, errors="replace", newline="")


def _file_tag(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".csv", ".ndjson", ".jsonl"):
        if name.endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
    return name


def _find(directory: Path, name: str) -> Path | None:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _read_failure(path: Path, exc: BaseException) -> LoaderError:
    if isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile)):
        return LoaderError(f"{path} is a damaged or truncated gzip file ({exc})")
    return LoaderError(f"error while reading {path}: {exc}")


def _csv_rows(path: Path, delimiter: str = ",", encoding: str = "utf-8-sig") -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of every non-blank row; read errors become LoaderError.

    A row the csv module refuses (e.g. a field over its size limit) comes as
    an empty field list, so that it turns into a malformed event, not a crash.
    """
    try:
        with _open_text(path, encoding) as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error:
                    yield reader.line_num, []
                    continue
                if row and (len(row) > 1 or row[0].strip()):
                    yield reader.line_num, row
    except LoaderError:
        raise
    except _READ_ERRORS as exc:
        raise _read_failure(path, exc) from None


def _text_lines(path: Path, encoding: str = "utf-8-sig") -> Iterator[tuple[int, str]]:
    """(line number, line without its newline) of every non-blank line."""
    try:
        with _open_text(path, encoding) as fh:
            for n, line in enumerate(fh, 1):
                text = line.rstrip("\r\n")
                if text.strip():
                    yield n, text
    except LoaderError:
        raise
    except _READ_ERRORS as exc:
        raise _read_failure(path, exc) from None


def _first_row(path: Path, delimiter: str = ",", encoding: str = "utf-8-sig") -> list[str] | None:
    for _, row in _csv_rows(path, delimiter, encoding):
        if row and row[0].startswith("\ufeff"):
            row[0] = row[0][1:]
        return row
    return None


def _number(text: str) -> int | float | str:
    """An int or finite-or-not float; the raw text when it is not a number (parse_event rejects it)."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


def _event(event_id: str, user: str | None, item: str | None, etype: str | None, ts: Any,
           category: str | None = None) -> dict:
    out: dict[str, Any] = {"event_id": event_id}
    if user is not None:
        out["user_id"] = user
    if item is not None:
        out["item_id"] = item
    if etype is not None:
        out["type"] = etype
    if ts is not None:
        out["ts"] = ts
    if category:
        out["category_id"] = category
    return out


def _field(row: list[str], i: int) -> str | None:
    return row[i] if i < len(row) else None


def _ndjson_objects(path: Path) -> Iterator[tuple[int, dict | str]]:
    """(line number, object or raw line) of every non-blank line."""
    try:
        with _open_binary(path) as fh:
            for n, line in enumerate(fh, 1):
                stripped = line.strip()
                if n == 1 and stripped.startswith(b"\xef\xbb\xbf"):
                    stripped = line = stripped[3:]
                if not stripped:
                    continue
                try:
                    obj = orjson.loads(stripped)
                except orjson.JSONDecodeError:
                    obj = None
                if isinstance(obj, dict):
                    yield n, obj
                else:
                    yield n, line.rstrip(b"\r\n").decode("utf-8", errors="replace")
    except LoaderError:
        raise
    except _READ_ERRORS as exc:
        raise _read_failure(path, exc) from None


# --------------------------------------------------------------------------- tree helpers


def _tree_records(parents: dict[str, str | None]) -> list[dict]:
    """Category records, closed (every parent has a record) and acyclic, parents first."""
    parents = dict(parents)
    for parent in list(parents.values()):
        if parent is not None and parent not in parents:
            parents[parent] = None
    # 1. cut cycles: walk up from every node; meeting a node of the current walk closes a cycle,
    #    which is cut there (that node becomes a root)
    done: set[str] = set()
    for start in parents:
        walk: set[str] = set()
        node: str | None = start
        while node is not None and node not in done:
            if node in walk:
                parents[node] = None
                break
            walk.add(node)
            node = parents[node]
        done |= walk
    # 2. depth of every node, now that each walk up ends at a root
    depth: dict[str, int] = {}
    for start in parents:
        path: list[str] = []
        node = start
        while node is not None and node not in depth:
            path.append(node)
            node = parents[node]
        base = depth[node] if node is not None else -1
        for n in reversed(path):
            base = depth[n] = base + 1
    order = sorted(parents, key=lambda c: depth[c])  # stable: first-seen order within a depth
    return [{"category_id": c, "parent_id": parents[c]} for c in order]


def _dotted_tree(code: str, parents: dict[str, str | None]) -> None:
    parts = code.split(".")
    parent: str | None = None
    for i in range(1, len(parts) + 1):
        node = ".".join(parts[:i])
        if node not in parents:
            parents[node] = parent
        parent = node


# --------------------------------------------------------------------------- time-sorted logs


_TS_BOUND = 2**62


class _Columns:
    """A numeric log kept in numpy columns so that millions of rows can be time-sorted cheaply.

    A row whose ids are not canonical integers (e.g. "007"), or whose type or
    time does not parse, is kept aside as a ready-made event dict (valid or
    not: `parse_event` decides).
    """

    def __init__(self) -> None:
        self.user = array.array("q")
        self.item = array.array("q")
        self.kind = array.array("b")
        self.ts = array.array("q")
        self.line = array.array("q")
        self.odd: dict[int, dict] = {}
        self._last_ts = -_TS_BOUND + 1

    def add(self, line: int, user: str | None, item: str | None, kind: int, ts_text: str | None) -> bool:
        """Keep a well-formed row; False (nothing kept) when it is not one — then call `add_odd`."""
        # ids must survive str(int(id)) unchanged: ASCII digits, no leading zero, fit in int64
        if (kind < 0 or not user or not item or not ts_text
                or not (user.isascii() and user.isdigit() and (user[0] != "0" or len(user) == 1) and len(user) < 19)
                or not (item.isascii() and item.isdigit() and (item[0] != "0" or len(item) == 1) and len(item) < 19)):
            return False
        try:
            ts = int(ts_text)
        except ValueError:
            return False
        if not -_TS_BOUND < ts < _TS_BOUND:
            return False
        self.user.append(int(user))
        self.item.append(int(item))
        self.kind.append(kind)
        self.ts.append(ts)
        self.line.append(line)
        self._last_ts = ts
        return True

    def add_odd(self, line: int, event: dict, ts_text: str | None) -> None:
        """Keep a row that is not plain numbers as it will be yielded.

        It is sorted by its own time when that is an integer, else with the
        time of the row before it.
        """
        try:
            ts = int(ts_text) if ts_text is not None else self._last_ts
        except ValueError:
            ts = self._last_ts
        if not -_TS_BOUND < ts < _TS_BOUND:
            ts = self._last_ts
        self.odd[len(self.kind)] = event
        self.user.append(0)
        self.item.append(0)
        self.kind.append(-1)
        self.ts.append(ts)
        self.line.append(line)

    def sorted_rows(self, limit: int | None, block: int = 65_536) -> Iterator[tuple[int, int, int, int, int, int]]:
        """(index, user, item, kind, ts, line) in time order; kind -1 = look up `odd[index]`.

        Converted to Python ints a block at a time, to keep memory near the
        size of the numpy columns.
        """
        if not len(self.ts):
            return
        ts = np.frombuffer(self.ts, dtype=np.int64)
        order = np.argsort(ts, kind="stable")
        if limit is not None:
            order = order[:limit]
        cols = [np.frombuffer(c, dtype=np.int64 if c.typecode == "q" else np.int8)
                for c in (self.user, self.item, self.kind, self.ts, self.line)]
        for start in range(0, len(order), block):
            part = order[start:start + block]
            yield from zip(part.tolist(), *(c[part].tolist() for c in cols))


# --------------------------------------------------------------------------- the source


@dataclass(frozen=True)
class LogSource:
    """One log, ready to be read (as many times as wanted) as events and catalog records."""

    fmt: str
    path: Path | None
    catalog_path: Path | None = None
    limit: int | None = None
    seed: int = 0
    files: dict[str, Path] = field(default_factory=dict, compare=False)
    # what the last events()/catalog() pass dropped on purpose, e.g. {"remove_from_cart": 3}
    skipped: Counter = field(default_factory=Counter, compare=False)
    synthetic_config: Any = field(default=None, compare=False)

    @property
    def name(self) -> str:
        if self.fmt == "synthetic":
            return f"synthetic:{self.seed}"
        main = self.files.get("events") or self.path
        return f"{self.fmt}:{_file_tag(main)}" if main else self.fmt

    # ---------------------------------------------------------------- events

    def events(self) -> Iterator[dict | str]:
        """The log's events in order (see the module doc), at most `limit`.

        Items are dicts, except for `ndjson` lines that are not a JSON object,
        which come as the raw `str` line so the caller can dead-letter them.
        """
        self.skipped.clear()
        if self.limit == 0:
            return iter(())
        reader = getattr(self, f"_events_{self.fmt}")
        it = reader()
        if self.limit is not None and self.fmt not in ("movielens", "retailrocket", "synthetic"):
            return _take(it, self.limit)
        return it

    def _events_taobao(self) -> Iterator[dict]:
        # Taobao rows are never quoted: a plain split is twice as fast as the csv module
        path = self.files["events"]
        prefix = f"taobao:{_file_tag(path)}:"
        types = TAOBAO_TYPES
        for line, text in _text_lines(path):
            row = text.split(",")
            if len(row) == 5:
                user, item, cat, behaviour, ts = row
                try:
                    t: int | float | str = int(ts)
                except ValueError:
                    t = _number(ts)
                out = {"event_id": prefix + str(line), "user_id": user, "item_id": item,
                       "type": types.get(behaviour, behaviour), "ts": t}
                if cat:
                    out["category_id"] = cat
                yield out
            else:
                behaviour = _field(row, 3)
                ts = _field(row, 4)
                yield _event(prefix + str(line), _field(row, 0), _field(row, 1),
                             types.get(behaviour, behaviour) if behaviour is not None else None,
                             _number(ts) if ts is not None else None, _field(row, 2))

    def _events_rees46(self) -> Iterator[dict]:
        path = self.files["events"]
        prefix = f"rees46:{_file_tag(path)}:"
        clock = _Rees46Clock()
        rows = _csv_rows(path)
        next(rows, None)  # header, checked in open_log
        for line, row in rows:
            etype = _field(row, 1)
            if etype in REES46_SKIPPED:
                self.skipped[etype] += 1
                continue
            time_text = _field(row, 0)
            yield _event(
                prefix + str(line), _field(row, 7), _field(row, 2),
                REES46_TYPES.get(etype, etype) if etype is not None else None,
                clock(time_text) if time_text is not None else None,
                _rees46_category(row),
            )

    def _events_movielens(self) -> Iterator[dict]:
        path = self.files["events"]
        prefix = f"movielens:{_file_tag(path)}:"
        genres = _movielens_genres(self.files.get("items"), self.files.get("genres"))
        cols = _Columns()
        for line, text in _text_lines(path, encoding="latin-1"):
            row = text.split("\t") if "\t" in text else text.split()  # some copies use spaces
            user, item, rating, ts = (row + [None] * 4)[:4]  # type: ignore[list-item]
            kind = -1
            if len(row) == 4 and rating is not None:
                if rating in ("4", "5"):
                    kind = 1
                elif rating in ("1", "2", "3"):
                    kind = 0
                elif _is_int(rating):
                    kind = 1 if int(rating) >= MOVIELENS_PURCHASE_RATING else 0
            if not cols.add(line, user, item, kind, ts):
                etype = None
                if rating is not None:
                    r = _number(rating)
                    etype = (("purchase" if r >= MOVIELENS_PURCHASE_RATING else "view")
                             if isinstance(r, (int, float)) and math.isfinite(r) else f"rating:{rating}")
                cols.add_odd(line, _event(prefix + str(line), user, item, etype,
                                          _number(ts) if ts is not None else None, genres.get(item or "")), ts)
        names = ("view", "purchase")
        for index, user_n, item_n, kind, ts, line in cols.sorted_rows(self.limit):
            if kind < 0:
                yield cols.odd[index]
                continue
            item_id = str(item_n)
            out = {"event_id": prefix + str(line), "user_id": str(user_n), "item_id": item_id,
                   "type": names[kind], "ts": ts}
            category = genres.get(item_id)
            if category is not None:
                out["category_id"] = category
            yield out

    def _events_retailrocket(self) -> Iterator[dict]:
        path = self.files["events"]
        prefix = f"retailrocket:{_file_tag(path)}:"
        kinds = {"view": 0, "addtocart": 1, "transaction": 2}
        names = ("view", "cart", "purchase")
        cols = _Columns()
        header = True
        for line, text in _text_lines(path):  # RetailRocket rows are never quoted
            if header:  # checked in open_log
                header = False
                continue
            row = text.split(",")
            ts, user, behaviour, item = (row + [None] * 4)[:4]  # type: ignore[list-item]
            kind = kinds.get(behaviour, -1) if len(row) == 5 else -1
            if not cols.add(line, user, item, kind, ts):
                t = _number(ts) if ts is not None else None
                cols.add_odd(line, _event(
                    prefix + str(line), user, item,
                    RETAILROCKET_TYPES.get(behaviour, behaviour) if behaviour is not None else None,
                    t / 1000.0 if isinstance(t, (int, float)) else t), ts)
        for index, user_n, item_n, kind, ts, line in cols.sorted_rows(self.limit):
            if kind < 0:
                yield cols.odd[index]
            else:
                yield {"event_id": prefix + str(line), "user_id": str(user_n), "item_id": str(item_n),
                       "type": names[kind], "ts": ts / 1000.0}

    def _events_ndjson(self) -> Iterator[dict | str]:
        for _, obj in _ndjson_objects(self.files["events"]):
            yield obj

    def _events_synthetic(self) -> Iterator[dict]:
        from strata.models.logs.synthetic import generate

        _, events = generate(self.synthetic_config)
        return _take(events, self.limit) if self.limit is not None else events

    # ---------------------------------------------------------------- catalog

    def catalog(self) -> Iterator[dict]:
        """Catalog records: categories (parents first), then items.  See the module doc."""
        if self.catalog_path is not None:
            return self._catalog_file(self.catalog_path)
        return getattr(self, f"_catalog_{self.fmt}")()

    def _catalog_file(self, path: Path) -> Iterator[dict]:
        self.skipped.pop("catalog_malformed", None)
        for _, obj in _ndjson_objects(path):
            if isinstance(obj, dict):
                yield obj
            else:
                self.skipped["catalog_malformed"] += 1

    def _items_from_events(self) -> Iterator[dict]:
        seen: set[str] = set()
        for event in self.events():
            if not isinstance(event, dict):
                continue
            item, category = _id_text(event.get("item_id")), _id_text(event.get("category_id"))
            if item and category and item not in seen:
                seen.add(item)
                yield {"item_id": item, "category_id": category}

    def _catalog_taobao(self) -> Iterator[dict]:
        return self._items_from_events()

    def _catalog_ndjson(self) -> Iterator[dict]:
        return self._items_from_events()

    def _catalog_rees46(self) -> Iterator[dict]:
        path = self.files["events"]
        parents: dict[str, str | None] = {}
        items: dict[str, dict] = {}
        rows = _csv_rows(path)
        next(rows, None)
        taken = 0
        for _, row in rows:
            if self.limit is not None and taken >= self.limit:
                break
            if _field(row, 1) in REES46_SKIPPED:
                continue
            taken += 1
            if len(row) < 9:
                continue
            code = row[4].strip()
            category = _rees46_category(row)
            if code:
                _dotted_tree(code, parents)
            elif category and category not in parents:
                parents[category] = None  # a category with no code: a root of its own
            item = row[2]
            if not item or not category:
                continue
            record: dict[str, Any] = {"item_id": item, "category_id": category}
            price = _number(row[6]) if row[6] else None
            if isinstance(price, (int, float)) and math.isfinite(price):
                record["price"] = float(price)
            if row[5]:
                record["brand"] = row[5]
            items.pop(item, None)  # the last row wins; keep the item at its last position
            items[item] = record
        yield from _tree_records(parents)
        yield from items.values()

    def _catalog_movielens(self) -> Iterator[dict]:
        genres = _movielens_genres(self.files.get("items"), self.files.get("genres"))
        for item, category in genres.items():
            yield {"item_id": item, "category_id": category}

    def _catalog_retailrocket(self) -> Iterator[dict]:
        parents: dict[str, str | None] = {}
        tree = self.files.get("tree")
        if tree is not None:
            rows = _csv_rows(tree)
            next(rows, None)
            for _, row in rows:
                category = row[0].strip() if row else ""
                if not category:
                    continue
                parent = row[1].strip() if len(row) > 1 and row[1].strip() else None
                parents[category] = parent if parent != category else None
        latest: dict[str, tuple[int, str]] = {}
        for prop_path in self.files_list("properties"):
            for ts, item, category in _retailrocket_categories(prop_path):
                old = latest.get(item)
                if old is None or ts >= old[0]:
                    latest[item] = (ts, category)
        for _, category in latest.values():
            if category not in parents:
                parents[category] = None  # known to items but not to category_tree.csv: its own root
        yield from _tree_records(parents)
        for item, (_, category) in latest.items():
            yield {"item_id": item, "category_id": category}

    def _catalog_synthetic(self) -> Iterator[dict]:
        from strata.models.logs.synthetic import generate

        records, _ = generate(self.synthetic_config)
        return iter(records)

    def files_list(self, kind: str) -> list[Path]:
        return sorted(p for k, p in self.files.items() if k == kind or k.startswith(kind + ":"))


def _id_text(value: Any) -> str | None:
    """An id as parse_event would take it (numbers become strings); None when it is not one."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _take(it: Iterator, n: int) -> Iterator:
    if n <= 0:
        return
    for i, x in enumerate(it, 1):
        yield x
        if i >= n:
            return


# --------------------------------------------------------------------------- format details


def _rees46_category(row: list[str]) -> str | None:
    code = row[4].strip() if len(row) > 4 else ""
    if code:
        return code
    numeric = row[3].strip() if len(row) > 3 else ""
    return numeric or None


class _Rees46Clock:
    """'2019-10-01 00:00:00 UTC' → epoch seconds, fast (the date part is cached)."""

    def __init__(self) -> None:
        self._days: dict[str, int] = {}

    def __call__(self, text: str) -> int | float | str:
        if len(text) == 23 and text.endswith(" UTC") and text[10] == " ":
            day = self._days.get(text[:10])
            if day is None:
                try:
                    day = calendar.timegm(datetime.strptime(text[:10], "%Y-%m-%d").timetuple())
                except ValueError:
                    return text
                self._days[text[:10]] = day
            try:
                h, m, s = int(text[11:13]), int(text[14:16]), int(text[17:19])
            except ValueError:
                return text
            if text[13] == ":" and text[16] == ":" and h < 24 and m < 60 and s < 61:
                return day + h * 3600 + m * 60 + s
            return text
        try:  # other spellings: ISO 8601 with an offset, or naive = UTC
            parsed = datetime.fromisoformat(text.replace(" UTC", "+00:00").replace("Z", "+00:00"))
        except ValueError:
            return text
        if parsed.tzinfo is None:
            return calendar.timegm(parsed.timetuple()) + parsed.microsecond / 1e6
        return parsed.timestamp()


def _movielens_genres(items: Path | None, genre_file: Path | None) -> dict[str, str]:
    """item id → its first genre (u.item is Latin-1, `|`-separated, 19 flags at the end)."""
    if items is None:
        return {}
    names = list(MOVIELENS_GENRES)
    if genre_file is not None:
        parsed: dict[int, str] = {}
        for _, row in _csv_rows(genre_file, delimiter="|", encoding="latin-1"):
            if len(row) >= 2 and row[0] and _is_int(row[1]):
                parsed[int(row[1])] = row[0]
        if parsed and sorted(parsed) == list(range(len(parsed))):
            names = [parsed[i] for i in range(len(parsed))]
    out: dict[str, str] = {}
    n = len(names)
    try:
        with _open_text(items, "latin-1") as fh:
            for line in fh:
                fields = line.rstrip("\r\n").split("|")
                if len(fields) < 5 + n or not fields[0]:
                    continue
                flags = fields[-n:]
                for name, flag in zip(names, flags):
                    if flag.strip() == "1":
                        out[fields[0]] = name
                        break
    except LoaderError:
        raise
    except _READ_ERRORS as exc:
        raise _read_failure(items, exc) from None
    return out


def _retailrocket_categories(path: Path) -> Iterator[tuple[int, str, str]]:
    """(timestamp, item, category) of the `categoryid` rows of an item_properties file.

    The real files hold ~20M property rows; a substring test skips the others
    without splitting them.
    """
    try:
        with _open_text(path) as fh:
            for line in fh:
                if ",categoryid," not in line:
                    continue
                parts = line.rstrip("\r\n").split(",")
                if len(parts) != 4 or parts[2] != "categoryid":
                    continue
                ts, item, _, value = parts
                value = value.strip()
                if item and value and _is_int(ts):
                    yield int(ts), item, value
    except LoaderError:
        raise
    except _READ_ERRORS as exc:
        raise _read_failure(path, exc) from None


# --------------------------------------------------------------------------- opening


_EXPECT = {
    "taobao": "5 comma-separated fields without a header: user_id,item_id,category_id,behavior_type,timestamp",
    "rees46": "a CSV with the header " + ",".join(REES46_HEADER),
    "movielens": "u.data: tab-separated user_id, item_id, rating, timestamp",
    "retailrocket": "events.csv with the header " + ",".join(RETAILROCKET_HEADER),
    "ndjson": "one JSON event object per line",
}


def _not_format(path: Path, fmt: str, got: str) -> LoaderError:
    return LoaderError(f"{path} does not look like a {fmt} log: expected {_EXPECT[fmt]}; "
                       f"the first row is {got[:120]!r}")


def _check_csv_first_row(path: Path, fmt: str, check: Callable[[list[str]], bool], delimiter: str = ",",
                         encoding: str = "utf-8-sig") -> None:
    row = _first_row(path, delimiter, encoding)
    if row is None:
        raise LoaderError(f"{path} is empty: no {fmt} events in it")
    if not check(row):
        raise _not_format(path, fmt, delimiter.join(row))


def _taobao_row_ok(row: list[str]) -> bool:
    return len(row) == 5 and row[3] in TAOBAO_TYPES and _is_int(row[4])


def _movielens_row_ok(row: list[str]) -> bool:
    if len(row) == 1:
        row = row[0].split()
    return len(row) == 4 and all(_is_int(x) for x in row)


def _resolve_dir_or_file(path: Path, fmt: str, main: str) -> tuple[Path, Path]:
    """(directory, main file) for formats whose path may be the directory or its main file."""
    if path.is_dir():
        found = _find(path, main)
        if found is None:
            raise LoaderError(f"no {main} (or {main}.gz) in the directory {path} given for format {fmt!r}")
        return path, found
    if path.is_file():
        return path.parent, path
    raise LoaderError(f"{fmt} log not found: {path} (give the directory holding {main} or the file itself)")


def _parse_synthetic_spec(spec: str, seed: int):
    from strata.models.logs.synthetic import SyntheticConfig

    fields = SyntheticConfig.__dataclass_fields__
    values: dict[str, Any] = {"seed": seed}
    for part in spec.replace(";", ",").replace(" ", ",").split(","):
        part = part.strip()
        if not part or part.lower() == "synthetic":
            continue
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in fields:
            raise LoaderError(f"bad synthetic spec {part!r}: expected key=value with key one of "
                              f"{', '.join(fields)}")
        kind = type(getattr(SyntheticConfig(), key))
        try:
            values[key] = kind(float(value)) if kind is int else kind(value)
        except ValueError:
            raise LoaderError(f"bad synthetic spec {part!r}: {value!r} is not a {kind.__name__}") from None
    try:
        return SyntheticConfig(**values)
    except ValueError as exc:
        raise LoaderError(f"bad synthetic spec {spec!r}: {exc}") from None


def open_log(path: str | Path | None, fmt: str, *, catalog_path: str | Path | None = None,
             limit: int | None = None, seed: int = 0) -> LogSource:
    """Check a log and return a `LogSource` over it; raises `LoaderError` (see the module doc).

    `path` per format: taobao / rees46 / ndjson — the file; movielens — the
    directory holding `u.data` and `u.item` (or `u.data` itself); retailrocket
    — the directory holding `events.csv`, `item_properties_part*.csv`,
    `category_tree.csv` (or `events.csv` itself); synthetic — ignored unless
    it is a spec string such as ``"users=1000,items=5000,events=100000"``
    (fields of `SyntheticConfig`; `seed` is taken from the argument unless the
    spec names one).
    """
    fmt_key = (fmt or "").strip().lower()
    if fmt_key not in FORMATS:
        raise LoaderError(f"unknown log format {fmt!r}; known formats: {', '.join(FORMATS)}")
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise LoaderError(f"limit must be a non-negative integer, got {limit!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise LoaderError(f"seed must be an integer, got {seed!r}")
    catalog = None
    if catalog_path is not None and str(catalog_path) != "":
        catalog = Path(catalog_path).expanduser()
        if not catalog.is_file():
            raise LoaderError(f"catalog file not found: {catalog}")
        _open_binary(catalog).close()

    if fmt_key == "synthetic":
        spec = "" if path is None else str(path)
        if spec and (Path(spec).exists() or "=" not in spec):
            spec = ""  # a path (or a placeholder) means: the default configuration
        config = _parse_synthetic_spec(spec, seed)
        return LogSource("synthetic", None, catalog, limit, config.seed, {}, synthetic_config=config)

    if path is None or str(path) == "":
        raise LoaderError(f"format {fmt_key!r} needs the path of the log")
    path = Path(path).expanduser()
    files: dict[str, Path] = {}

    if fmt_key == "movielens":
        directory, data = _resolve_dir_or_file(path, fmt_key, "u.data")
        files["events"] = data
        for candidate in (directory, directory.parent):
            items = _find(candidate, "u.item")
            if items is not None:
                files["items"] = items
                genres = _find(candidate, "u.genre")
                if genres is not None:
                    files["genres"] = genres
                break
        _check_csv_first_row(data, fmt_key, _movielens_row_ok, delimiter="\t", encoding="latin-1")
    elif fmt_key == "retailrocket":
        directory, events = _resolve_dir_or_file(path, fmt_key, "events.csv")
        files["events"] = events
        props = sorted(p for p in directory.iterdir()
                       if p.is_file() and p.name.startswith("item_properties")
                       and p.name.endswith((".csv", ".csv.gz")))
        for i, p in enumerate(props):
            files[f"properties:{i}"] = p
        tree = _find(directory, "category_tree.csv")
        if tree is not None:
            files["tree"] = tree
        _check_csv_first_row(events, fmt_key, lambda row: [c.strip().lower() for c in row] == RETAILROCKET_HEADER)
    else:
        if path.is_dir():
            raise LoaderError(f"{path} is a directory; format {fmt_key!r} reads one file")
        if not path.is_file():
            raise LoaderError(f"{fmt_key} log not found: {path}")
        files["events"] = path
        if fmt_key == "taobao":
            _check_csv_first_row(path, fmt_key, _taobao_row_ok)
        elif fmt_key == "rees46":
            _check_csv_first_row(path, fmt_key, lambda row: [c.strip().lower() for c in row] == REES46_HEADER)
        elif fmt_key == "ndjson":
            _check_ndjson(path)
    return LogSource(fmt_key, path, catalog, limit, seed, files)


def _check_ndjson(path: Path, lines: int = 10) -> None:
    """Refuse a file none of whose first few non-blank lines is a JSON object (an empty file is fine)."""
    first = None
    for i, (_, obj) in enumerate(_ndjson_objects(path)):
        if isinstance(obj, dict):
            return
        first = first if first is not None else obj
        if i + 1 >= lines:
            break
    if first is not None:
        raise _not_format(path, "ndjson", first)


def load_events(path: str | Path | None, fmt: str, **kwargs: Any) -> Iterable[dict | str]:
    """Shorthand: `open_log(path, fmt, **kwargs).events()`."""
    return open_log(path, fmt, **kwargs).events()
