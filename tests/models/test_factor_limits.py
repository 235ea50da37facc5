"""The factor topic defended: every message is checked against the limits and the clock before
anything is allocated for it, and whatever arrives is a model, nothing yet, or CorruptFactors."""
from __future__ import annotations

import json
import struct
import time

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from strata.models.factors import CorruptFactors, FactorAssembler, FactorLimits, FactorModel, to_messages

NOW_MS = int(time.time() * 1000)


def manifest(version: int, items: int, dims: int, chunks: int) -> bytes:
    return json.dumps({"format": 1, "version": version, "items": items, "dims": dims, "chunks": chunks,
                       "dtype": "float32-le", "params": {}, "sha256": "0" * 64}).encode()


def chunk(version: int, items: int, dims: int, chunks: int, rows: int = 1) -> bytes:
    header = msgpack.packb([1, version, 0, 0, rows, items, dims, chunks, [f"i{r}" for r in range(rows)]])
    return struct.pack("<4sI", b"SFC1", len(header)) + header + b"\0" * (4 * rows * dims)


def refusal(assembler: FactorAssembler, key: bytes, value: bytes) -> str:
    with pytest.raises(CorruptFactors) as info:
        assembler.add(key, value)
    return info.value.reason


def test_a_manifest_claiming_a_trillion_items_is_refused_before_allocating():
    v = NOW_MS
    assembler = FactorAssembler()
    assert refusal(assembler, f"v{v}/chunk/0".encode(), chunk(v, 10**12, 1000, 1)) == "too_large"
    assert refusal(assembler, f"v{v}/manifest".encode(), manifest(v, 10**12, 1000, 1)) == "too_large"


def test_configured_limits_apply():
    v = NOW_MS
    assembler = FactorAssembler(limits=FactorLimits(max_items=100, max_dims=8))
    assert refusal(assembler, f"v{v}/manifest".encode(), manifest(v, 101, 8, 1)) == "too_large"
    assert refusal(assembler, f"v{v}/manifest".encode(), manifest(v, 100, 9, 1)) == "too_large"
    assert refusal(assembler, f"v{v}/manifest".encode(), manifest(v, 10, 8, 11)) == "corrupt_factors"


def test_a_manifest_whose_rows_never_arrived_allocates_nothing():
    """Within the limits, but claiming more rows than its one chunk holds: refused on completion."""
    v = NOW_MS
    assembler = FactorAssembler()
    assert assembler.add(f"v{v}/chunk/0".encode(), chunk(v, 5_000_000, 1024, 1)) is None
    assert refusal(assembler, f"v{v}/manifest".encode(), manifest(v, 5_000_000, 1024, 1)) == "corrupt_factors"


@pytest.mark.parametrize("version", [2**62, 9_999_999_999_999_999_999, NOW_MS + 2 * 86_400_000])
def test_a_version_far_ahead_of_the_clock_is_refused(version):
    model = FactorModel(version, ("a", "b"), np.ones((2, 3), dtype=np.float32), {})
    assembler = FactorAssembler()
    reasons = []
    for key, value in to_messages(model):
        with pytest.raises(CorruptFactors) as info:
            assembler.add(key, value)
        reasons.append(info.value.reason)
    assert set(reasons) == {"version_ahead"}


def test_a_version_of_now_is_taken():
    model = FactorModel(NOW_MS, ("a", "b"), np.ones((2, 3), dtype=np.float32), {})
    assembler = FactorAssembler()
    out = [assembler.add(key, value) for key, value in to_messages(model)]
    assert out[-1] is not None and out[-1].version == NOW_MS


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-10**30, max_value=10**30) | st.floats() | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
FIELDS = ("format", "version", "items", "dims", "chunks", "dtype", "params", "sha256")
GOOD = {"format": 1, "version": NOW_MS, "items": 2, "dims": 3, "chunks": 1, "dtype": "float32-le", "params": {}, "sha256": "0" * 64}


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS + ("extra",)), json_values, max_size=4), st.sets(st.sampled_from(FIELDS), max_size=2))
def test_arbitrary_json_manifests_are_taken_or_refused(changes, dropped):
    doc = {k: v for k, v in {**GOOD, **changes}.items() if k not in dropped}
    try:
        assert FactorAssembler().add(f"v{NOW_MS}/manifest".encode(), json.dumps(doc).encode()) is None
    except CorruptFactors as exc:
        assert exc.reason and str(exc)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([b"manifest", b"chunk/0", b"chunk/7"]), st.integers(0, 10**19))
def test_arbitrary_bytes_are_taken_or_refused(value, kind, version):
    try:
        FactorAssembler().add(b"v%d/" % version + kind, value)
    except CorruptFactors as exc:
        assert exc.reason and str(exc)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80), st.binary(max_size=80))
def test_arbitrary_keys_are_refused_or_taken(key, value):
    try:
        FactorAssembler().add(key, value)
    except CorruptFactors as exc:
        assert exc.reason


KEY = b"k" * 32


def _assemble(messages, limits: FactorLimits):
    assembler = FactorAssembler(limits=limits)
    out = None
    for key, value in messages:
        out = assembler.add(key, value)
    return out


def test_a_worker_with_the_signing_key_takes_signed_versions_only():
    model = FactorModel(NOW_MS, ("a", "b"), np.ones((2, 3), dtype=np.float32), {"als": {"alpha": 1.0}})
    signed = to_messages(model, signing_key=KEY)
    assert _assemble(signed, FactorLimits(signing_key=KEY)).version == NOW_MS
    assert _assemble(signed, FactorLimits()).version == NOW_MS  # a worker without the key ignores the signature
    for messages in (to_messages(model), to_messages(model, signing_key=b"x" * 32)):
        with pytest.raises(CorruptFactors) as info:
            _assemble(messages, FactorLimits(signing_key=KEY))
        assert info.value.reason == "bad_signature"


def test_a_signature_does_not_survive_a_changed_manifest():
    import json

    model = FactorModel(NOW_MS, ("a", "b"), np.ones((2, 3), dtype=np.float32), {})
    *chunks, (key, manifest) = to_messages(model, signing_key=KEY)
    forged = json.loads(manifest)
    forged["params"] = {"als": {"alpha": 1000.0}}
    with pytest.raises(CorruptFactors) as info:
        _assemble([*chunks, (key, json.dumps(forged).encode())], FactorLimits(signing_key=KEY))
    assert info.value.reason == "bad_signature"
