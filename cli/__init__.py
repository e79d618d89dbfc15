"""The `tideflow` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from tideflow import Client, Settings, errors

from . import _processes as processes
from ._loading import clients_of, load_functions


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tideflow", description="Durable functions made of steps."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    dev = commands.add_parser(
        "dev", help="the whole engine in one process, on the embedded default"
    )
    dev.add_argument("app", help="module:attribute naming a tideflow.Client or a list of functions")
    dev.add_argument("--port", type=int, default=8288)
    dev.add_argument("--host", default="127.0.0.1")
    api = commands.add_parser("api", help="the HTTP API")
    api.add_argument("--port", type=int, default=8288)
    api.add_argument("--host", default="0.0.0.0")
    commands.add_parser("scheduler", help="a scheduler replica")
    worker = commands.add_parser("worker", help="a worker running APP's functions")
    worker.add_argument("app")
    worker.add_argument("--concurrency", type=int, default=10)
    commands.add_parser("migrate", help="create or upgrade the database schema")
    send = commands.add_parser("send", help="send an event")
    send.add_argument("name")
    send.add_argument("--data", default="{}", help="the event's data, a JSON object")
    send.add_argument("--id", default=None, help="deduplication key")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
