"""Helpers shared by the service tests (tests/app, tests/worker and tests/e2e put this
folder on sys.path): example data, a tiny training input, real processes, polling."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np

WATER = Path(__file__).resolve().parents[3] / "shared" / "data" / "water_tensor"
if not WATER.is_dir():  # CI: shared/ beside the clone
    WATER = Path("/work/shared/data/water_tensor")
DEEPMD_REF = WATER.parent / "deepmd_reference"
T = TypeVar("T")


def water_archive(dest: Path) -> Path:
    """The dipole example (4 systems) as a .tar.gz, the way a user would upload it."""
    path = dest / "water_dipole.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(WATER / "dipole" / "training_data_reformat", arcname="train")
        tar.add(WATER / "dipole" / "validation_data_reformat", arcname="valid")
    return path


def tiny_input(train: str, valid: str | None, *, numb_steps: int = 20, save_freq: int = 10) -> dict[str, Any]:
    """The example dipole input, shrunk so that a training takes seconds on a CPU."""
    raw: dict[str, Any] = json.loads((WATER / "dipole" / "dipole_input_torch.json").read_text())
    raw["model"]["descriptor"].update(neuron=[4, 8], axis_neuron=4, sel=[20, 40])
    raw["model"]["fitting_net"]["neuron"] = [8]
    raw["training"]["training_data"]["systems"] = [train]
    raw["training"]["training_data"]["batch_size"] = 1
    if valid is None:
        del raw["training"]["validation_data"]
    else:
        raw["training"]["validation_data"].update(systems=[valid], numb_btch=1)
    raw["training"].update(numb_steps=numb_steps, disp_freq=5, save_freq=save_freq)
    return raw


def rotating_water_xyz(nframes: int, dt_fs: float, nu_cm: float) -> bytes:
    """XYZ frames of one water molecule turning rigidly about z at wavenumber ``nu_cm``: an
    equivariant dipole model's dipole turns with it, so the IR peak is at ``nu_cm``."""
    mol = [("O", 0.0, 0.0, 0.0), ("H", 0.586, 0.757, 0.0), ("H", 0.586, -0.757, 0.0)]  # bisector along x
    cx = sum(x for _, x, _, _ in mol) / 3
    frames = []
    for i in range(nframes):
        phase = 2 * math.pi * 2.99792458e-5 * nu_cm * dt_fs * i  # c in cm/fs
        c, s = math.cos(phase), math.sin(phase)
        rows = [f"{e} {5 + c * (x - cx) - s * y:.10f} {5 + s * (x - cx) + c * y:.10f} {z:.10f}\n" for e, x, y, z in mol]
        frames.append(f"3\nframe {i}\n" + "".join(rows))
    return "".join(frames).encode()


def water_runs_archive(n: int, frames: int) -> bytes:
    """A dataset archive (.tar.gz bytes) of n independent "runs" run0 … run<n-1>: systems of
    the water example (192 atoms), each ``frames`` frames long (the example's 80 frames
    again and again, moved a little each time) — many trajectories for spectrum jobs."""
    src = WATER / "dipole" / "validation_data_reformat" / "global_system"
    coord = np.load(src / "set.000" / "coord.npy")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for k in range(n):
            reps = -(-frames // coord.shape[0])
            noise = np.random.default_rng(k).normal(scale=0.01, size=(reps * coord.shape[0], coord.shape[1]))
            raw = io.BytesIO()
            np.save(raw, np.tile(coord, (reps, 1))[:frames] + noise[:frames])
            _add_bytes(tar, f"run{k}/set.000/coord.npy", raw.getvalue())
            for name in ("type.raw", "type_map.raw", "nopbc"):
                _add_bytes(tar, f"run{k}/{name}", (src / name).read_bytes())
    return buf.getvalue()


def _add_bytes(tar: tarfile.TarFile, name: str, content: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    tar.addfile(info, io.BytesIO(content))


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 120.0, every: float = 0.2) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(data_dir: Path, **values: Any) -> dict[str, str]:
    """A clean environment for service processes: DPTENSOR_* from the arguments only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPTENSOR_")}
    env.update({"DPTENSOR_DATA_DIR": str(data_dir), "DPTENSOR_HEARTBEAT_INTERVAL_S": "0.5",
                "DPTENSOR_STALE_AFTER_S": "3", "DPTENSOR_JANITOR_INTERVAL_S": "0.5",
                "DPTENSOR_PROGRESS_EVERY_S": "0.2", "DPTENSOR_WORKER_DEVICE": "cpu"})
    env.update({f"DPTENSOR_{k.upper()}": str(v) for k, v in values.items()})
    return env


def dptensor(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "ab")  # noqa: SIM115 - owned by the child process
    return subprocess.Popen([sys.executable, "-m", "app.cli", *args], env=env, stdout=out, stderr=subprocess.STDOUT)


def create_token(env: dict[str, str], user: str) -> str:
    """A bearer token for ``user`` (``dptensor token create``, the admin's command)."""
    out = subprocess.run([sys.executable, "-m", "app.cli", "token", "create", "--user", user], env=env,
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 = state)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc)."""
    kids: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(int(stat.parent.name))
        if fields is not None:
            kids.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(kids.get(p, []))
    return tree


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User + system CPU time of each process (all its threads), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in pids:
        fields = _stat(pid)
        if fields is not None:
            out[pid] = (int(fields[11]) + int(fields[12])) / tick
    return out


def process_name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    words = [w for a in argv if a for w in a.decode(errors="replace").split()]  # redis-server rewrites its argv
    return " ".join([Path(words[0]).name, *words[1:4]]) if words else str(pid)


def tree_cpu_share(pid: int, window_s: float) -> tuple[float, dict[str, float]]:
    """CPU used by ``pid`` and its descendants over ``window_s`` seconds of wall time, as a
    percentage of one core: (total, {process: share}). CPU time comes from /proc; a process
    started during the window counts from its start."""
    before = cpu_seconds(process_tree(pid))
    t0 = time.monotonic()
    time.sleep(window_s)
    after = cpu_seconds(process_tree(pid))
    wall = time.monotonic() - t0
    shares = {f"{process_name(p)} [{p}]": 100 * (t - before.get(p, 0.0)) / wall for p, t in after.items()}
    return sum(shares.values()), shares


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Api:
    """A client for a running service."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url, headers=headers, timeout=60.0)

    def ready(self) -> dict[str, Any] | None:
        try:
            r = self.http.get("/v1/health/ready")
        except httpx.TransportError:
            return None
        return r.json() if r.status_code == 200 else None

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/jobs/{job_id}")
        r.raise_for_status()
        return r.json()  # type: ignore[no-any-return]

    def wait_job(self, job_id: str, statuses: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
                 timeout: float = 180.0) -> dict[str, Any]:
        return wait_for(f"job {job_id} to reach {statuses}",
                        lambda: (j if (j := self.job(job_id))["status"] in statuses else None), timeout)


@dataclass
class Running:
    """An api process and one worker process (``api_and_worker``); ``server`` may be
    replaced (a restarted api): the one held at the end is stopped."""

    api: Api
    env: dict[str, str]
    data: Path
    ready: dict[str, Any]
    server: subprocess.Popen[bytes]
    worker: subprocess.Popen[bytes]


@contextmanager
def api_and_worker(tmp_path: Path, queues: str, *, user: str | None = "alice", ready_timeout: float = 300.0,
                   **settings: Any) -> Iterator[Running]:
    """``dptensor serve --no-worker`` and ``dptensor worker --queues QUEUES`` on a free port,
    data in tmp_path/data, logs api.log / worker.log; DPTENSOR_* from ``settings`` (e.g.
    broker_url=...). A token for ``user``, or no auth with user=None. Yields once the
    service is ready (a deadline, not a pause: imports take minutes on a loaded machine)."""
    data = tmp_path / "data"
    port = free_port()
    if user is None:
        settings.setdefault("auth", "none")
    env = service_env(data, port=port, **settings)
    api = Api(f"http://127.0.0.1:{port}", create_token(env, user) if user else None)
    server = dptensor("serve", "--no-worker", env=env, log=tmp_path / "api.log")
    worker = dptensor("worker", "--queues", queues, env=env, log=tmp_path / "worker.log")
    run = None
    try:
        ready = wait_for("service ready", lambda: (r if (r := api.ready()) and r["ready"] else None),
                         timeout=ready_timeout)
        run = Running(api, env, data, ready, server, worker)
        yield run
    finally:
        stop(run.server if run else server)
        stop(worker)


def upload_and_train(api: Api, archive: Path, **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Upload the water archive and submit a tiny training; returns (dataset, job)."""
    r = api.http.post("/v1/datasets", files={"file": ("water.tgz", archive.read_bytes())})
    assert r.status_code == 201, r.text
    ds = r.json()
    r = api.http.post("/v1/jobs/train", json=tiny_input(f"dataset:{ds['id']}/train", f"dataset:{ds['id']}/valid",
                                                        **kw))
    assert r.status_code == 202, r.text
    return ds, r.json()


class Users:
    """An in-process client (TestClient) and a token per user name."""

    def __init__(self, client: Any, tokens: dict[str, str]) -> None:
        self.client, self.tokens = client, tokens

    def h(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}"}
