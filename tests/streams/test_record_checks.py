"""The checks a worker makes on records of the catalog and user-factor topics before applying them."""
from __future__ import annotations

import msgpack
import numpy as np
import orjson
import pytest

from strata.streams.state import catalog_key, catalog_problem, home_partition
from strata.models.factors import parse_user_vector, user_vector_message


def test_a_catalog_record_under_its_own_key_is_applied():
    key, value = catalog_key({"item_id": "i1", "category_id": "c1"})
    assert catalog_problem(key, value) is None
    assert catalog_problem(key, None) is None  # a tombstone deletes


@pytest.mark.parametrize("key, value, reason", [
    (b"item:i1", b"{not json", "not_json"),
    (b"item:i1", b"[1, 2]", "bad_catalog_record"),
    (b"item:i1", orjson.dumps({"item_id": "i2", "category_id": "c1"}), "wrong_key"),
    (b"item:i1", orjson.dumps({"item_id": "i1", "category_id": "c" * 200}), "bad_catalog_record"),
    (b"item:i1", b'{"item_id": ' + b"9" * 5000 + b', "category_id": "c"}', "not_json"),
    (b"", orjson.dumps({"item_id": "i1", "category_id": "c1"}), "bad_key"),
    (None, None, "bad_key"),
    (b"\x01" * (1 << 20), b"{}", "bad_key"),
])
def test_a_catalog_record_that_is_not_one_is_refused_with_its_reason(key, value, reason):
    assert catalog_problem(key, value)[0] == reason


def test_a_user_vector_round_trips():
    version, vector = parse_user_vector(user_vector_message(7, np.arange(4, dtype=np.float32)))
    assert version == 7 and vector.tolist() == [0.0, 1.0, 2.0, 3.0]


@pytest.mark.parametrize("value", [
    b"\xc1", msgpack.packb([1]), msgpack.packb(["1", b"\0" * 4]), msgpack.packb([1, b"\0" * 5]), msgpack.packb([1, b""]),
    msgpack.packb([1, np.array([np.inf], dtype="<f4").tobytes()]), msgpack.packb([1, b"\0" * (4 * 65_537)]), None,
])
def test_a_user_vector_that_is_not_one_is_a_value_error(value):
    with pytest.raises(ValueError):
        parse_user_vector(value)


def test_home_partition_is_the_default_partitioners():
    from aiokafka.partitioner import DefaultPartitioner

    for key in (b"u1", b"u42", b"shopper-9", b"\xff" * 300):
        assert home_partition(key, 8) == DefaultPartitioner()(key, list(range(8)), list(range(8)))
    assert len({home_partition(b"u%d" % i, 8) for i in range(100)}) == 8
