"""Fan-out of a spectrum job over the batch workers (issue 16 item 3), measured side by side:
the same IR job over 8 trajectories (water, 192 atoms, ``--frames`` frames each, one
trajectory per chunk) on a service with one batch worker and on one with two.

Both services run at once as ``dptensor serve --no-auth`` (embedded Redis broker, fresh data
dirs): ``--workers predict,batch`` and ``--workers predict,batch --workers batch``. serve
gives each worker its share of the cores (OMP_NUM_THREADS), so the comparison is the one a
user gets: one worker with every core against two with half each (``--threads N`` pins
every worker to N threads instead). Each round times the job once on each (submit →
succeeded, polled every 20 ms), after one warm-up job per service (model loading); it
prints every round, the median and spread, and the ratio of wall times (1 worker / 2).

    .venv/bin/python bench/bench_fanout.py [--rounds 3] [--frames 480] [--threads N]

Timings need a quiet machine; on a shared one, read them as noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))  # kit: start/stop a service, the water runs

from kit import Api, dptensor, free_port, stop, wait_for, water_runs_archive  # noqa: E402

CHECKPOINT = HERE.parents[1] / "shared" / "data" / "deepmd_reference" / "dipole" / "model_slim.pt"
TRAJECTORIES = 8
DONE = ("succeeded", "failed", "cancelled")


class Service:
    """One ``dptensor serve`` with ``workers`` batch workers, a model and the 8 runs."""

    def __init__(self, workers: int, folder: Path, args: argparse.Namespace, archive: bytes) -> None:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DPTENSOR_")}
        env.update(DPTENSOR_DATA_DIR=str(folder / "data"), DPTENSOR_PORT=str(port), DPTENSOR_WORKER_DEVICE="cpu")
        if args.threads:
            env.update(OMP_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY="PASSIVE")
        groups = ["--workers", "predict,batch"] + ["--workers", "batch"] * (workers - 1)
        self.workers, self.api = workers, Api(f"http://127.0.0.1:{port}")
        self.proc = dptensor("serve", "--no-auth", *groups, env=env, log=folder / "serve.log")
        wait_for(f"the service with {workers} batch worker(s)", lambda: (r := self.api.ready()) and r["ready"]
                 and len(r["workers"]) == workers, timeout=300)
        r = self.api.http.post("/v1/models", files={"file": ("dipole.pt", CHECKPOINT.read_bytes())})
        r.raise_for_status()
        self.model_id = r.json()["id"]
        r = self.api.http.post("/v1/datasets", files={"file": ("runs.tgz", archive)})
        r.raise_for_status()
        self.dataset_id = r.json()["id"]

    def spectrum(self) -> tuple[float, dict[str, Any]]:
        """Wall time of one job (submit → succeeded) and the job."""
        t0 = time.perf_counter()
        r = self.api.http.post("/v1/jobs/spectrum", data={
            "model_id": self.model_id, "kind": "ir", "dt_fs": "0.5", "dataset_id": self.dataset_id, "system": "."})
        r.raise_for_status()
        job_id = r.json()["id"]
        job = wait_for(f"job {job_id}", lambda: (j if (j := self.api.job(job_id))["status"] in DONE else None),
                       timeout=3600, every=0.02)
        wall = time.perf_counter() - t0
        if job["status"] != "succeeded":
            raise RuntimeError(f"job {job['id']} {job['status']}: {job.get('error')}")
        return wall, job

    def close(self) -> None:
        stop(self.proc)


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--frames", type=int, default=480, help="frames of each of the 8 trajectories")
    ap.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of every worker (default: serve's "
                                                               "share of the cores)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    archive = water_runs_archive(TRAJECTORIES, args.frames)
    times: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        services: dict[int, Service] = {}
        try:
            for n in (1, 2):
                (Path(tmp) / str(n)).mkdir()
                services[n] = Service(n, Path(tmp) / str(n), args, archive)
            for service in services.values():
                service.spectrum()  # warm-up: the workers load the model
            for round_ in range(args.rounds):
                line = []
                for n, service in services.items():
                    wall, job = service.spectrum()
                    times[n].append(wall)
                    line.append(f"{n} worker(s) {wall:6.2f} s ({job['result']['workers']} used)")
                print(f"round {round_ + 1}: " + "   ".join(line) + f"   ratio {times[1][-1] / times[2][-1]:.2f}",
                      flush=True)
        finally:
            for service in services.values():
                service.close()
    ratios = [a / b for a, b in zip(times[1], times[2], strict=True)]
    frames = TRAJECTORIES * args.frames
    print(f"\nIR spectrum of {TRAJECTORIES} trajectories × {args.frames} frames (192 atoms), "
          f"threads per worker: {args.threads or 'serve default'}; cores: {os.cpu_count()}")
    for n in (1, 2):
        print(f"  {n} batch worker(s): wall s {_spread(times[n])}; "
              f"{frames / statistics.median(times[n]):.0f} frames/s")
    print(f"  ratio 1 worker / 2 workers: {_spread(ratios)}")
    if args.json:
        args.json.write_text(json.dumps({"frames": args.frames, "threads": args.threads, "wall_s": times,
                                         "ratios": ratios}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
