"""When the api's batcher sends a batch (app/batching.py). The worker side is stood in for
by a sender that holds each batch until the test lets it go, so the order of events is
the test's, not the clock's; tests/e2e/test_serving.py runs the same batcher against a
real worker (and checks that coalesced answers equal one-by-one answers)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from app.batching import Batcher
from jobs.settings import load_settings


class Worker:
    """Records each batch sent and answers it when released: each request gets its own
    structures back, so a mixed-up answer shows."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.release: list[asyncio.Event] = []
        self.fail: Exception | None = None

    async def __call__(self, payload: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        self.batches.append(payload["requests"])
        gate = asyncio.Event()
        self.release.append(gate)
        await gate.wait()
        if self.fail is not None:
            raise self.fail
        return {"ok": True, "answers": [{"ok": True, "echo": r["structures"]} for r in payload["requests"]]}


def batcher(tmp_path: Path, worker: Worker, **settings: Any) -> Batcher:
    return Batcher(worker, load_settings(data_dir=tmp_path, **settings))


def request(i: int, frames: int = 1) -> dict[str, Any]:
    return {"structures": [f"r{i}.{k}" for k in range(frames)], "derivatives": False}


async def until(what: str, condition: Callable[[], bool]) -> None:
    """Let the event loop run until ``condition`` holds (a deadline, not a sleep, decides failure)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5.0
    while not condition():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def test_a_lone_request_leaves_at_once_whatever_the_window(tmp_path: Path) -> None:
    async def scenario() -> None:
        worker = Worker()
        b = batcher(tmp_path, worker, predict_batch_wait_ms=1000)
        task = asyncio.create_task(b.predict("m", request(0), 1, 3, 30))
        for _ in range(3):  # a few turns of the loop, far less than the window
            await asyncio.sleep(0)
        assert len(worker.batches) == 1
        worker.release[0].set()
        envelope, _ = await task
        assert envelope["echo"] == ["r0.0"]

    run(scenario)


def test_requests_arriving_while_a_batch_is_in_flight_wait_for_it_then_half_of_those_held_leave(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        worker = Worker()
        b = batcher(tmp_path, worker, predict_batch_wait_ms=0, predict_batch_in_flight=1)
        first = asyncio.create_task(b.predict("m", request(0), 1, 3, 30))
        await until("the first batch", lambda: len(worker.batches) == 1)
        rest = [asyncio.create_task(b.predict("m", request(i, frames=i), i, 3 * i, 30)) for i in range(1, 6)]
        await asyncio.sleep(0.05)
        assert len(worker.batches) == 1  # one batch in flight at most: the others wait for it
        worker.release[0].set()
        await until("the second batch", lambda: len(worker.batches) == 2)
        # 6 held (the answered one too): 3 leave, in order of arrival
        assert [r["structures"] for r in worker.batches[1]] == [request(i, i)["structures"] for i in range(1, 4)]
        worker.release[1].set()
        await until("the third batch", lambda: len(worker.batches) == 3)
        assert [r["structures"] for r in worker.batches[2]] == [request(i, i)["structures"] for i in (4, 5)]
        worker.release[2].set()
        assert (await first)[0]["echo"] == ["r0.0"]
        for i, task in enumerate(rest, start=1):  # each its own answer, not a batch-mate's
            assert (await task)[0]["echo"] == request(i, i)["structures"]

    run(scenario)


def test_clients_that_send_again_when_answered_split_into_two_equal_batches(tmp_path: Path) -> None:
    """16 clients in a closed loop: the first request leaves alone to the idle worker and
    15 gather behind it; when it is answered only 8 of them leave (half of the 16 held), so
    that the first client's next request joins the other 7 — batches of 8 and 8 from then
    on, not 1 and 15."""
    async def scenario() -> None:
        worker = Worker()
        b = batcher(tmp_path, worker, predict_batch_wait_ms=0, predict_batch_in_flight=1)
        sent = 0

        async def client(rounds: int) -> None:
            nonlocal sent
            for _ in range(rounds):
                i, sent = sent, sent + 1
                envelope, _ = await b.predict("m", request(i), 1, 3, 30)
                assert envelope["echo"] == [f"r{i}.0"]

        clients = [asyncio.create_task(client(3))]
        await until("the first batch", lambda: len(worker.batches) == 1)
        clients += [asyncio.create_task(client(3)) for _ in range(15)]
        for k in range(4):
            await until("16 requests held", lambda: b._held["m"] == 16)  # the answered ones are back
            worker.release[k].set()
            await until(f"batch {k + 2}", lambda k=k: len(worker.batches) == k + 2)
        assert [len(batch) for batch in worker.batches] == [1, 8, 8, 8, 8]
        while not all(c.done() for c in clients):  # the rest of the rounds, answered as they come
            for gate in worker.release:
                gate.set()
            await asyncio.sleep(0)
        await asyncio.gather(*clients)
        assert sent == 48

    run(scenario)


def test_a_batch_leaves_after_its_window_while_fewer_than_the_limit_are_in_flight(tmp_path: Path) -> None:
    async def scenario() -> None:
        worker = Worker()
        b = batcher(tmp_path, worker, predict_batch_wait_ms=20, predict_batch_in_flight=2)
        tasks = [asyncio.create_task(b.predict("m", request(0), 1, 3, 30))]
        await until("the first batch", lambda: len(worker.batches) == 1)
        tasks += [asyncio.create_task(b.predict("m", request(i), 1, 3, 30)) for i in (1, 2)]
        # the first is still unanswered: the second leaves when its window ends
        await until("the second batch", lambda: len(worker.batches) == 2)
        assert len(worker.batches[1]) == 2
        for gate in worker.release:
            gate.set()
        assert [(await t)[0]["echo"] for t in tasks] == [["r0.0"], ["r1.0"], ["r2.0"]]

    run(scenario)


def test_a_batch_whose_window_timer_fired_early_still_leaves_when_the_worker_is_free(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window's timer runs on the loop's clock, the window's end is read on
    time.monotonic(); they may differ (uvloop's clock is cached per loop turn). A timer
    that fired while the batch in flight was unanswered, then an answer that came just
    before the window's end by the other clock, left the batch open with nothing to send
    it: its requests waited for ever once no new request came (the load client's last)."""
    import time as real_time
    from types import SimpleNamespace

    from app import batching

    lag = 0.0
    monkeypatch.setattr(batching, "time", SimpleNamespace(time=real_time.time,
                                                          monotonic=lambda: real_time.monotonic() - lag))

    async def scenario() -> None:
        nonlocal lag
        worker = Worker()
        b = batcher(tmp_path, worker, predict_batch_wait_ms=50, predict_batch_in_flight=1)
        first = asyncio.create_task(b.predict("m", request(0), 1, 3, 30))
        await until("the first batch", lambda: len(worker.batches) == 1)
        second = asyncio.create_task(b.predict("m", request(1), 1, 3, 30))
        await asyncio.sleep(0)
        lag = 0.04  # the batcher's clock now reads 40 ms less than the loop's
        await asyncio.sleep(0.07)  # the window's timer fires while the first batch is in flight
        assert len(worker.batches) == 1
        worker.release[0].set()  # by the batcher's clock ~30 of the 50 ms have passed
        await until("the second batch", lambda: len(worker.batches) == 2)
        worker.release[1].set()
        assert [(await t)[0]["echo"] for t in (first, second)] == [["r0.0"], ["r1.0"]]

    run(scenario)


def test_a_full_batch_leaves_at_once_and_the_next_request_opens_another(tmp_path: Path) -> None:
    async def scenario() -> None:
        worker = Worker()
        b = batcher(tmp_path, worker, predict_batch_wait_ms=1000, predict_batch_in_flight=1,
                    predict_batch_max_frames=4)
        tasks = [asyncio.create_task(b.predict("m", request(0), 1, 3, 30))]
        await until("the first batch", lambda: len(worker.batches) == 1)
        tasks += [asyncio.create_task(b.predict("m", request(i, 2), 2, 6, 30)) for i in (1, 2, 3)]
        await until("the full batch", lambda: len(worker.batches) == 2)  # 2 + 2 frames: full, window or not
        assert [r["structures"] for r in worker.batches[1]] == [request(1, 2)["structures"],
                                                                 request(2, 2)["structures"]]
        for gate in worker.release:
            gate.set()
        await until("the last batch", lambda: len(worker.batches) == 3)  # request 3, alone
        worker.release[2].set()
        assert (await tasks[3])[0]["echo"] == request(3, 2)["structures"]

    run(scenario)


def test_a_batch_that_never_ran_fails_each_of_its_requests(tmp_path: Path) -> None:
    async def scenario() -> None:
        worker = Worker()
        worker.fail = RuntimeError("broker gone")
        b = batcher(tmp_path, worker, predict_batch_wait_ms=0, predict_batch_in_flight=1)
        first = asyncio.create_task(b.predict("m", request(0), 1, 3, 30))
        await until("the first batch", lambda: len(worker.batches) == 1)
        others = [asyncio.create_task(b.predict("m", request(i), 1, 3, 30)) for i in (1, 2)]
        await asyncio.sleep(0)
        worker.release[0].set()
        await until("the second batch", lambda: len(worker.batches) == 2)
        worker.release[1].set()
        for task in [first, *others]:
            with pytest.raises(RuntimeError, match="broker gone"):
                await task

    run(scenario)


def test_without_batching_every_request_is_a_batch_of_its_own(tmp_path: Path) -> None:
    async def scenario() -> None:
        worker = Worker()
        b = batcher(tmp_path, worker, predict_batching=False)
        tasks = [asyncio.create_task(b.predict("m", request(i), 1, 3, 30)) for i in range(4)]
        await until("four batches", lambda: len(worker.batches) == 4)
        for gate in worker.release:
            gate.set()
        assert [(await t)[0]["echo"] for t in tasks] == [[f"r{i}.0"] for i in range(4)]

    run(scenario)


def test_models_are_batched_apart(tmp_path: Path) -> None:
    async def scenario() -> None:
        worker = Worker()
        b = batcher(tmp_path, worker, predict_batch_wait_ms=0, predict_batch_in_flight=1)
        tasks = [asyncio.create_task(b.predict(m, request(i), 1, 3, 30)) for i, m in enumerate("abab")]
        await until("one batch per model", lambda: len(worker.batches) == 2)
        for gate in worker.release:
            gate.set()
        await until("the second round", lambda: len(worker.batches) == 4)
        for gate in worker.release:
            gate.set()
        assert [(await t)[0]["echo"] for t in tasks] == [[f"r{i}.0"] for i in range(4)]

    run(scenario)
