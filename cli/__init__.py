"""The `tideflow` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from tideflow import Client, Settings, errors

from . import _processes as processes
from ._loading import clients_of, load_functions

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The `tideflow` command's parser (also the source of the docs' command-line reference)."""
    parser = argparse.ArgumentParser(
        prog="tideflow", description="Durable functions made of steps."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    app_help = "module:attribute naming a tideflow.Client or a list of functions"
    dev = commands.add_parser(
        "dev",
        help="the whole engine in one process, on the embedded default",
        description="The HTTP API and dashboard, a scheduler and a worker running APP's "
        "functions, in one process, on TIDEFLOW_DATABASE_URL (a SQLite file by default) and the "
        "in-process broker.",
    )
    dev.add_argument("app", help=app_help)
    dev.add_argument("--port", type=int, default=8288, help="the HTTP port")
    dev.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    api = commands.add_parser(
        "api",
        help="the HTTP API",
        description="Event ingest, the REST API, the dashboard and /metrics, against the "
        "configured database and broker. Run as many as you like behind a load balancer.",
    )
    api.add_argument("--port", type=int, default=8288, help="the HTTP port")
    api.add_argument("--host", default="0.0.0.0", help="the address to listen on")
    commands.add_parser(
        "scheduler",
        help="a scheduler replica",
        description="Matches events to functions, applies flow control, fires timers. Run two "
        "or more: replicas share the work through the database.",
    )
    worker = commands.add_parser(
        "worker",
        help="a worker running APP's functions",
        description="Pulls step jobs from APP's queue and runs them. Run as many as you need.",
    )
    worker.add_argument("app", help=app_help)
    worker.add_argument(
        "--concurrency", type=int, default=10, help="step jobs this worker runs at once"
    )
    commands.add_parser(
        "migrate",
        help="create or upgrade the database schema",
        description="Idempotent, and safe to run from several processes at once.",
    )
    send = commands.add_parser("send", help="send an event", description="Prints its id.")
    send.add_argument("name", help="the event's name, e.g. shop/user.created")
    send.add_argument("--data", default="{}", help="the event's data, a JSON object")
    send.add_argument("--id", default=None, help="deduplication key")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        settings.configure_logging()
        return _run(args, settings)
    except errors.TideflowError as exc:
        print(f"tideflow: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "dev":
        functions = load_functions(args.app)
        asyncio.run(
            processes.run_dev(
                settings, functions, clients_of(args.app), host=args.host, port=args.port
            )
        )
    elif args.command == "api":
        asyncio.run(processes.run_api(settings, host=args.host, port=args.port))
    elif args.command == "scheduler":
        asyncio.run(processes.run_scheduler(settings))
    elif args.command == "worker":
        functions = load_functions(args.app)
        asyncio.run(processes.run_worker(settings, functions, concurrency=args.concurrency))
    elif args.command == "migrate":
        asyncio.run(processes.run_migrate(settings))
        print("schema is up to date")
    elif args.command == "send":
        try:
            data = json.loads(args.data)
        except json.JSONDecodeError as exc:
            raise errors.EventError(f"--data is not valid JSON: {exc}") from None
        client = Client(app_id="cli", settings=settings)
        event = {"name": args.name, "data": data, "id": args.id}
        for event_id in client.send_sync(event):
            print(event_id)
    return 0
