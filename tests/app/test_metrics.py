"""GET /metrics (the api's own series and those read from the job store at scrape time);
tests/e2e/test_serving.py scrapes a service with a real worker and broker."""

from __future__ import annotations

from kit import Users
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy import select

from jobs.db import session_scope
from jobs.settings import Settings
from jobs.tables import Job, User


def scrape(users: Users) -> list[Sample]:
    r = users.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return [s for family in text_string_to_metric_families(r.text) for s in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_http_counts_by_route_template_and_status(users: Users, model_id: str) -> None:
    for _ in range(3):
        assert users.client.get(f"/v1/models/{model_id}", headers=users.h("alice")).status_code == 200
    assert users.client.get("/v1/models/mdl-nope", headers=users.h("alice")).status_code == 404
    assert users.client.get("/v1/models", headers=users.h("bob")).status_code == 200
    assert users.client.get("/no/such/page").status_code == 404
    m = scrape(users)
    route = "/v1/models/{model_id}"
    assert value(m, "dptensor_http_requests_total", route=route, method="GET", status="200") == 3
    assert value(m, "dptensor_http_requests_total", route=route, method="GET", status="404") == 1
    assert value(m, "dptensor_http_request_duration_seconds_count", route=route, status="200") == 3
    assert value(m, "dptensor_http_requests_total", route="<unmatched>", status="404") == 1
    # paths with ids never become labels: the label set stays bounded
    assert not any("mdl-" in s.labels.get("route", "") for s in m if s.name == "dptensor_http_requests_total")


def test_jobs_training_speed_and_queues_from_the_store(users: Users, settings: Settings) -> None:
    with session_scope(settings.db_url) as s:
        alice = s.scalars(select(User).where(User.name == "alice")).one()
        s.add_all([Job(id="job-run", kind="train", status="running", owner_id=alice.id, queue="train", inputs={},
                       rate=12.5),
                   Job(id="job-q1", kind="predict", status="queued", owner_id=alice.id, queue="batch", inputs={}),
                   Job(id="job-q2", kind="predict", status="queued", owner_id=alice.id, queue="batch", inputs={})])
    m = scrape(users)
    assert value(m, "dptensor_jobs", kind="train", status="running") == 1
    assert value(m, "dptensor_jobs", kind="predict", status="queued") == 2
    assert value(m, "dptensor_training_steps_per_second", job_id="job-run") == 12.5
    # the embedded broker's queues (no worker here: nothing was sent, all empty)
    assert {s.labels["queue"]: s.value for s in m if s.name == "dptensor_queue_depth"} == {
        "train": 0, "predict": 0, "batch": 0}
