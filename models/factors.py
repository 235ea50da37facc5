"""A published version of the item factors, its disk form and its wire form.

`FactorModel` is one immutable version: item ids, Y (float32, read-only) and
the parameters it was trained with.  Its `checksum` (sha256) covers the
version, the parameters, the ids and Y's bytes.

Wire form (pure bytes; the Kafka side only moves (key, value) pairs):

* chunks ``v{version}/chunk/{i}``: ``b"SFC1"``, a u32 header length, a msgpack
  header ``[1, version, index, row_offset, rows, items, dims, chunks, ids]``
  and then ``rows × dims`` little-endian float32;
* the manifest ``v{version}/manifest``, sent last: JSON with format, version,
  items, dims, chunks, dtype, params and the sha256 checksum; and, when the
  trainer has a signing key, ``signature``: HMAC-SHA256 under that key of the
  canonical JSON of the other fields.  The checksum covers the data, so a valid
  signature vouches for the whole version; a worker given the key
  (`FactorLimits.signing_key`) refuses a version without one.

Every chunk repeats the totals (items, dims, chunks) so that a damaged
manifest cannot leave a version waiting forever, and the key is checked
against the content.  `FactorAssembler` takes the pairs in any order and
returns a model only once a version is complete and its checksum holds.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import math
import os
import re
import struct
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Mapping

import msgpack
import numpy as np

from strata.models.als import fold_in_weights, gram

FORMAT = 1
DTYPE = np.dtype("<f4")
MAX_MESSAGE_BYTES = 900_000  # below Kafka's default 1 MiB message limit, with room for headers
_CHUNK_MAGIC = b"SFC1"
_PREFIX = struct.Struct("<4sI")
_KEY = re.compile(rb"v(0|[1-9][0-9]{0,18})/(?:chunk/(0|[1-9][0-9]{0,9})|manifest)")
_MANIFEST_FIELDS = {"format", "version", "items", "dims", "chunks", "dtype", "params", "sha256"}
_SIGNATURE = "signature"


class CorruptFactors(ValueError):
    """Factor data that is damaged, inconsistent or incomplete; the message says why, and
    `reason` is a short stable code (a metrics label and the dead-letter reason)."""

    def __init__(self, message: str, reason: str = "corrupt_factors") -> None:
        super().__init__(message)
        self.reason = reason


# A version is the time it was trained at, in milliseconds since the epoch (`strata train`).
# One claiming a time further ahead of this machine's clock than this is refused: served, it
# would hide every version trained after it for as long as the clocks take to catch up.
MAX_VERSION_AHEAD_MS = 86_400_000
MAX_VERSION = 2**53  # far beyond any time in milliseconds, and exact as an int64 and a float


@dataclass(frozen=True)
class FactorLimits:
    """The largest model a worker takes from the factor topic: checked on every message before
    anything is allocated for it (a manifest claiming 10¹² items is two small messages)."""

    max_items: int = 10_000_000
    max_dims: int = 1024
    max_version_ahead_ms: int = MAX_VERSION_AHEAD_MS
    signing_key: bytes | None = field(default=None, repr=False)  # when set, only signed manifests are taken

    def check_signature(self, manifest: dict, where: str) -> None:
        """CorruptFactors (`bad_signature`) for a manifest not signed with `signing_key` (when set)."""
        if self.signing_key is None:
            return
        signature = manifest.get(_SIGNATURE)
        unsigned = {k: v for k, v in manifest.items() if k != _SIGNATURE}
        if not isinstance(signature, str) or not hmac.compare_digest(signature, sign_manifest(unsigned, self.signing_key)):
            raise CorruptFactors(f"{where}: {'no' if signature is None else 'a wrong'} signature (STRATA_MODEL_SIGNING_KEY)",
                                 reason="bad_signature")

    def check_version(self, version: int, where: str, now_ms: int | None = None) -> None:
        """CorruptFactors (`version_ahead`) for a version beyond MAX_VERSION or far ahead of the clock."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        if version > MAX_VERSION or version > now_ms + self.max_version_ahead_ms:
            raise CorruptFactors(
                f"{where}: version {version} is more than {self.max_version_ahead_ms} ms ahead of this "
                f"machine's clock ({now_ms} ms): refused", reason="version_ahead")

    def check_totals(self, items: int, dims: int, chunks: int, where: str) -> None:
        if not 1 <= dims <= self.max_dims:
            raise CorruptFactors(f"{where}: {dims} factors, the limit is 1-{self.max_dims}", reason="too_large")
        if not 0 <= items <= self.max_items:
            raise CorruptFactors(f"{where}: {items} items, the limit is {self.max_items}", reason="too_large")
        if not 0 <= chunks <= max(items, 1):  # every chunk holds at least one row
            raise CorruptFactors(f"{where}: {chunks} chunks for {items} items")


def _canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def sign_manifest(manifest: Mapping, key: bytes) -> str:
    """HMAC-SHA256 (hex) under `key` of the canonical JSON of a manifest's fields."""
    return hmac.new(key, _canonical_json(dict(manifest)).encode(), hashlib.sha256).hexdigest()


def _strict_int(x) -> bool:
    return type(x) is int


@dataclass(frozen=True, eq=False)
class FactorModel:
    """One version of the item factors.

    `Y` is not copied when it is already C-contiguous little-endian float32;
    the model keeps a read-only view, so do not change the array afterwards.
    """

    version: int
    item_ids: tuple[str, ...]
    Y: np.ndarray
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _strict_int(self.version) or self.version < 0:
            raise ValueError(f"version must be an integer ≥ 0, got {self.version!r}")
        ids = tuple(self.item_ids)
        for item in ids:
            if not isinstance(item, str) or not item or "\x00" in item:
                raise ValueError(f"item ids must be non-empty strings without NUL, got {item!r:.60}")
        Y = np.asarray(self.Y)
        if Y.ndim != 2 or Y.shape[1] < 1:
            raise ValueError(f"Y must be a 2-d array with ≥ 1 column, got shape {Y.shape}")
        if Y.shape[0] != len(ids):
            raise ValueError(f"Y has {Y.shape[0]} rows for {len(ids)} item ids")
        Y = np.ascontiguousarray(Y, dtype=DTYPE).view()
        if not np.isfinite(Y).all():
            raise ValueError("Y holds non-finite values")
        Y.flags.writeable = False
        try:
            params = json.loads(_canonical_json(self.params))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"params must be JSON-able (no NaN): {exc}") from None
        if not isinstance(params, dict):
            raise ValueError("params must be a mapping")
        object.__setattr__(self, "item_ids", ids)
        object.__setattr__(self, "Y", Y)
        object.__setattr__(self, "params", params)
        if len(self.index) != len(ids):
            raise ValueError("item ids must be distinct")

    # -- derived ---------------------------------------------------------------
    @property
    def dims(self) -> int:
        return int(self.Y.shape[1])

    def __len__(self) -> int:
        return len(self.item_ids)

    @cached_property
    def index(self) -> dict[str, int]:
        """item id → row of Y."""
        return {item: row for row, item in enumerate(self.item_ids)}

    @cached_property
    def YtY(self) -> np.ndarray:
        """YᵀY (float64, k × k, read-only)."""
        g = gram(self.Y)
        g.flags.writeable = False
        return g

    @cached_property
    def _checksum(self) -> str:
        h = hashlib.sha256()
        h.update(b"strata-factors\x00")
        h.update(struct.pack("<QQQQ", FORMAT, self.version, len(self.item_ids), self.dims))
        params = _canonical_json(self.params).encode()
        h.update(struct.pack("<Q", len(params)))
        h.update(params)
        for item in self.item_ids:
            b = item.encode()
            h.update(struct.pack("<I", len(b)))
            h.update(b)
        h.update(self.Y.reshape(-1).view(np.uint8))
        return h.hexdigest()

    def checksum(self) -> str:
        """sha256 (hex) over the version, params, item ids and Y's bytes."""
        return self._checksum

    def __repr__(self) -> str:
        return f"FactorModel(version={self.version}, items={len(self)}, dims={self.dims})"

    # -- use -------------------------------------------------------------------
    def fold_in(
        self,
        item_weights: Mapping[str, float],
        alpha: float | None = None,
        regularization: float | None = None,
    ) -> np.ndarray | None:
        """The user vector (float32, ready to score against Y) from item-layer weights.

        c = 1 + α·w for every known item with w > 0; unknown items are ignored.
        None when no item is known.  α and λ default to `params["als"]`, the
        values the version was trained with.
        """
        als = self.params.get("als", {}) if isinstance(self.params.get("als"), dict) else {}
        if alpha is None:
            alpha = als.get("alpha")
        if regularization is None:
            regularization = als.get("regularization")
        if alpha is None or regularization is None:
            raise ValueError("alpha and regularization are needed (not found in params['als'])")
        index = self.index
        rows: list[int] = []
        weights: list[float] = []
        for item, w in item_weights.items():
            row = index.get(item)
            if row is not None:
                rows.append(row)
                weights.append(w)
        # distinct rows: one per key of a mapping, and the index maps items to distinct rows
        return fold_in_weights(self.Y, self.YtY, np.asarray(rows, dtype=np.intp), np.asarray(weights, dtype=np.float64),
                               alpha, regularization)

    @cached_property
    def _unit_rows(self) -> np.ndarray:
        """Y with each row scaled to length 1 (zero rows stay zero)."""
        norms = np.linalg.norm(self.Y, axis=1, keepdims=True)
        return (self.Y / np.where(norms > 0, norms, 1.0)).astype(DTYPE)

    def neighbours(self, item: str, k: int) -> list[tuple[str, float]]:
        """The `k` items whose factors point the most the way `item`'s do (cosine, > 0), best
        first; [] for an item without factors.

        >>> m = FactorModel(1, ["a", "b", "c"], np.array([[1, 0], [2, 0.1], [0, 1]], dtype=np.float32))
        >>> [j for j, _ in m.neighbours("a", 5)]
        ['b']
        """
        row = self.index.get(item)
        if row is None or k < 1:
            return []
        unit = self._unit_rows
        cosine = unit @ unit[row]
        cosine[row] = -np.inf
        top = np.argpartition(-cosine, min(k, len(cosine) - 1))[:k] if len(cosine) > k else np.arange(len(cosine))
        top = top[np.argsort(-cosine[top], kind="stable")]
        return [(self.item_ids[j], float(cosine[j])) for j in top if cosine[j] > 0]

    # -- disk ------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write an .npz (no pickles) atomically: a temporary file, then a rename."""
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,  # a file object: numpy neither renames it nor appends ".npz"
                    format=np.array(FORMAT, dtype=np.int64),
                    version=np.array(self.version, dtype=np.int64),
                    item_ids=np.array(self.item_ids, dtype=np.str_) if self.item_ids else np.zeros(0, dtype="<U1"),
                    Y=self.Y,
                    params=np.array(_canonical_json(self.params)),
                    checksum=np.array(self.checksum()),
                )
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> "FactorModel":
        """Read a file written by `save`; refuses pickles and checks the checksum."""
        try:
            with np.load(path, allow_pickle=False) as z:
                if not isinstance(z, np.lib.npyio.NpzFile):
                    raise CorruptFactors(f"{path}: not an .npz archive")
                names = set(z.files)
                expected = {"format", "version", "item_ids", "Y", "params", "checksum"}
                if names != expected:
                    raise CorruptFactors(f"{path}: expected arrays {sorted(expected)}, found {sorted(names)}")
                fmt = int(z["format"])
                if fmt != FORMAT:
                    raise CorruptFactors(f"{path}: unknown factor file format {fmt}")
                ids_arr = z["item_ids"]
                if ids_arr.dtype.kind != "U" or ids_arr.ndim != 1:
                    raise CorruptFactors(f"{path}: item_ids must be a 1-d unicode array, got {ids_arr.dtype}")
                Y = z["Y"]
                if Y.dtype != DTYPE:
                    raise CorruptFactors(f"{path}: Y must be little-endian float32, got {Y.dtype}")
                model = cls(
                    version=int(z["version"]),
                    item_ids=tuple(ids_arr.tolist()),
                    Y=Y,
                    params=json.loads(str(z["params"])),
                )
                stored = str(z["checksum"])
        except CorruptFactors:
            raise
        except (ValueError, OSError, KeyError, TypeError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise CorruptFactors(f"{path}: cannot read factors ({exc})") from None
        if model.checksum() != stored:
            raise CorruptFactors(f"{path}: checksum mismatch (stored {stored[:12]}…, content {model.checksum()[:12]}…)")
        return model


# -- wire form -------------------------------------------------------------------


def to_messages(
    model: FactorModel, chunk_rows: int = 4096, max_message_bytes: int = MAX_MESSAGE_BYTES, signing_key: bytes | None = None
) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs: the chunks in order, then the manifest (signed with `signing_key`, when given).

    A chunk holds at most `chunk_rows` rows, fewer when needed to keep every
    key + value within `max_message_bytes`.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be ≥ 1, got {chunk_rows}")
    n, k = len(model), model.dims
    longest_id = max((len(i.encode()) for i in model.item_ids), default=0)
    # msgpack: ≤ 5 bytes per str header; the header's fixed part is < 64 bytes; the key < 40.
    row_bytes = k * DTYPE.itemsize + longest_id + 5
    budget = max_message_bytes - _PREFIX.size - 64 - 40
    rows_per_chunk = min(chunk_rows, budget // row_bytes) if budget > 0 else 0
    if rows_per_chunk < 1:
        raise ValueError(f"one row ({row_bytes} bytes) does not fit in {max_message_bytes}-byte messages")
    chunks = math.ceil(n / rows_per_chunk)
    out: list[tuple[bytes, bytes]] = []
    for index in range(chunks):
        lo = index * rows_per_chunk
        hi = min(n, lo + rows_per_chunk)
        header = msgpack.packb(
            [FORMAT, model.version, index, lo, hi - lo, n, k, chunks, list(model.item_ids[lo:hi])],
            use_bin_type=True,
        )
        value = _PREFIX.pack(_CHUNK_MAGIC, len(header)) + header + model.Y[lo:hi].tobytes()
        out.append((f"v{model.version}/chunk/{index}".encode(), value))
    fields = {
        "format": FORMAT,
        "version": model.version,
        "items": n,
        "dims": k,
        "chunks": chunks,
        "dtype": "float32-le",
        "params": model.params,
        "sha256": model.checksum(),
    }
    if signing_key is not None:
        fields[_SIGNATURE] = sign_manifest(fields, signing_key)
    manifest = _canonical_json(fields).encode()
    key = f"v{model.version}/manifest".encode()
    if len(key) + len(manifest) > max_message_bytes:
        raise ValueError(f"the manifest ({len(manifest)} bytes) exceeds {max_message_bytes} bytes; params too large")
    out.append((key, manifest))
    return out


# The operator's choice of version (`strata model pin|unpin`): a control record on the factor
# topic, JSON {"version": V} (serve V and only V) or {"version": null} (serve the newest again).
# The last one on the topic is in force.
PIN_KEY = b"control/pin"


def pin_message(version: int | None) -> tuple[bytes, bytes]:
    """(key, value) of a pin record (None: unpin)."""
    if version is not None:
        check_pin_version(version)
    return PIN_KEY, _canonical_json({"version": version}).encode()


def check_pin_version(version) -> None:
    if not _strict_int(version) or not 0 <= version <= MAX_VERSION:
        raise CorruptFactors(f"a pinned version must be an integer from 0 to {MAX_VERSION}, got {version!r:.40}", reason="bad_pin")


def parse_pin(value: bytes) -> int | None:
    """The version a pin record pins (None: unpinned); CorruptFactors (`bad_pin`) otherwise."""
    try:
        obj = json.loads(bytes(value).decode("utf-8"))
    except (TypeError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CorruptFactors(f"a pin record must be JSON ({exc})", reason="bad_pin") from None
    if not isinstance(obj, dict) or set(obj) != {"version"}:
        raise CorruptFactors('a pin record must be {"version": V or null}', reason="bad_pin")
    if obj["version"] is not None:
        check_pin_version(obj["version"])
    return obj["version"]


@dataclass
class _Chunk:
    offset: int
    ids: list[str]
    data: bytes


@dataclass
class _Partial:
    totals: tuple[int, int, int] | None = None  # (items, dims, chunks) as first claimed
    manifest: dict | None = None
    chunks: dict[int, _Chunk] = field(default_factory=dict)


def _parse_key(key: bytes) -> tuple[int, int | None]:
    if not isinstance(key, (bytes, bytearray)):
        raise CorruptFactors(f"factor message key must be bytes, got {type(key).__name__}")
    m = _KEY.fullmatch(bytes(key))
    if m is None:
        raise CorruptFactors(f"not a factor message key: {bytes(key)[:60]!r}")
    version = int(m.group(1))
    return version, (int(m.group(2)) if m.group(2) is not None else None)


def _parse_chunk(version: int, index: int, value: bytes, limits: FactorLimits) -> tuple[tuple[int, int, int], _Chunk]:
    where = f"v{version} chunk {index}"
    if len(value) < _PREFIX.size:
        raise CorruptFactors(f"{where}: truncated ({len(value)} bytes)")
    magic, hlen = _PREFIX.unpack_from(value)
    if magic != _CHUNK_MAGIC:
        raise CorruptFactors(f"{where}: bad magic {magic!r}")
    start = _PREFIX.size
    if hlen > len(value) - start:
        raise CorruptFactors(f"{where}: header length {hlen} exceeds the message")
    try:
        header = msgpack.unpackb(value[start : start + hlen], raw=False, use_list=True, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise CorruptFactors(f"{where}: unreadable header ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, list) or len(header) != 9:
        raise CorruptFactors(f"{where}: header must be a 9-element list")
    fmt, h_version, h_index, offset, rows, items, dims, chunks, ids = header
    if not all(_strict_int(x) for x in (fmt, h_version, h_index, offset, rows, items, dims, chunks)):
        raise CorruptFactors(f"{where}: header fields must be integers")
    if fmt != FORMAT:
        raise CorruptFactors(f"{where}: unknown format {fmt}")
    if (h_version, h_index) != (version, index):
        raise CorruptFactors(f"{where}: the key says v{version} chunk {index}, the header v{h_version} chunk {h_index}")
    if dims < 1 or items < 0 or chunks < 1 or index >= chunks:
        raise CorruptFactors(f"{where}: bad totals (items={items}, dims={dims}, chunks={chunks})")
    limits.check_totals(items, dims, chunks, where)
    if rows < 1 or offset < 0 or offset + rows > items:
        raise CorruptFactors(f"{where}: rows {offset}..{offset + rows} fall outside 0..{items}")
    if not isinstance(ids, list) or len(ids) != rows or not all(isinstance(i, str) for i in ids):
        raise CorruptFactors(f"{where}: expected {rows} item ids")
    data = bytes(value[start + hlen :])
    if len(data) != rows * dims * DTYPE.itemsize:
        raise CorruptFactors(f"{where}: {len(data)} data bytes for {rows} × {dims} float32")
    return (items, dims, chunks), _Chunk(offset, ids, data)


def _parse_manifest(version: int, value: bytes, limits: FactorLimits) -> dict:
    where = f"v{version} manifest"
    try:
        manifest = json.loads(bytes(value).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CorruptFactors(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or set(manifest) - {_SIGNATURE} != _MANIFEST_FIELDS:
        got = sorted(manifest) if isinstance(manifest, dict) else type(manifest).__name__
        raise CorruptFactors(f"{where}: expected fields {sorted(_MANIFEST_FIELDS)}, got {got}")
    for name in ("format", "version", "items", "dims", "chunks"):
        if not _strict_int(manifest[name]):
            raise CorruptFactors(f"{where}: {name!r} must be an integer")
    if manifest["format"] != FORMAT:
        raise CorruptFactors(f"{where}: unknown format {manifest['format']}")
    if manifest["version"] != version:
        raise CorruptFactors(f"{where}: the key says v{version}, the manifest v{manifest['version']}")
    if manifest["dtype"] != "float32-le":
        raise CorruptFactors(f"{where}: unsupported dtype {manifest['dtype']!r}")
    if manifest["dims"] < 1 or manifest["items"] < 0 or manifest["chunks"] < 0:
        raise CorruptFactors(f"{where}: bad totals")
    if (manifest["chunks"] == 0) != (manifest["items"] == 0):
        raise CorruptFactors(f"{where}: {manifest['items']} items in {manifest['chunks']} chunks")
    limits.check_totals(manifest["items"], manifest["dims"], manifest["chunks"], where)
    if not isinstance(manifest["params"], dict):
        raise CorruptFactors(f"{where}: params must be an object")
    sha = manifest["sha256"]
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise CorruptFactors(f"{where}: sha256 must be 64 lowercase hex digits")
    limits.check_signature(manifest, where)
    return manifest


class FactorAssembler:
    """Collects factor messages; hands out each complete, verified version once.

    Versions only move forward: messages of a version ≤ the last completed
    one, or older than the newest version seen so far, are ignored (None)
    once they have passed the per-message checks.  With `only`, messages of
    every other version are ignored instead (an operator's pinned version).
    Only the newest partial version is kept in memory.  Damaged or
    inconsistent data raises `CorruptFactors`; when the damage is only found
    on completion (checksum, layout), the partial version is dropped.
    """

    def __init__(self, last_version: int | None = None, limits: FactorLimits | None = None, only: int | None = None) -> None:
        self.last_version = last_version  # the last completed version (e.g. the one on disk)
        self.limits = limits or FactorLimits()
        self.only = only  # assemble this version alone (a pinned one), whatever its age
        self._newest: int | None = None
        self._partial: _Partial | None = None

    @property
    def pending_version(self) -> int | None:
        return self._newest if self._partial is not None else None

    def add(self, key: bytes, value: bytes) -> FactorModel | None:
        # Check the message on its own first, old versions included: a damaged
        # key could otherwise pass for an old version and be silently ignored.
        version, index = _parse_key(key)
        if index is None:
            manifest = _parse_manifest(version, value, self.limits)
            totals = (manifest["items"], manifest["dims"], manifest["chunks"])
            chunk = None
        else:
            totals, chunk = _parse_chunk(version, index, value, self.limits)
            manifest = None
        if self.last_version is None or version > self.last_version:
            self.limits.check_version(version, f"v{version}")
        if self.only is not None and version != self.only:
            return None
        if self.last_version is not None and version <= self.last_version:
            return None
        if self._newest is not None and version < self._newest:
            return None

        if self._newest is None or version > self._newest:
            self._newest = version
            self._partial = None
        partial = self._partial
        if partial is None:
            partial = self._partial = _Partial()
        if partial.totals is None:
            partial.totals = totals
        elif partial.totals != totals:
            self._partial = None
            raise CorruptFactors(
                f"v{version}: messages disagree on (items, dims, chunks): {partial.totals} vs {totals}"
            )
        if manifest is not None:
            if partial.manifest is not None and partial.manifest != manifest:
                self._partial = None
                raise CorruptFactors(f"v{version}: two different manifests")
            partial.manifest = manifest
        else:
            assert chunk is not None and index is not None
            partial.chunks[index] = chunk

        if partial.manifest is None or len(partial.chunks) < partial.manifest["chunks"]:
            return None
        self._partial = None  # complete: whatever happens next, this attempt is over
        model = self._assemble(version, partial)
        self.last_version = version
        return model

    @staticmethod
    def _assemble(version: int, partial: _Partial) -> FactorModel:
        manifest = partial.manifest
        assert manifest is not None
        n, k = manifest["items"], manifest["dims"]
        received = sum(len(chunk.ids) for chunk in partial.chunks.values())
        if received != n:  # before allocating: the rows must have arrived, not only been claimed
            raise CorruptFactors(f"v{version}: chunks hold {received} rows, the manifest says {n}")
        Y = np.empty((n, k), dtype=DTYPE)
        ids: list[str] = []
        row = 0
        for index in range(manifest["chunks"]):
            chunk = partial.chunks[index]
            if chunk.offset != row:
                raise CorruptFactors(f"v{version}: chunk {index} starts at row {chunk.offset}, expected {row}")
            rows = len(chunk.ids)
            Y[row : row + rows] = np.frombuffer(chunk.data, dtype=DTYPE).reshape(rows, k)
            ids.extend(chunk.ids)
            row += rows
        if row != n:
            raise CorruptFactors(f"v{version}: chunks hold {row} rows, the manifest says {n}")
        try:
            model = FactorModel(version, tuple(ids), Y, manifest["params"])
        except ValueError as exc:
            raise CorruptFactors(f"v{version}: {exc}") from None
        if model.checksum() != manifest["sha256"]:
            raise CorruptFactors(f"v{version}: checksum mismatch, the data differs from what was published")
        return model


# -- user vectors ------------------------------------------------------------------


def user_vector_message(version: int, vector: np.ndarray) -> bytes:
    """The wire form of a user's batch vector x_u (the user-factors topic, keyed by user): msgpack
    [version, little-endian float32 bytes]."""
    return msgpack.packb([version, np.asarray(vector, dtype="<f4").tobytes()], use_bin_type=True)


MAX_USER_VECTOR_BYTES = 65_536 * 4


def parse_user_vector(value: bytes) -> tuple[int, np.ndarray]:
    """(version, vector) of a user-factors message; ValueError unless it is [int, float32 bytes]
    of at most 65,536 finite values."""
    try:
        obj = msgpack.unpackb(value, raw=False)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several unrelated types on garbage
        raise ValueError(f"not msgpack ({type(exc).__name__})") from None
    if not (isinstance(obj, list) and len(obj) == 2 and type(obj[0]) is int and isinstance(obj[1], bytes)):
        raise ValueError("a user vector must be [version, float32 bytes]")
    version, raw = obj
    if not raw or len(raw) % 4 or len(raw) > MAX_USER_VECTOR_BYTES:
        raise ValueError(f"{len(raw)} bytes are not 1-65,536 float32 values")
    vector = np.frombuffer(raw, dtype="<f4")
    if not np.isfinite(vector).all():
        raise ValueError("the vector holds non-finite values")
    return version, vector
