"""``python -m worker --queues train,batch [--device cuda:1]``: one Celery worker process
(solo pool) — what ``dptensor worker`` and ``dptensor serve`` start."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import socket
import sys
import warnings

from jobs.queue import QUEUES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dptensor worker")
    parser.add_argument("--queues", default="train,predict,batch",
                        help=f"comma-separated, from {', '.join(QUEUES)} (default: all)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, cuda:auto (a GPU no other worker holds; default: cuda when available)")
    parser.add_argument("--loglevel", default="INFO")
    parser.add_argument("--quiet", action="store_true",
                        help="no Celery banner or root-user warning (dptensor serve without --verbose)")
    args = parser.parse_args(argv)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = sorted(set(queues) - set(QUEUES))
    if not queues or unknown:
        parser.error(f"unknown queue(s) {unknown or queues}; choose from {', '.join(QUEUES)}")
    from jobs.settings import SettingsError, load_settings

    try:
        settings = load_settings(**({"worker_device": args.device} if args.device else {}))
    except SettingsError as exc:
        print(f"dptensor worker: {exc}", file=sys.stderr)
        return 2
    from model.runtime import tune_allocator
    from worker import state
    from worker.celery_app import create_celery

    state.start(settings)  # the process state, built once, before any task module runs
    celery = create_celery(settings)
    tune_allocator()  # training and prediction steps allocate large, short-lived tensors
    name = f"{'+'.join(queues)}@{socket.gethostname()}.{os.getpid()}"
    if args.quiet:
        from celery.exceptions import SecurityWarning

        warnings.filterwarnings("ignore", category=SecurityWarning)  # running as root (containers)
    code: int | str | None = 0
    # the imports' objects (torch, Celery, the tasks: ~230k) are never garbage; a full
    # collection walked them all, holding up the batch in hand ~100 ms
    gc.freeze()
    try:
        celery.worker_main([*(["--quiet"] if args.quiet else []), "worker", "--pool", "solo", "--queues",
                            ",".join(queues), "--hostname", name, "--loglevel", args.loglevel, "--without-gossip",
                            "--without-mingle", "--without-heartbeat"])
    except SystemExit as exc:
        code = exc.code
    # Celery has shut down (job checkpointed and given back, worker unregistered). Tearing
    # down torch's and OpenMP's thread pools in the interpreter's finalisation took seconds
    # on a loaded machine: nothing is left to clean up, so leave at once.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else (0 if code is None else 1))


if __name__ == "__main__":
    sys.exit(main())
