"""The api's end of jobs/rpc.py: sends a prediction batch over the broker's Redis and
awaits its answer on this process's channel — a Batcher sender (app/batching.py) that
needs no thread. One listener task reads the channel (subscribed at the first batch): an
idle api waits on a quiet socket, and an answer costs it no command of its own."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from jobs.errors import unwrap
from jobs.queue import BrokerUnavailable, TaskTimeout
from jobs.rpc import REQUESTS, pack, redis_py_url, reply_channel, unpack
from jobs.settings import Settings


def with_arrays(payload: dict[str, Any]) -> dict[str, Any]:
    """Positions and cells as float64 arrays: they travel as bytes."""
    for request in payload["requests"]:
        request["structures"] = [{**s, "positions": np.asarray(s["positions"], dtype=np.float64),
                                  "cell": None if s["cell"] is None else np.asarray(s["cell"], dtype=np.float64)}
                                 for s in request["structures"]]
    return payload


def as_lists(reply: dict[str, Any]) -> dict[str, Any]:
    """The worker's tensors (arrays) as the lists the responses are built from."""
    for envelope in reply.get("answers", []):
        if envelope.get("ok"):
            envelope["global"] = envelope["global"].tolist()
            envelope["atomic"] = [a.tolist() for a in envelope["atomic"]]
    return reply


def unavailable(exc: BaseException) -> BrokerUnavailable:
    return BrokerUnavailable(f"the broker is unreachable ({type(exc).__name__}: {exc})")


class PredictRpc:
    def __init__(self, settings: Settings) -> None:
        self.url = redis_py_url(settings.broker)
        self.timeout_s = settings.broker_timeout_s
        self.reply_to = reply_channel(uuid.uuid4().hex)
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: aioredis.Redis | None = None
        self._listener: aioredis.Redis | None = None
        self._listening: asyncio.Task[None] | None = None
        self._subscribing = asyncio.Lock()

    async def _connected(self) -> aioredis.Redis:
        """The client, with this process's channel subscribed (again after a lost
        connection). Connections belong to one event loop: a test client may run several."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop, self._listening, self._subscribing = loop, None, asyncio.Lock()
            self._client = aioredis.Redis.from_url(self.url, socket_connect_timeout=self.timeout_s,
                                                   socket_timeout=self.timeout_s)
            # the channel is read without a time-out: it is quiet while nothing is asked
            self._listener = aioredis.Redis.from_url(self.url, socket_connect_timeout=self.timeout_s)
        assert self._client is not None and self._listener is not None
        if self._listening is None or self._listening.done():
            async with self._subscribing:
                if self._listening is None or self._listening.done():
                    pubsub = self._listener.pubsub()
                    try:
                        await asyncio.wait_for(self._subscribe(pubsub), self.timeout_s)
                    except (RedisError, OSError, TimeoutError) as exc:
                        await pubsub.aclose()
                        raise unavailable(exc) from None
                    self._listening = loop.create_task(self._listen(pubsub))
        return self._client

    async def _subscribe(self, pubsub: PubSub) -> None:
        """Subscribed once Redis confirms it: a batch sent after this has its answer heard."""
        await pubsub.subscribe(self.reply_to)
        while (message := await pubsub.get_message(timeout=None)) is None or message["type"] != "subscribe":
            pass

    async def __call__(self, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """The batch's answer (unwrapped: a worker-side failure of the whole batch raises)."""
        client = await self._connected()
        msg_id = uuid.uuid4().hex
        answered: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[msg_id] = answered
        try:
            message = pack({"id": msg_id, "reply_to": self.reply_to, "deadline": time.time() + timeout_s,
                            "batch": with_arrays(payload)})
            try:
                await client.lpush(REQUESTS, message)
            except (RedisError, OSError) as exc:
                raise unavailable(exc) from None
            try:
                reply = await asyncio.wait_for(answered, timeout_s)
            except TimeoutError:
                raise TaskTimeout(f"no worker of the 'predict' queue answered within {timeout_s:g} s") from None
        finally:
            self.pending.pop(msg_id, None)
        return unwrap(as_lists(reply))

    async def _listen(self, pubsub: PubSub) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is None or message["type"] != "message":
                    continue
                try:
                    answer = unpack(message["data"])
                except ValueError:  # not ours: nothing waits for it
                    continue
                waiting = self.pending.get(answer["id"])
                if waiting is not None and not waiting.done():  # else its caller has given up
                    waiting.set_result(answer["reply"])
        except (RedisError, OSError) as exc:  # the broker went away: answers in flight are lost
            for waiting in self.pending.values():
                if not waiting.done():
                    waiting.set_exception(unavailable(exc))
        finally:
            await pubsub.aclose()

    async def close(self) -> None:
        if self._listening is not None:
            self._listening.cancel()
        for client in (self._client, self._listener):
            if client is not None:
                await client.aclose()
