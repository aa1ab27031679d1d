"""The wire format of synchronous prediction batches (jobs/rpc.py): float arrays travel as
their bytes and come back bit for bit, everything else as JSON."""

from __future__ import annotations

import numpy as np
import pytest

from jobs.rpc import pack, redis_py_url, unpack


def test_arrays_anywhere_come_back_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    positions = rng.normal(size=(192, 3)) * 10
    message = {"id": "abc", "deadline": 1.5, "batch": {"requests": [
        {"derivatives": False, "structures": [{"types": [0, 1, 1], "positions": positions, "cell": None},
                                              {"types": [0], "positions": np.zeros((0, 3)),
                                               "cell": np.eye(3) * 12.4}]},
        {"scalar": np.array(2.5), "ints": np.arange(5, dtype=np.int32)}]}}
    back = unpack(pack(message))
    s0, s1 = back["batch"]["requests"][0]["structures"]
    assert s0["positions"].dtype == np.float64 and s0["positions"].shape == (192, 3)
    assert s0["positions"].tobytes() == positions.tobytes()  # bit for bit, no decimal round trip
    assert s0["types"] == [0, 1, 1] and s0["cell"] is None
    assert s1["positions"].shape == (0, 3) and np.array_equal(s1["cell"], np.eye(3) * 12.4)
    other = back["batch"]["requests"][1]
    assert other["scalar"].shape == () and float(other["scalar"]) == 2.5
    assert other["ints"].dtype == np.int64 and other["ints"].tolist() == [0, 1, 2, 3, 4]
    assert back["id"] == "abc" and back["deadline"] == 1.5


def test_a_plain_dict_that_looks_like_an_array_reference_is_left_alone() -> None:
    message = {"a": {"__ndarray__": [0, "<f8", [1]], "other": 1}}
    assert unpack(pack(message)) == message


@pytest.mark.parametrize("data", [b"", b"DPT1", b"{}", b"XXXX\x00\x00\x00\x00", "DPT1 as text"])
def test_what_is_not_a_message_is_refused(data: bytes | str) -> None:
    with pytest.raises(ValueError, match="not a dptensor prediction message"):
        unpack(data)


def test_objects_without_a_wire_form_are_refused() -> None:
    with pytest.raises(TypeError, match="cannot pack"):
        pack({"x": {1, 2}})


def test_broker_urls_as_redis_py_reads_them() -> None:
    assert redis_py_url("redis+socket:///tmp/d/broker.sock") == "unix:///tmp/d/broker.sock"
    assert redis_py_url("redis://127.0.0.1:6379/6") == "redis://127.0.0.1:6379/6"
    assert redis_py_url("rediss://h:6380/0") == "rediss://h:6380/0"
