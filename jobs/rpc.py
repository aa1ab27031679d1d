"""Synchronous prediction batches straight over the broker's Redis, beside Celery.

A batch of coalesced requests (app/batching.py) is one message on the list ``REQUESTS``:
the api LPUSHes it, a predict worker's serving thread (worker/sync_predict.py) BRPOPs it,
runs it and PUBLISHes the answer on the channel its api process named (``reply_to``) and
subscribed to at its first batch. Three Redis commands per batch, where a Celery task took
about a dozen (publish, prefetch, ack, result get-before-set, set, publish, get, delete)
plus Celery's per-task bookkeeping on both sides — most of a small request's cost.
Nothing is lost that mattered: a synchronous call that outlives its caller's timeout is
worthless, so the message carries its deadline instead of being acknowledged late, and an
answer published while its api is not subscribed (it restarted) has nobody to go to.
Jobs (trainings, prediction jobs, spectra) stay Celery tasks.

Wire format (``pack`` / ``unpack``): ``MAGIC``, a 4-byte little-endian length, a JSON
header, then the raw bytes of the numpy arrays the header refers to by offset, so float
arrays (positions, cells, tensors) travel as float64 bytes, not as decimal text that
costs far more to write and parse.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any
from urllib.parse import urlsplit

import numpy as np

REQUESTS = "dptensor.predict.sync"  # the list predict workers take batches from
REPLY_PREFIX = "dptensor.predict.reply."  # + the api process's id: the channel of its answers
MAGIC = b"DPT1"
_ARRAY = "__ndarray__"


def reply_channel(api_id: str) -> str:
    return REPLY_PREFIX + api_id


def redis_py_url(broker: str) -> str:
    """The broker URL as redis-py reads it: kombu's ``redis+socket:///path`` is ``unix:///path``."""
    if broker.startswith("redis+socket://"):
        parts = urlsplit(broker)
        return f"unix://{parts.path}" + (f"?{parts.query}" if parts.query else "")
    return broker


def pack(obj: dict[str, Any]) -> bytes:
    """``obj`` (JSON types and float64/int64 numpy arrays, anywhere inside) as bytes."""
    blobs: list[bytes] = []
    offset = 0

    def array(value: Any) -> dict[str, Any]:
        nonlocal offset
        if not isinstance(value, np.ndarray):
            raise TypeError(f"cannot pack {type(value).__name__}")
        a = np.asarray(value, dtype=np.int64 if value.dtype.kind in "iu" else np.float64)
        blobs.append(a.tobytes())  # C order, whatever the array's layout
        ref = {_ARRAY: [offset, a.dtype.str, list(a.shape)]}
        offset += a.nbytes
        return ref

    header = json.dumps(obj, default=array, separators=(",", ":")).encode()
    return b"".join([MAGIC, struct.pack("<I", len(header)), header, *blobs])


def unpack(data: bytes | str) -> dict[str, Any]:
    """What ``pack`` packed; the arrays are read-only views of ``data``."""
    if not isinstance(data, bytes) or data[:4] != MAGIC or len(data) < 8:
        raise ValueError("not a dptensor prediction message")
    (size,) = struct.unpack_from("<I", data, 4)
    start = 8 + size
    buffer = memoryview(data)

    def hook(d: dict[str, Any]) -> Any:
        ref = d.get(_ARRAY)
        if ref is None or len(d) != 1:
            return d
        offset, dtype, shape = ref
        dt = np.dtype(dtype)
        count = math.prod(shape)  # 1 for a 0-d array
        return np.frombuffer(buffer, dtype=dt, count=count, offset=start + offset).reshape(shape)

    out: dict[str, Any] = json.loads(bytes(buffer[8:start]), object_hook=hook)
    return out
