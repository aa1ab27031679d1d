"""The worker process's state, built once when the worker starts (``worker.__main__``),
from its Settings — as ``create_app(settings)`` does for the api. Tasks read it with
``current()``; nothing is read from the environment at import time."""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from jobs.db import session_factory
from jobs.settings import Settings


@dataclass
class WorkerState:
    settings: Settings
    worker_id: str  # unique per process: host:pid
    sessions: sessionmaker[Session]
    # set when the worker is asked to shut down (SIGTERM / Ctrl-C): running jobs
    # checkpoint, go back to the queue and are resumed by the next worker
    shutdown: threading.Event = field(default_factory=threading.Event)
    beat_stop: threading.Event = field(default_factory=threading.Event)  # the worker heartbeat thread
    queues: list[str] = field(default_factory=list)
    _device: tuple[str, str | None] | None = None

    def device(self) -> tuple[str, str | None]:
        """(torch device, GPU name or None); torch is imported on first use only."""
        if self._device is None:
            import torch

            from worker.gpus import AUTO, auto_device

            name = self.settings.worker_device or ("cuda" if torch.cuda.is_available() else "cpu")
            if name == AUTO:  # one GPU per worker among replicas that see them all
                name = auto_device(self.settings.root / "gpu-locks")
            gpu = torch.cuda.get_device_name(torch.device(name)) if name.startswith("cuda") else None
            self._device = (name, gpu)
        return self._device


_state: WorkerState | None = None


def start(settings: Settings) -> WorkerState:
    """Build this process's state (once per worker process; again replaces it, for tests)."""
    global _state
    _state = WorkerState(settings=settings, worker_id=f"{socket.gethostname()}:{os.getpid()}",
                         sessions=session_factory(settings.db_url))
    return _state


def current() -> WorkerState:
    if _state is None:
        raise RuntimeError("the worker state is not built: call worker.state.start(settings) at worker start")
    return _state
