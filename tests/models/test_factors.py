"""Factor versions: disk form, wire form and assembly."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from strata.models.als import fold_in, gram
from strata.models.factors import CorruptFactors, FactorAssembler, FactorModel, to_messages

PARAMS = {"als": {"factors": 8, "regularization": 0.05, "alpha": 10.0, "iterations": 15, "seed": 0},
          "trained_at": 1_700_000_000.5, "snapshot": {"events": 1234, "as_of": 1_699_999_999.0}}


def _model(version=1, n=300, k=8, seed=0, params=PARAMS) -> FactorModel:
    rng = np.random.default_rng(seed)
    ids = tuple(f"item-{seed}-{i}-{'é' * (i % 3)}" for i in range(n))
    return FactorModel(version, ids, rng.normal(0, 1, (n, k)).astype(np.float32), params)


def _same(a: FactorModel, b: FactorModel) -> None:
    assert a.version == b.version
    assert a.item_ids == b.item_ids
    assert np.array_equal(a.Y, b.Y) and a.Y.dtype == b.Y.dtype
    assert a.params == b.params
    assert a.checksum() == b.checksum()


def _feed(assembler: FactorAssembler, messages):
    return [m for m in (assembler.add(k, v) for k, v in messages) if m is not None]


# -- the model -------------------------------------------------------------------


def test_model_is_read_only_and_validated():
    m = _model()
    assert not m.Y.flags.writeable
    with pytest.raises(ValueError):
        m.Y[0, 0] = 1.0
    assert m.index[m.item_ids[5]] == 5 and len(m.index) == len(m)
    np.testing.assert_allclose(m.YtY, m.Y.astype(np.float64).T @ m.Y.astype(np.float64))
    with pytest.raises(ValueError, match="distinct"):
        FactorModel(1, ("a", "a"), np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="rows"):
        FactorModel(1, ("a",), np.zeros((2, 2), np.float32))
    with pytest.raises(ValueError, match="JSON"):
        FactorModel(1, ("a",), np.zeros((1, 2), np.float32), {"x": float("nan")})


def test_checksum_covers_version_ids_values_and_params():
    m = _model()
    Y = m.Y.copy()
    Y[3, 2] = np.nextafter(Y[3, 2], np.inf)
    others = [
        FactorModel(2, m.item_ids, m.Y, m.params),
        FactorModel(1, m.item_ids[:-1] + ("other",), m.Y, m.params),
        FactorModel(1, m.item_ids, Y, m.params),
        FactorModel(1, m.item_ids, m.Y, {**m.params, "trained_at": 1.0}),
    ]
    assert len({m.checksum(), *(o.checksum() for o in others)}) == 5
    assert FactorModel(1, m.item_ids, m.Y.copy(), dict(m.params)).checksum() == m.checksum()


def test_model_fold_in_matches_the_formula():
    m = _model(n=50, k=4)
    weights = {m.item_ids[3]: 2.0, m.item_ids[7]: 0.25, "unknown": 5.0, m.item_ids[9]: 0.0}
    x = m.fold_in(weights)
    assert x.dtype == np.float32
    expected = fold_in(m.Y, gram(m.Y), [3, 7], [1 + 10.0 * 2.0, 1 + 10.0 * 0.25], 0.05)
    np.testing.assert_allclose(x, expected, rtol=1e-6)
    np.testing.assert_allclose(m.fold_in(weights, alpha=2.0, regularization=1.0),
                               fold_in(m.Y, gram(m.Y), [3, 7], [5.0, 1.5], 1.0), rtol=1e-6)
    assert m.fold_in({"unknown": 1.0}) is None
    assert m.fold_in({}) is None


# -- disk ------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    m = _model()
    path = tmp_path / "factors.npz"
    m.save(path)
    _same(FactorModel.load(path), m)
    assert [p.name for p in tmp_path.iterdir()] == ["factors.npz"]  # no temporary left behind
    m2 = _model(version=2)
    m2.save(path)  # replaces atomically
    _same(FactorModel.load(path), m2)


def test_empty_model_round_trips(tmp_path):
    m = FactorModel(3, (), np.zeros((0, 4), np.float32), {})
    m.save(tmp_path / "f.npz")
    _same(FactorModel.load(tmp_path / "f.npz"), m)
    (got,) = _feed(FactorAssembler(), to_messages(m))
    _same(got, m)


def test_load_refuses_pickles(tmp_path):
    m = _model(n=5)
    with_objects = tmp_path / "objects.npz"
    np.savez(with_objects, format=np.array(1), version=np.array(1), item_ids=np.array(list(m.item_ids), dtype=object),
             Y=m.Y, params=np.array("{}"), checksum=np.array(m.checksum()))
    with pytest.raises(CorruptFactors, match="pickle|[Oo]bject"):
        FactorModel.load(with_objects)
    pickled = tmp_path / "pickled.npz"
    pickled.write_bytes(pickle.dumps({"Y": m.Y}))
    with pytest.raises(CorruptFactors, match="pickle"):
        FactorModel.load(pickled)


@pytest.mark.parametrize("damage", [lambda raw: raw[: len(raw) // 2],
                                    lambda raw: raw[: len(raw) // 2] + bytes([raw[len(raw) // 2] ^ 0xFF]) + raw[len(raw) // 2 + 1:]],
                         ids=["truncated", "flipped-byte"])
def test_a_damaged_file_is_corrupt_factors_not_a_crash(tmp_path, damage):
    """A half-written or bit-flipped archive: zip's own errors become CorruptFactors, which a
    worker at start-up logs and passes over."""
    path = tmp_path / "f.npz"
    _model(n=50).save(path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CorruptFactors):
        FactorModel.load(path)


def test_load_detects_tampering(tmp_path):
    m = _model(n=5)
    path = tmp_path / "f.npz"
    Y = m.Y.copy()
    Y[0, 0] += 1
    np.savez(path, format=np.array(1), version=np.array(1), item_ids=np.array(m.item_ids),
             Y=Y, params=np.array('{"als":{}}'), checksum=np.array(m.checksum()))
    with pytest.raises(CorruptFactors, match="checksum"):
        FactorModel.load(path)


# -- wire ------------------------------------------------------------------------


def test_messages_layout_and_size_limit():
    m = _model(n=1000, k=64)
    msgs = to_messages(m, chunk_rows=300)
    keys = [k for k, _ in msgs]
    assert keys[-1] == b"v1/manifest"
    assert keys[:-1] == [f"v1/chunk/{i}".encode() for i in range(4)]
    small = to_messages(m, chunk_rows=4096, max_message_bytes=20_000)
    assert len(small) > 10
    assert all(len(k) + len(v) <= 20_000 for k, v in small)
    big = _model(n=5000, k=64)
    assert all(len(k) + len(v) < 1 << 20 for k, v in to_messages(big))  # default 4096 rows would not fit
    with pytest.raises(ValueError, match="does not fit"):
        to_messages(m, max_message_bytes=200)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 120), st.integers(1, 40), st.randoms(use_true_random=False))
def test_shuffled_messages_assemble_to_the_same_model(n, chunk_rows, rnd):
    m = _model(version=7, n=n, k=3)
    msgs = to_messages(m, chunk_rows=chunk_rows)
    rnd.shuffle(msgs)
    assembler = FactorAssembler()
    results = [assembler.add(k, v) for k, v in msgs]
    assert all(r is None for r in results[:-1])  # complete only with the last piece, whichever it is
    _same(results[-1], m)
    assert assembler.last_version == 7
    assert _feed(assembler, msgs) == []  # a redelivery of the same version is ignored


def test_redelivered_chunks_are_harmless():
    m = _model(n=100)
    msgs = to_messages(m, chunk_rows=10)
    (got,) = _feed(FactorAssembler(), msgs[:5] + msgs[:5] + msgs[5:])
    _same(got, m)


def test_missing_chunk_gives_nothing():
    msgs = to_messages(_model(n=100), chunk_rows=10)
    assert _feed(FactorAssembler(), msgs[:3] + msgs[4:]) == []


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_changed_byte_is_caught(data):
    m = _model(n=40, k=3)
    msgs = to_messages(m, chunk_rows=16)
    which = data.draw(st.integers(0, len(msgs) - 1))
    part = data.draw(st.sampled_from(["key", "value"]))
    key, value = msgs[which]
    buf = bytearray(key if part == "key" else value)
    pos = data.draw(st.integers(0, len(buf) - 1))
    buf[pos] ^= data.draw(st.integers(1, 255))
    msgs[which] = (bytes(buf), value) if part == "key" else (key, bytes(buf))
    assembler = FactorAssembler()
    with pytest.raises(CorruptFactors):
        for k, v in msgs:
            assert assembler.add(k, v) is None


def test_checksum_mismatch_is_reported_and_the_attempt_dropped():
    m = _model(n=40, k=3)
    msgs = to_messages(m, chunk_rows=16)
    key, value = msgs[1]
    msgs[1] = (key, value[:-4] + bytes([value[-4] ^ 0x01]) + value[-3:])  # a float's lowest mantissa bit
    assembler = FactorAssembler()
    with pytest.raises(CorruptFactors, match="checksum"):
        _feed(assembler, msgs)
    assert assembler.last_version is None and assembler.pending_version is None
    (got,) = _feed(assembler, to_messages(m, chunk_rows=16))  # a clean republish still works
    _same(got, m)


def test_versions_only_move_forward():
    v1, v2, v3, v4 = (_model(version=v, n=30, seed=v) for v in (1, 2, 3, 4))
    assembler = FactorAssembler()
    (got,) = _feed(assembler, to_messages(v2, chunk_rows=8))
    _same(got, v2)
    assert _feed(assembler, to_messages(v1, chunk_rows=8)) == []  # older: ignored
    m3 = to_messages(v3, chunk_rows=8)
    assert _feed(assembler, m3[:2]) == []
    assert assembler.pending_version == 3
    (got,) = _feed(assembler, to_messages(v4, chunk_rows=8))  # newer one supersedes the partial v3
    _same(got, v4)
    assert _feed(assembler, m3[2:]) == []  # the rest of v3 comes too late
    assert assembler.last_version == 4 and assembler.pending_version is None


def test_partial_version_is_dropped_when_a_newer_one_starts():
    v5, v6 = _model(version=5, n=30), _model(version=6, n=30, seed=1)
    m5, m6 = to_messages(v5, chunk_rows=8), to_messages(v6, chunk_rows=8)
    assembler = FactorAssembler()
    assert _feed(assembler, m5[:-1] + m6[:1] + m5[-1:]) == []  # v5's manifest arrives after v6 began
    (got,) = _feed(assembler, m6[1:])
    _same(got, v6)


def test_assembler_starts_after_the_version_on_disk():
    assembler = FactorAssembler(last_version=3)
    assert _feed(assembler, to_messages(_model(version=3, n=10))) == []
    (got,) = _feed(assembler, to_messages(_model(version=4, n=10)))
    assert got.version == 4


@pytest.mark.parametrize("key", [b"v1/chunk/x", b"v01/manifest", b"v1/chunk/01", b"x", b"v1/manifest/extra"])
def test_bad_keys_are_rejected(key):
    with pytest.raises(CorruptFactors, match="key"):
        FactorAssembler().add(key, b"{}")


def test_inconsistent_manifest_is_rejected():
    m = _model(n=40, k=3)
    msgs = to_messages(m, chunk_rows=16)
    import json

    manifest = json.loads(msgs[-1][1])
    manifest["chunks"] = 7  # a manifest that would otherwise wait forever
    with pytest.raises(CorruptFactors, match="disagree"):
        _feed(FactorAssembler(), msgs[:-1] + [(msgs[-1][0], json.dumps(manifest).encode())])
