"""Load check (not a test): many concurrent small synchronous predictions against a
running dptensor service; prints requests/s and latency percentiles.

    dptensor serve --no-auth &                       # or any running service
    python bench/load_predict.py --url http://127.0.0.1:8000 \
        --checkpoint ../shared/data/deepmd_reference/dipole/model_slim.pt \
        --requests 400 --concurrency 16

``--checkpoint`` uploads a model first; ``--model ID`` uses an existing one. Each request
is one water molecule (3 atoms), or with ``--atoms 192`` one frame of the water example.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

WATER = {"symbols": ["O", "H", "H"], "positions": [[0.0, 0.0, 0.0], [0.757, 0.586, 0.0], [-0.757, 0.586, 0.0]]}
FRAME = Path(__file__).resolve().parents[2] / "shared/data/water_tensor/dipole/validation_data_reformat/global_system"


def structure(atoms: int) -> dict[str, Any]:
    if atoms == 3:
        return WATER
    coord = np.load(FRAME / "set.000" / "coord.npy")[0].reshape(-1, 3)[:atoms]
    types = np.loadtxt(FRAME / "type.raw", dtype=int)[:atoms]
    return {"types": types.tolist(), "positions": coord.tolist()}


async def run(args: argparse.Namespace) -> None:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=args.url, headers=headers, timeout=120, limits=limits) as client:
        model = args.model
        if model is None:
            r = await client.post("/v1/models", files={"file": ("model.pt", Path(args.checkpoint).read_bytes())})
            r.raise_for_status()
            model = r.json()["id"]
        body = {"structures": [structure(args.atoms)]}
        for _ in range(args.warmup):  # model load and caches on the worker
            (await client.post(f"/v1/models/{model}/predict", json=body)).raise_for_status()

        latencies: list[float] = []
        errors: dict[int, int] = {}
        todo = iter(range(args.requests))

        async def user() -> None:
            for _ in todo:
                t0 = time.perf_counter()
                r = await client.post(f"/v1/models/{model}/predict", json=body)
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors[r.status_code] = errors.get(r.status_code, 0) + 1

        t0 = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(args.concurrency)))
        wall = time.perf_counter() - t0
    q = statistics.quantiles(latencies, n=100)
    print(f"{args.requests} requests ({args.atoms} atoms each), concurrency {args.concurrency}, model {model}")
    print(f"  throughput  {args.requests / wall:8.1f} requests/s   (wall {wall:.1f} s)")
    print(f"  latency     p50 {q[49] * 1e3:7.1f} ms   p90 {q[89] * 1e3:7.1f} ms   p99 {q[98] * 1e3:7.1f} ms")
    print(f"  errors      {errors or 'none'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--token", help="bearer token (not needed with serve --no-auth)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="id of a model already on the service")
    src.add_argument("--checkpoint", help="upload this checkpoint first")
    p.add_argument("--requests", type=int, default=400)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--atoms", type=int, default=3, help="3 = a water molecule; up to 192 = a water frame")
    p.add_argument("--warmup", type=int, default=5)
    asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    main()
