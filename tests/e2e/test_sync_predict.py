"""A predict worker's serving thread (worker/sync_predict.py) against a real Redis, in this
process: it answers a batch on the channel the batch names, with the library's numbers;
drops a batch whose caller has stopped waiting; and a stop ends its wait at once."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from kit import DEEPMD_REF, wait_for

from jobs.layout import model_file
from jobs.rpc import REQUESTS, pack, unpack
from jobs.settings import load_settings
from model.committee import load_predictor
from model.inference import predict
from worker import state
from worker.sync_predict import IDLE_WAIT_S, SyncServer

pytestmark = pytest.mark.e2e
WATER = np.array([[0.0, 0.0, 0.0], [0.757, 0.586, 0.0], [-0.757, 0.586, 0.0]])


def batch(model_id: str, positions: list[np.ndarray]) -> dict[str, Any]:
    return {"model_id": model_id, "sent_at": time.time(), "requests": [
        {"derivatives": False, "structures": [{"types": [0, 1, 1], "positions": p, "cell": None}]} for p in positions]}


def test_answers_on_the_named_channel_drops_expired_batches_and_stops_at_once(tmp_path: Path, redis_url: str) -> None:
    settings = load_settings(data_dir=tmp_path / "data", broker_url=redis_url)
    path = model_file(settings.root, "mdl-sync")
    path.parent.mkdir(parents=True)
    shutil.copy(DEEPMD_REF / "dipole" / "model_slim.pt", path)
    state.start(settings)
    client = redis.Redis.from_url(redis_url)
    replies = client.pubsub(ignore_subscribe_messages=True)
    replies.subscribe("test.replies")
    wait_for("the subscription", lambda: client.pubsub_numsub("test.replies")[0][1] == 1, timeout=10)
    server = SyncServer(settings)
    server.start()
    try:
        shifted = WATER + 0.05
        # FIFO: the expired batch is taken first; had it been answered, its answer would come first
        client.lpush(REQUESTS, pack({"id": "expired", "reply_to": "test.replies", "deadline": time.time() - 1,
                                     "batch": batch("mdl-sync", [WATER])}))
        client.lpush(REQUESTS, pack({"id": "live", "reply_to": "test.replies", "deadline": time.time() + 60,
                                     "batch": batch("mdl-sync", [WATER, shifted])}))
        message = wait_for("an answer", lambda: replies.get_message(timeout=0.5), timeout=60)
        answer = unpack(message["data"])
        assert answer["id"] == "live"
        reply = answer["reply"]
        assert reply["ok"] and {"picked", "model_s", "done"} <= reply["timing"].keys()
        # the library's numbers for the same two frames in one pass (a symmetric molecule's
        # zero component is ~1e-17 either way: compared on the tensor's scale)
        ref = predict(load_predictor(path), np.stack([WATER, shifted]), np.array([0, 1, 1]), None)
        scale = 1e-12 * float(np.abs(ref.atomic_tensor).max())
        for k, envelope in enumerate(reply["answers"]):
            assert envelope["ok"]
            np.testing.assert_allclose(envelope["global"][0], ref.global_tensor[k], rtol=1e-12, atol=scale)
            np.testing.assert_allclose(envelope["atomic"][0], ref.atomic_tensor[k], rtol=1e-12, atol=scale)
        assert server.thread.is_alive()
    finally:
        started = time.monotonic()
        server.stop()
        stopped_in = time.monotonic() - started
        replies.close()
    assert not server.thread.is_alive()
    assert stopped_in < IDLE_WAIT_S / 3, f"the stop waited {stopped_in:.1f} s: the BRPOP ran to its time-out"
