"""``GET /metrics``: the service in the Prometheus text format (prometheus-client).

Three sources, one registry per app (docs/service.md, "Metrics"):

* this api process: requests and latency per route template, method and status (an ASGI
  middleware; the template, not the path, keeps the label set bounded);
* the job store and the broker, read at scrape time: jobs by kind and status, live
  workers and their last heartbeat, training steps/s of running trainings, queue depths;
* the workers: each writes its own registry's exposition into the job store at every
  heartbeat (worker/metrics.py: batch sizes, queue wait, frames predicted), re-exported
  here with a ``worker`` label. Workers are separate processes, maybe on other hosts and
  behind either broker; this needs no port per worker and no shared directory.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.timing import SPANS_KEY, START_KEY
from jobs.queue import QUEUES, TaskQueue
from jobs.settings import Settings
from jobs.store import live_worker_metrics, live_workers
from jobs.tables import Job

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class HttpMetrics:
    """ASGI middleware: one count and one latency observation per HTTP request."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry) -> None:
        self.app = app
        self.requests = Counter("dptensor_http_requests", "HTTP requests by route template, method and status",
                                ["route", "method", "status"], registry=registry)
        self.latency = Histogram("dptensor_http_request_duration_seconds", "HTTP request latency (until the "
                                 "response is sent)", ["route", "method", "status"], buckets=LATENCY_BUCKETS,
                                 registry=registry)

    @staticmethod
    def template(scope: Scope) -> str:
        """The route template of a routed request (``/v1/models/{model_id}``): the path with
        each path parameter's value put back as ``{name}``. The route object itself is no
        help: FastAPI's included routers keep paths without their prefixes."""
        if scope.get("endpoint") is None:  # the router found no route
            return "<unmatched>"
        path = str(scope.get("path", ""))
        for name, value in (scope.get("path_params") or {}).items():
            path = re.sub(rf"/{re.escape(str(value))}(?=/|$)", f"/{{{name}}}", path, count=1)
        return path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = scope[START_KEY] = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                spans = scope.get(SPANS_KEY)
                if spans is not None:  # a prediction's breakdown (app/timing.py)
                    message["headers"] = [*message.get("headers", []), (b"server-timing", spans.header())]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            labels = (self.template(scope), scope["method"], str(status))
            self.requests.labels(*labels).inc()
            self.latency.labels(*labels).observe(time.perf_counter() - start)


def queue_depths(queue: TaskQueue) -> dict[str, int]:
    """Messages waiting in each queue (kombu's passive declare works on Redis and SQLite)."""
    depths: dict[str, int] = {}
    with queue.celery.connection_for_read() as conn:
        channel = conn.default_channel
        for name in QUEUES:
            try:
                depths[name] = int(channel.queue_declare(queue=name, passive=True).message_count)
            except Exception:  # Redis drops an empty list's key: the queue "does not exist"
                depths[name] = 0
    return depths


def merged(snapshots: list[tuple[str, str]]) -> Iterator[Metric]:
    """The workers' expositions as one family per metric name (a name may appear only once
    in a scrape), each sample labelled with its worker."""
    families: dict[str, Metric] = {}
    for worker, text in snapshots:
        for family in text_string_to_metric_families(text):
            out = families.setdefault(family.name, Metric(family.name, family.documentation, family.type,
                                                          family.unit))
            out.samples.extend(Sample(s.name, {**s.labels, "worker": worker}, s.value, s.timestamp, s.exemplar)
                               for s in family.samples)
    yield from families.values()


class ServiceCollector(Collector):
    """Read at each scrape: the job store, the broker, the workers' own metrics."""

    def __init__(self, sessions: sessionmaker[Session], queue: TaskQueue, settings: Settings) -> None:
        self.sessions, self.queue, self.settings = sessions, queue, settings

    def collect(self) -> Iterator[Metric]:
        with self.sessions() as session:
            jobs = GaugeMetricFamily("dptensor_jobs", "jobs by kind and status", labels=["kind", "status"])
            for kind, status, n in session.execute(select(Job.kind, Job.status, func.count())
                                                   .group_by(Job.kind, Job.status)):
                jobs.add_metric([kind, status], n)
            yield jobs
            rate = GaugeMetricFamily("dptensor_training_steps_per_second", "running trainings' speed",
                                     labels=["job_id"])
            for job_id, steps_per_s in session.execute(select(Job.id, Job.rate).where(
                    Job.kind == "train", Job.status == "running", Job.rate.is_not(None))):
                rate.add_metric([job_id], float(steps_per_s or 0.0))
            yield rate
            beat = GaugeMetricFamily("dptensor_worker_last_heartbeat_timestamp_seconds",
                                     "live workers' last heartbeat (Unix time)", labels=["worker", "queues", "device"])
            for w in live_workers(session, self.settings.stale_after_s):
                beat.add_metric([w.id, ",".join(w.queues), w.device], w.heartbeat_at.replace(tzinfo=UTC).timestamp())
            yield beat
            snapshots = [(w.id, text) for w, text in live_worker_metrics(session, self.settings.stale_after_s)]
        depth = GaugeMetricFamily("dptensor_queue_depth", "messages waiting in each broker queue", labels=["queue"])
        try:
            for name, n in queue_depths(self.queue).items():
                depth.add_metric([name], n)
        except Exception:  # broker down: no depth series rather than no /metrics
            pass
        yield depth
        yield from merged(snapshots)


def install_metrics(app: FastAPI, sessions: sessionmaker[Session], queue: TaskQueue, settings: Settings) -> None:
    registry = CollectorRegistry()
    registry.register(ServiceCollector(sessions, queue, settings))
    app.add_middleware(HttpMetrics, registry=registry)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """Prometheus scrape endpoint (no token: counts and timings only, no user data)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
