"""Waking the api's synchronous calls when their result is stored, instead of polling.

Celery's Redis result backend publishes each result on a channel named by its key
(``RedisBackend.set``: SET + PUBLISH in one pipeline). One pattern subscription and one
thread per api process turn those messages into Events; a waiting request reads its
result from the backend when woken. Celery's own ``AsyncResult.get`` drains a consumer
shared by all threads, which is not thread-safe. A missed message (Redis reconnecting)
costs a waiter one fallback read after ``FALLBACK_S``, never a lost result.
"""

from __future__ import annotations

import threading
import time

from celery import Celery

FALLBACK_S = 0.1


class ResultNotifier:
    def __init__(self, celery: Celery) -> None:
        self.backend = celery.backend
        prefix = self.backend.task_keyprefix
        self.prefix = prefix.decode() if isinstance(prefix, bytes) else str(prefix)
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def register(self, task_id: str) -> threading.Event:
        """Call before sending the task: its result cannot be published unseen."""
        event = threading.Event()
        with self._lock:
            self._events[task_id] = event
            if self._thread is None:
                self._thread = threading.Thread(target=self._listen, name="result-notifier", daemon=True)
                self._thread.start()
        return event

    def unregister(self, task_id: str) -> None:
        with self._lock:
            self._events.pop(task_id, None)

    def _listen(self) -> None:
        while True:
            try:
                pubsub = self.backend.client.pubsub(ignore_subscribe_messages=True)
                pubsub.psubscribe(f"{self.prefix}*")
                for message in pubsub.listen():
                    channel = message.get("channel")
                    key = channel.decode() if isinstance(channel, bytes) else str(channel)
                    with self._lock:
                        event = self._events.get(key[len(self.prefix):])
                    if event is not None:
                        event.set()
            except Exception:  # Redis went away: waiters fall back to reading meanwhile
                time.sleep(1.0)
