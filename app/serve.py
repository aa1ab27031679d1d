"""``dptensor serve``: the api (uvicorn, in this process) plus worker processes, stopped
together. Workers get SIGTERM (Celery's warm shutdown: a running training checkpoints
and goes back to the queue), then SIGKILL after a grace period; they also die with
this process if it is killed outright (Linux parent-death signal), so nothing is
left orphaned."""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from app.embedded_broker import EmbeddedBroker, EmbeddedBrokerError
from jobs.queue import broker_kind
from jobs.settings import Settings

# One process per queue group: short synchronous predictions never wait behind a
# training or a batch job.
DEFAULT_WORKERS = ("train,batch", "predict")
STOP_GRACE_S = 60.0
SUPERVISE_EVERY_S = 5.0  # without pidfds (not Linux): a crashed worker is restarted within this


def _die_with_parent() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return preexec


def cpu_share(n_workers: int) -> dict[str, str]:
    """Thread settings for workers sharing this machine's cores. Each gets its share of
    the cores, and OpenMP threads sleep instead of spinning while they wait: with the
    default spinning, two busy processes whose thread pools together exceed the cores
    run small tensor ops tens of times slower. Values the user set are kept."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    share = {"OMP_NUM_THREADS": str(max(1, cores // max(1, n_workers))), "OMP_WAIT_POLICY": "PASSIVE"}
    return {k: v for k, v in share.items() if k not in os.environ}


class Workers:
    """Starts worker processes and restarts one that crashes (not one asked to stop)."""

    def __init__(self, settings: Settings, groups: list[str], device: str | None = None,
                 verbose: bool = False) -> None:
        self.groups = groups
        # quiet by default: warnings and errors only, no banner; --verbose: Celery's INFO log
        self.log_args = ["--loglevel", "INFO"] if verbose else ["--loglevel", "WARNING", "--quiet"]
        self.env = {**os.environ, **settings.env(), **cpu_share(len(groups))}
        if device:
            self.env["DPTENSOR_WORKER_DEVICE"] = device
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = threading.Event()
        self._stop_r, self._stop_w = os.pipe()  # wakes the supervisor when stopping
        self._watch = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)

    def _spawn(self, queues: str) -> None:
        cmd = [sys.executable, "-m", "worker", "--queues", queues, *self.log_args]
        self.procs[queues] = subprocess.Popen(cmd, env=self.env, start_new_session=True,
                                              preexec_fn=_die_with_parent())

    def start(self) -> None:
        for group in self.groups:
            self._spawn(group)
        self._watch.start()

    def _wait_for_an_exit(self) -> None:
        """Block until a worker exits or stop() is called: a pidfd per worker becomes readable
        when it exits, so an idle service has no supervisor wake-ups. Without pidfds, poll."""
        pidfds: list[int] = []
        try:
            for proc in self.procs.values():
                pidfds.append(os.pidfd_open(proc.pid))
        except (AttributeError, OSError):  # not Linux ≥ 5.3
            for fd in pidfds:
                os.close(fd)
            select.select([self._stop_r], [], [], SUPERVISE_EVERY_S)
            return
        try:
            select.select([*pidfds, self._stop_r], [], [])
        finally:
            for fd in pidfds:
                os.close(fd)

    def _supervise(self) -> None:
        restarts: list[float] = []
        while not self.stopping.is_set():
            self._wait_for_an_exit()
            for queues, proc in list(self.procs.items()):
                if proc.poll() is None or self.stopping.is_set():
                    continue
                restarts = [t for t in restarts if time.monotonic() - t < 60] + [time.monotonic()]
                if len(restarts) > 5:
                    print(f"dptensor serve: worker '{queues}' keeps crashing (exit {proc.returncode}); "
                          "not restarting it", file=sys.stderr, flush=True)
                    del self.procs[queues]
                    continue
                print(f"dptensor serve: worker '{queues}' exited with {proc.returncode}; restarting",
                      file=sys.stderr, flush=True)
                self._spawn(queues)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._stop_w, b"x")
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def serve(settings: Settings, *, workers: list[str], device: str | None = None, verbose: bool = False) -> int:
    """Quiet by default: the banner below, then warnings and errors only; ``verbose`` adds
    uvicorn's access log (a line per request — the page polls every second) and the
    workers' INFO log."""
    import uvicorn

    from app.main import create_app

    QuietServer = _quiet_server_class()

    app = create_app(settings)  # creates the data dir and tables before any worker starts
    first_token = _first_admin_token(settings)
    embedded = EmbeddedBroker(settings, preexec_fn=_die_with_parent()) if settings.embedded_broker else None
    if embedded is not None:
        try:
            embedded.start()
        except EmbeddedBrokerError as exc:
            print(f"dptensor serve: {exc}", file=sys.stderr, flush=True)
            return 2
    pool = Workers(settings, workers, device, verbose=verbose)
    pool.start()
    broker = broker_kind(settings) if settings.embedded_broker or settings.sqlite_broker else settings.broker
    print(f"dptensor: serving on http://{settings.host}:{settings.port}  (API docs: "
          f"http://{settings.host}:{settings.port}/docs)\n  data: {settings.root}\n  broker: {broker}\n"
          f"  auth: {settings.auth}\n  workers: {', '.join(workers) or 'none (--no-worker)'}", flush=True)
    saved = settings.root / "admin_token"
    if first_token is not None:
        print(f"  first start: admin token {first_token}\n  (also in {saved}; "
              "paste it into the page's token field or send 'Authorization: Bearer <token>')", flush=True)
    elif settings.auth == "token":
        where = f"the admin token made at the first start is in {saved}" if saved.is_file() else \
            "no admin token file (deleted?)"
        print(f"  tokens: {where}; more with 'dptensor token create --user NAME'", flush=True)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal: turn that
    # into an exception here so the workers are always stopped and the exit code is 0
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        # open keep-alive connections (a page polling) must not hold the shutdown: 2 s at most
        QuietServer(uvicorn.Config(app, host=settings.host, port=settings.port, access_log=verbose,
                                   log_level="info" if verbose else "warning", timeout_graceful_shutdown=2)).run()
    except _Stop:
        pass
    finally:
        pool.stop()
        if embedded is not None:
            embedded.stop()  # after the workers: a stopping worker puts its job back on the queue
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _quiet_server_class() -> type:
    import asyncio
    from email.utils import formatdate

    import uvicorn

    class Connections(set[Any]):
        """uvicorn's set of open connections, calling back when one opens."""

        def __init__(self, on_open: Callable[[], None]) -> None:
            super().__init__()
            self.on_open = on_open

        def add(self, connection: Any) -> None:
            super().add(connection)
            self.on_open()

    class QuietServer(uvicorn.Server):
        """uvicorn's server without its idle wake-ups. Its loop polls ten times a second for
        a stop request and refreshes the Date header; this one ticks once a second while
        connections are open and otherwise sleeps until a connection opens (the header is
        refreshed then) or a stop is asked for (a signal wakes it), at most IDLE_TICK_S.
        Idle is idle: the serve tree stays under 1% of a core with nothing to do."""

        IDLE_TICK_S = 60.0
        _wake: asyncio.Event | None = None
        _loop: asyncio.AbstractEventLoop | None = None

        def __init__(self, config: uvicorn.Config) -> None:
            super().__init__(config)
            self.server_state.connections = Connections(self._connection_opened)

        def _connection_opened(self) -> None:  # in the event loop (the protocol's connection_made)
            date = [(b"date", formatdate(usegmt=True).encode())] if self.config.date_header else []
            self.server_state.default_headers = date + self.config.encoded_headers
            if self._wake is not None:
                self._wake.set()

        async def main_loop(self) -> None:
            self._wake, self._loop = asyncio.Event(), asyncio.get_running_loop()
            counter = 0
            while not await self.on_tick(counter):
                counter = (counter + 10) % 864000  # on_tick refreshes the Date header at multiples of 10
                tick = 1.0 if self.server_state.connections else self.IDLE_TICK_S
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), tick)
                self._wake.clear()

        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            if self._loop is not None and self._wake is not None:
                self._loop.call_soon_threadsafe(self._wake.set)

    return QuietServer


def _first_admin_token(settings: Settings) -> str | None:
    """Create (once) and save an admin token for a fresh token-auth service."""
    if settings.auth != "token":
        return None
    from app.auth import ensure_first_admin
    from jobs.db import session_scope

    with session_scope(settings.db_url) as session:
        token = ensure_first_admin(session)
    if token is not None:
        path = settings.root / "admin_token"
        path.write_text(token + "\n")
        path.chmod(0o600)
    return token


class _Stop(Exception):
    pass


def _raise_stop(*_: object) -> None:
    raise _Stop
