"""An idle worker sleeps: a consumer bootstep that takes a 1 s timer out of Celery's event loop.

With nothing to do, a worker's main thread waits in kombu's hub (epoll) for the BRPOP
reply (at most ``polling_interval`` later, jobs/queue.py) or the next timer. kombu's Redis
transport registers a 1 s timer that refreshes the binding tables of expiring queues: the
worker woke every second for it. The only expiring queue is Celery's remote-control
mailbox, which this service does not use (worker_enable_remote_control is off), so with no
such queue the timer is cancelled. The transport's other timers run every 25–300 s.

A stop request does not need the timer either: Celery's signal handler sets a flag that the
loop reads when the pending BRPOP returns, and closing the channel waits for that reply
anyway (a message popped by it must not be lost), so stopping takes up to
``polling_interval`` with or without it.
"""

from __future__ import annotations

from typing import Any

from celery import bootsteps


def drop_unused_timers(consumer: Any) -> None:
    """Cancel the transport's binding-expiry timer when no consumed queue expires."""
    cycle = getattr(getattr(consumer.connection, "transport", None), "cycle", None)
    tref = getattr(cycle, "_binding_expiry_tref", None)
    channels = getattr(cycle, "_channels", ())
    if tref is not None and not any(getattr(ch, "_expires", None) for ch in channels):
        tref.cancel()


class QuietLoop(bootsteps.StartStopStep):
    """Consumer step, started (again after a reconnect) just before the event loop runs."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, parent: Any) -> None:
        hub = getattr(parent, "hub", None)
        if hub is not None:  # the loop's first round: after the transport registered its timers
            hub.call_soon(drop_unused_timers, parent)
