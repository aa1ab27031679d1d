"""This worker process's Prometheus metrics (prometheus-client, a registry of its own).

A worker serves no HTTP: at each heartbeat it writes ``exposition()`` (the text format)
into the job store (``worker_metrics`` table) and the api's ``/metrics`` re-exports it with
a ``worker`` label (app/metrics.py). So metrics work the same on the embedded broker and
on Redis, with workers on other machines, and without a port per worker.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
TIME_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

BATCH_REQUESTS = Histogram("dptensor_predict_batch_requests", "synchronous prediction requests coalesced into "
                           "one batch (one task, one forward pass per structure kind)", buckets=SIZE_BUCKETS,
                           registry=REGISTRY)
BATCH_FRAMES = Histogram("dptensor_predict_batch_frames", "frames in one coalesced prediction batch",
                         buckets=SIZE_BUCKETS, registry=REGISTRY)
QUEUE_WAIT = Histogram("dptensor_predict_queue_wait_seconds", "from the api sending a prediction batch to this "
                       "worker starting it (broker time; clocks of api and worker hosts)", buckets=TIME_BUCKETS,
                       registry=REGISTRY)
COMPUTE = Histogram("dptensor_predict_compute_seconds", "model time of one prediction batch",
                    buckets=TIME_BUCKETS, registry=REGISTRY)
REQUESTS = Counter("dptensor_predict_requests", "synchronous prediction requests answered, by outcome",
                   ["outcome"], registry=REGISTRY)
FRAMES = Counter("dptensor_predicted_frames", "frames predicted (synchronous calls and prediction jobs); "
                 "rate() of it is frames/s", ["source"], registry=REGISTRY)


def exposition() -> str:
    return generate_latest(REGISTRY).decode()
