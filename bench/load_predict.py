"""Load check (not a test): concurrent small synchronous predictions; requests/s, latency
percentiles and the predict worker's mean batch size (from the service's /metrics).

The whole matrix from one run — it starts a `dptensor serve --no-auth` per configuration
(embedded default broker and Redis; batching on and off), uploads the model, and sends
3-atom and 192-atom single-frame requests from 1, 16 and 64 clients::

    python bench/load_predict.py --matrix --redis-url redis://127.0.0.1:6379/8 [--repeat 2] [--baseline-rev bf7260d]

``--baseline-rev`` also serves an older revision (a temporary git worktree, this virtualenv,
Redis database 9 here) and measures its 16-client cells in the same rotation, so that the
"3x before" target is a ratio within one run.

For each batching setting the embedded and the Redis service run side by side, each cell
measured on one and then the other. At the end: the one-client breakdown (Server-Timing
spans) and the issue's targets against this run's medians.

Against a service already running (one configuration)::

    python bench/load_predict.py --url http://127.0.0.1:8000 \\
        --checkpoint ../shared/data/deepmd_reference/dipole/model_slim.pt --concurrency 16 --atoms 192
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from http_load import Connection, HttpError
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
WATER = {"symbols": ["O", "H", "H"], "positions": [[0.0, 0.0, 0.0], [0.757, 0.586, 0.0], [-0.757, 0.586, 0.0]]}
FRAME = ROOT.parent / "shared/data/water_tensor/dipole/validation_data_reformat/global_system"
CHECKPOINT = ROOT.parent / "shared/data/deepmd_reference/dipole/model_slim.pt"


def structure(atoms: int) -> dict[str, Any]:
    if atoms == 3:
        return WATER
    coord = np.load(FRAME / "set.000" / "coord.npy")[0].reshape(-1, 3)[:atoms]
    types = np.loadtxt(FRAME / "type.raw", dtype=int)[:atoms]
    return {"types": types.tolist(), "positions": coord.tolist()}


@dataclass
class Result:
    requests: int
    wall_s: float
    latencies: list[float]
    errors: dict[int, int]
    mean_batch: float | None = None  # requests per batch the predict worker ran
    server_ms: float | None = None  # mean time inside the api (request in → response out)
    queue_wait_ms: float | None = None  # mean broker time of a batch (api send → worker start)
    compute_ms: float | None = None  # mean model time of a batch
    spans: dict[str, float] = field(default_factory=dict)  # mean Server-Timing spans (ms) per request

    HEADER = "    req/s   p50 ms   p99 ms  batch   api ms  queue ms  model ms"

    @property
    def rps(self) -> float:
        return self.requests / self.wall_s

    def quantile(self, pct: int) -> float:
        """Latency percentile in ms."""
        q = statistics.quantiles(self.latencies, n=100) if len(self.latencies) > 1 else [self.latencies[0]] * 99
        return 1e3 * q[pct - 1]

    def row(self) -> str:
        q = statistics.quantiles(self.latencies, n=100) if len(self.latencies) > 1 else [self.latencies[0]] * 99

        def f(x: float | None, width: int) -> str:
            return f"{x:{width}.1f}" if x is not None else " " * (width - 1) + "-"

        return (f"{self.requests / self.wall_s:9.1f} {q[49] * 1e3:8.1f} {q[98] * 1e3:8.1f} {f(self.mean_batch, 6)} "
                f"{f(self.server_ms, 8)} {f(self.queue_wait_ms, 9)} {f(self.compute_ms, 9)}  {self.errors or ''}")


SPANS = ("parse", "check", "batch", "queue", "model", "worker", "return", "respond", "app")


def breakdown_header() -> str:
    return f"{'client':>7} " + " ".join(f"{n:>7}" for n in SPANS) + "   http+client"


def breakdown_row(res: Result) -> str:
    """Mean ms per request: the client's latency, the service's Server-Timing spans
    (app/timing.py) and what is left for HTTP, the kernel and the client."""
    total = 1e3 * statistics.fmean(res.latencies)
    cells = " ".join(f"{res.spans[n]:7.2f}" if n in res.spans else "      -" for n in SPANS)
    rest = total - res.spans["app"] if "app" in res.spans else float("nan")
    return f"{total:7.2f} {cells}   {rest:11.2f}"


def parse_server_timing(value: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in value.split(","):
        name, _, dur = item.strip().partition(";dur=")
        if dur:
            out[name] = out.get(name, 0.0) + float(dur)
    return out


SERVER_SERIES = ("dptensor_predict_batch_requests_sum", "dptensor_predict_batch_requests_count",
                 "dptensor_predict_queue_wait_seconds_sum", "dptensor_predict_compute_seconds_sum",
                 "dptensor_http_request_duration_seconds_sum", "dptensor_http_request_duration_seconds_count")


def server_totals(text: str) -> dict[str, float]:
    """Sums over workers of the series the breakdown needs (the predict route only for http)."""
    total = dict.fromkeys(SERVER_SERIES, 0.0)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in total and (not s.name.startswith("dptensor_http")
                                    or s.labels.get("route", "").endswith("/predict")):
                total[s.name] += s.value
    return total


async def server_side(client: httpx.AsyncClient) -> dict[str, float] | None:
    r = await client.get("/metrics")
    return server_totals(r.text) if r.status_code == 200 else None


async def measure(client: httpx.AsyncClient, model: str, atoms: int, requests: int, concurrency: int,
                  heartbeat_s: float) -> Result:
    """``concurrency`` clients, each on its own keep-alive connection (bench/http_load.py),
    send ``requests`` predictions in all; /metrics before and after gives the server side."""
    body = json.dumps({"structures": [structure(atoms)]}).encode()
    conns = [Connection(str(client.base_url), dict(client.headers)) for _ in range(concurrency)]
    raw = conns[0].request_bytes("POST", f"/v1/models/{model}/predict", body)
    for _ in range(3):  # model load and caches on the worker
        status, _, text = await conns[0].send(raw)
        if status != 200:
            raise RuntimeError(f"warm-up prediction: HTTP {status}: {text[:300]!r}")
    await asyncio.gather(*(c.send(raw) for c in conns))  # every connection open before the clock starts
    await asyncio.sleep(heartbeat_s * 1.5)  # the worker publishes its metrics at each heartbeat
    before = await server_side(client)
    latencies: list[float] = []
    errors: dict[int, int] = {}
    spans: dict[str, float] = {}
    todo = iter(range(requests))

    async def user(conn: Connection) -> None:
        for _ in todo:
            t0 = time.perf_counter()
            try:
                status, headers, _ = await conn.send(raw)
            except HttpError:
                status, headers = 0, {}
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                errors[status] = errors.get(status, 0) + 1
            for name, ms in parse_server_timing(headers.get("server-timing", "")).items():
                spans[name] = spans.get(name, 0.0) + ms

    t0 = time.perf_counter()
    await asyncio.gather(*(user(c) for c in conns))
    wall = time.perf_counter() - t0
    for c in conns:
        await c.close()
    await asyncio.sleep(heartbeat_s * 1.5)
    after = await server_side(client)
    res = Result(requests, wall, latencies, errors, spans={k: v / requests for k, v in spans.items()})
    if before is not None and after is not None:
        d = {k: after[k] - before[k] for k in SERVER_SERIES}
        batches = d["dptensor_predict_batch_requests_count"]
        if batches > 0:
            res.mean_batch = d["dptensor_predict_batch_requests_sum"] / batches
            res.queue_wait_ms = 1e3 * d["dptensor_predict_queue_wait_seconds_sum"] / batches
            res.compute_ms = 1e3 * d["dptensor_predict_compute_seconds_sum"] / batches
        if d["dptensor_http_request_duration_seconds_count"] > 0:
            res.server_ms = 1e3 * d["dptensor_http_request_duration_seconds_sum"] / d[
                "dptensor_http_request_duration_seconds_count"]
    return res


def client_for(url: str, token: str | None, concurrency: int) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits)


async def upload(client: httpx.AsyncClient, checkpoint: Path) -> str:
    r = await client.post("/v1/models", files={"file": ("model.pt", checkpoint.read_bytes())})
    r.raise_for_status()
    return str(r.json()["id"])


async def single(args: argparse.Namespace) -> None:
    async with client_for(args.url, args.token, args.concurrency) as client:
        model = args.model or await upload(client, Path(args.checkpoint))
        res = await measure(client, model, args.atoms, args.requests, args.concurrency, args.heartbeat_s)
    print(f"{args.requests} requests ({args.atoms} atoms each), concurrency {args.concurrency}, model {model}")
    print(f"{Result.HEADER}\n{res.row()}")
    print(f"\nwhere a request's time went, mean ms (Server-Timing; app/timing.py):\n{breakdown_header()}\n"
          f"{breakdown_row(res)}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(data: Path, port: int, broker: str | None, batching: bool,
                  heartbeat_s: float, tree: Path = ROOT) -> subprocess.Popen[bytes]:
    """``dptensor serve --no-auth`` of the source in ``tree`` (this checkout, or a worktree of
    an older revision for the same-run baseline), with this virtualenv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPTENSOR_")}
    env.update({"DPTENSOR_DATA_DIR": str(data), "DPTENSOR_PORT": str(port), "DPTENSOR_AUTH": "none",
                "DPTENSOR_PREDICT_BATCHING": str(batching).lower(), "DPTENSOR_WORKER_DEVICE": "cpu",
                "DPTENSOR_HEARTBEAT_INTERVAL_S": str(heartbeat_s),
                "DPTENSOR_STALE_AFTER_S": str(max(90.0, 3 * heartbeat_s))})
    if broker:
        env["DPTENSOR_BROKER_URL"] = broker
    log = open(data.parent / f"serve-{port}.log", "wb")  # noqa: SIM115 - owned by the child
    return subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--no-auth"], env=env, cwd=tree,
                            stdout=log, stderr=subprocess.STDOUT)


async def wait_ready(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get("/v1/health/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError(f"service at {url} not ready after {timeout_s:.0f} s")


BASELINE_RPS = 254.0  # issue 17: Redis, 16 clients, 3-atom requests, before this work (the figure)


@dataclass
class Service:
    name: str  # embedded | redis | baseline (an older revision, Redis)
    broker: str | None
    tree: Path = ROOT
    url: str = ""
    model: str = ""
    proc: subprocess.Popen[bytes] | None = None


async def matrix(args: argparse.Namespace) -> None:
    """Both brokers side by side: for each batching setting their two services run at once
    and every cell (atoms, clients) is measured on one, then the other (the order alternates
    with each repeat), so a busy moment of the machine falls on both."""
    names = [n for n in ("embedded", "redis") if not (n == "embedded" and args.redis_only)
             and not (n == "redis" and not args.redis_url)]
    baseline_tree = baseline_checkout(args.baseline_rev) if args.baseline_rev and args.redis_url else None
    print(f"{'broker':9} {'batching':8} {'atoms':>5} {'clients':>7}{Result.HEADER}", flush=True)
    results: dict[tuple[str, bool, int, int], list[Result]] = {}
    with tempfile.TemporaryDirectory(prefix="dptensor-load-") as tmp:
        for batching in (True, False):
            services = [Service(n, args.redis_url if n == "redis" else None) for n in names]
            if batching and baseline_tree is not None:
                services.append(Service("baseline", next_database(args.redis_url), baseline_tree))
            try:
                for svc in services:
                    if svc.broker is not None:
                        import redis

                        redis.Redis.from_url(svc.broker).flushdb()
                    data = Path(tmp) / f"{svc.name}-{batching}" / "data"
                    data.mkdir(parents=True)
                    port = free_port()
                    svc.url, svc.proc = f"http://127.0.0.1:{port}", start_service(data, port, svc.broker, batching,
                                                                                 args.heartbeat_s, svc.tree)
                for svc in services:
                    await wait_ready(svc.url)
                    async with client_for(svc.url, None, 1) as client:
                        svc.model = await upload(client, Path(args.checkpoint))
                for atoms in args.atoms_list:
                    for clients in args.clients:
                        for rep in range(args.repeat):
                            for svc in services[::-1] if rep % 2 else services:
                                if svc.name == "baseline" and clients != 16:
                                    continue  # the targets compare 16 clients only
                                async with client_for(svc.url, None, clients) as client:
                                    n = args.requests if clients > 1 else max(20, args.requests // 4)
                                    res = await measure(client, svc.model, atoms, n, clients, args.heartbeat_s)
                                results.setdefault((svc.name, batching, atoms, clients), []).append(res)
                                print(f"{svc.name:9} {'on' if batching else 'off':8} {atoms:5d} {clients:7d} "
                                      f"{res.row()}", flush=True)
            finally:
                for svc in services:
                    if svc.proc is not None:
                        svc.proc.send_signal(signal.SIGTERM)
                for svc in services:
                    if svc.proc is not None:
                        svc.proc.wait(timeout=90)
    if baseline_tree is not None:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline_tree)], check=False)
    summary(results, args.repeat, args.baseline_rev if baseline_tree is not None else None)


def baseline_checkout(rev: str) -> Path:
    """A detached worktree of ``rev`` (the code before the serving work, e.g. bf7260d), run
    with this virtualenv beside the current code, so that "3x before" is measured in the same run."""
    tree = Path(tempfile.mkdtemp(prefix="dptensor-baseline-")) / "src"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True,
                   stdout=subprocess.DEVNULL)
    return tree


def next_database(url: str) -> str:
    """redis://host:port/N → redis://host:port/N+1 (the baseline's own, also flushed)."""
    base, _, db = url.rpartition("/")
    return f"{base}/{int(db or 0) + 1}" if db.isdigit() or not db else f"{url}/1"


def summary(results: dict[tuple[str, bool, int, int], list[Result]], repeat: int,
            baseline_rev: str | None = None) -> None:
    def label(key: tuple[str, bool, int, int]) -> str:
        return f"{key[0]:9} {'on' if key[1] else 'off':8} {key[2]:5d} {key[3]:7d}"

    if repeat > 1:
        print(f"\nmedian [min-max] over {repeat} repeats")
        print(f"{'broker':9} {'batching':8} {'atoms':>5} {'clients':>7}          req/s        p50 ms        p99 ms")
        for key, runs in results.items():
            cells = []
            for values in ([r.rps for r in runs], [r.quantile(50) for r in runs], [r.quantile(99) for r in runs]):
                cells.append(f"{statistics.median(values):6.1f} [{min(values):.0f}-{max(values):.0f}]")
            print(f"{label(key)} " + " ".join(f"{c:>14}" for c in cells))
    print("\none client: where a request's time went, mean ms (Server-Timing spans, app/timing.py; "
          "http+client = client latency - app)")
    print(f"{'broker':9} {'batching':8} {'atoms':>5} {'clients':>7} {breakdown_header()}")
    for key, runs in results.items():
        if key[3] == 1:
            print(f"{label(key)} {breakdown_row(runs[0])}")

    def med(key: tuple[str, bool, int, int], f: Callable[[Result], float]) -> float | None:
        return statistics.median(f(r) for r in results[key]) if key in results else None

    source = (f"baseline = revision {baseline_rev}, Redis, 16 clients, this run" if baseline_rev else
              f"baseline = the issue's {BASELINE_RPS:g} req/s (Redis, 16 clients, 3 atoms; no figure for other sizes)")
    print(f"\ntargets (issue 17), medians of this run; {source}")
    for atoms in sorted({k[2] for k in results}):
        rps, p99 = med(("redis", True, atoms, 16), lambda r: r.rps), med(("redis", True, atoms, 16), lambda r: r.quantile(99))
        emb = med(("embedded", True, atoms, 16), lambda r: r.rps)
        base = med(("baseline", True, atoms, 16), lambda r: r.rps) if baseline_rev else \
            (BASELINE_RPS if atoms == 3 else None)
        if rps is not None and p99 is not None:
            ratio = f" = {rps / base:.2f}x baseline {base:.1f} (target >= 3x)" if base else ""
            print(f"  {atoms:3d} atoms, 16 clients: redis {rps:6.1f} req/s{ratio}, p99 {p99:.1f} ms (target <= 100)"
                  + (f"; embedded {emb:.1f} req/s = {emb / rps:.2f} of redis (target >= 0.70)" if emb else ""))
        for name in ("redis", "embedded"):
            p50 = med((name, True, atoms, 1), lambda r: r.quantile(50))
            if p50 is not None and atoms == 3:
                print(f"  {atoms:3d} atoms, 1 client: {name} p50 {p50:.1f} ms (target <= 10)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--matrix", action="store_true", help="start services and measure every configuration")
    p.add_argument("--redis-url", help="--matrix: also measure the Redis broker (this database is flushed)")
    p.add_argument("--redis-only", action="store_true", help="--matrix: skip the embedded broker")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--atoms-list", type=int, nargs="+", default=[3, 192])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--token", help="bearer token (not needed with serve --no-auth)")
    p.add_argument("--model", help="id of a model already on the service")
    p.add_argument("--checkpoint", default=str(CHECKPOINT), help="upload this checkpoint first")
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--atoms", type=int, default=3, help="3 = a water molecule; up to 192 = a water frame")
    p.add_argument("--heartbeat-s", type=float, default=1.0, help="worker metrics publishing interval")
    p.add_argument("--repeat", type=int, default=1, help="--matrix: measure each cell this many times (spread)")
    p.add_argument("--baseline-rev", help="--matrix with --redis-url: also serve this git revision (e.g. bf7260d, "
                   "before the serving work) on the next Redis database and measure its 16-client cells")
    args = p.parse_args()
    import uvloop  # the service's loop too (uvicorn[standard]); a cheaper client leaves more CPU to the server

    uvloop.run(matrix(args) if args.matrix else single(args))


if __name__ == "__main__":
    main()
