"""The ``dptensor`` command. ``serve``, ``worker`` and ``token`` are handled here; the
model commands (train, test, predict, spectrum) are handed to model.cli, imported only
then — so ``dptensor serve`` in an api-only image needs no torch.

The model commands need only the core dependencies (``pip install dptensor``): nothing
from the service extra is imported before a service command runs, and a service command
on a core install says which extra to install instead of a traceback."""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobs.settings import Settings

SERVICE_COMMANDS = ("serve", "worker", "token")
MODEL_COMMANDS = ("train", "test", "predict", "spectrum")
# import name -> distribution, of the service extra's packages these commands load
SERVICE_MODULES = {"pydantic_settings": "pydantic-settings", "sqlalchemy": "sqlalchemy", "fastapi": "fastapi",
                   "uvicorn": "uvicorn", "multipart": "python-multipart", "celery": "celery", "redis": "redis"}
SERVICE_INSTALL = "pip install 'dptensor[service]'"


def missing_service_modules() -> list[str]:
    """Distributions of the service extra that are not installed."""
    return [dist for module, dist in SERVICE_MODULES.items() if importlib.util.find_spec(module) is None]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dptensor", description="dptensor: train and serve DeePMD-style dipole/polarizability models.",
        epilog=f"model commands: {', '.join(MODEL_COMMANDS)} (see 'dptensor train -h')")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="start the api, the workers and (by default) the embedded broker")
    p.add_argument("--host", help="bind address (default 127.0.0.1, env DPTENSOR_HOST)")
    p.add_argument("--port", type=int, help="default 8000 (env DPTENSOR_PORT)")
    p.add_argument("--data-dir", help="datasets, jobs, models, SQLite files (env DPTENSOR_DATA_DIR)")
    p.add_argument("--no-worker", action="store_true", help="api only (workers run elsewhere)")
    p.add_argument("--workers", action="append", metavar="QUEUES",
                   help="one worker process per option, e.g. --workers train,batch --workers predict "
                        "(the default)")
    p.add_argument("--device", help="workers' device: cpu, cuda, cuda:1")
    p.add_argument("--no-auth", action="store_true", help="no tokens (allowed only on a loopback host)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="log every request and the workers' INFO lines (default: warnings and errors only)")

    p = sub.add_parser("worker", help="start one worker process (one per GPU)")
    p.add_argument("--queues", default="train,predict,batch", help="comma-separated: train, predict, batch")
    p.add_argument("--device", help="cpu, cuda, cuda:1, cuda:auto (a GPU no other worker holds; default: cuda when available)")
    p.add_argument("--data-dir")
    p.add_argument("--loglevel", default="INFO")

    p = sub.add_parser("token", help="API tokens")
    tsub = p.add_subparsers(dest="token_command", required=True)
    t = tsub.add_parser("create", help="create a token (and the user if new); prints it once")
    t.add_argument("--user", required=True)
    t.add_argument("--admin", action="store_true", help="the user sees and manages everything")
    t.add_argument("--label", default="")
    t.add_argument("--data-dir")
    return parser


def _settings(args: argparse.Namespace, **extra: object) -> Settings:
    from jobs.settings import load_settings

    overrides = {k: v for k, v in extra.items() if v is not None}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = args.data_dir
    return load_settings(**overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    from app.serve import DEFAULT_WORKERS, serve

    settings = _settings(args, host=args.host, port=args.port, auth="none" if args.no_auth else None)
    workers = [] if args.no_worker else (args.workers or list(DEFAULT_WORKERS))
    return serve(settings, workers=workers, device=args.device, verbose=args.verbose)


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings(args)  # fail fast here, with the same message as serve
    os.environ.update(settings.env())
    argv = [sys.executable, "-m", "worker", "--queues", args.queues, "--loglevel", args.loglevel]
    if args.device:
        argv += ["--device", args.device]
    os.execv(sys.executable, argv)  # the worker is its own program: the api package never imports it


def cmd_token(args: argparse.Namespace) -> int:
    from app.auth import create_token
    from jobs.db import init_db, session_scope

    settings = _settings(args)
    settings.root.mkdir(parents=True, exist_ok=True)
    init_db(settings.db_url)
    with session_scope(settings.db_url) as session:
        token = create_token(session, args.user, admin=args.admin, label=args.label)
    print(token)
    print(f"# token for user {args.user!r}{' (admin)' if args.admin else ''}; it is not shown again",
          file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in MODEL_COMMANDS:
        from model.cli import main as model_main

        return model_main(argv)
    args = build_parser().parse_args(argv)
    missing = missing_service_modules()
    if missing:
        print(f"dptensor {args.command}: the service commands ({', '.join(SERVICE_COMMANDS)}) need the "
              f"'service' extra, which is not installed (missing: {', '.join(missing)}). Install it with:\n"
              f"  {SERVICE_INSTALL}\n"
              f"The model commands ({', '.join(MODEL_COMMANDS)}) work without it.", file=sys.stderr)
        return 2
    from jobs.settings import SettingsError

    try:
        return {"serve": cmd_serve, "worker": cmd_worker, "token": cmd_token}[args.command](args)
    except SettingsError as exc:
        print(f"dptensor {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
