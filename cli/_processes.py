"""Runs the engine's parts in this process: all of them (`dev`) or one each."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import prometheus_client
import uvicorn
from tideflow import Client, Function, Settings, errors
from tideflow._core.backoff import Backoff
from tideflow._core.urls import mask_url, redact
from tideflow.api import Api, Realtime, create_app
from tideflow.broker import Broker, create_broker
from tideflow.scheduler import Scheduler
from tideflow.store import Store, create_store
from tideflow.worker import Worker

logger = logging.getLogger("tideflow")
# At start, the servers may come up after the process (a cluster starting at once): retry
# soon at first, then every few seconds, until `TIDEFLOW_CONNECT_TIMEOUT_S`.
_CONNECT_BASE_S = 0.2
_CONNECT_CAP_S = 5.0


@contextlib.asynccontextmanager
async def connected(
    settings: Settings, *, migrate: bool = False
) -> AsyncIterator[tuple[Store, Broker]]:
    store = create_store(settings.database_url)
    broker = create_broker(settings.broker_url, delivery_limit=settings.delivery_limit)
    await _retry("database", settings.database_url, store.open, settings=settings)
    try:
        if migrate:
            await store.migrate()
        await _retry("broker", settings.broker_url, broker.connect, settings=settings)
        try:
            yield store, broker
        finally:
            await broker.close()
    finally:
        await store.close()


async def _retry(
    what: str, url: str, connect: Callable[[], Awaitable[None]], *, settings: Settings
) -> None:
    """Connects, retrying with backoff for `settings.connect_timeout_s`; then raises the
    connection error with one line: the masked URL, the attempts, and the last error."""
    backoff = Backoff(base_s=_CONNECT_BASE_S, cap_s=_CONNECT_CAP_S)
    where = mask_url(url)
    started = time.monotonic()
    while True:
        try:
            await connect()
            return
        except (errors.StoreConnectionError, errors.BrokerConnectionError) as exc:
            delay = backoff.next_delay()
            elapsed = time.monotonic() - started
            reason = redact(_first_line(exc), url)
            if elapsed >= settings.connect_timeout_s:
                attempts = f"{backoff.attempt} attempt{'s' if backoff.attempt > 1 else ''}"
                raise type(exc)(
                    f"cannot reach the {what} at {where}: {attempts} over {elapsed:.1f}s "
                    f"(TIDEFLOW_CONNECT_TIMEOUT_S={settings.connect_timeout_s:g}) failed, "
                    f"the last with: {reason}"
                ) from exc
            delay = min(delay, settings.connect_timeout_s - elapsed)
            logger.log(
                logging.WARNING if backoff.should_warn() else logging.DEBUG,
                "cannot reach the %s at %s yet (attempt %d: %s); retrying in %.1fs",
                what,
                where,
                backoff.attempt,
                reason,
                delay,
            )
            await asyncio.sleep(delay)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)


async def _serve_until(server: uvicorn.Server, stop: asyncio.Event) -> None:
    try:
        await server.serve()
    finally:
        stop.set()


def _server(api: Api, host: str, port: int, settings: Settings) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(api),
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        lifespan="off",
        access_log=False,
    )
    return uvicorn.Server(config)


async def run_dev(
    settings: Settings,
    functions: Sequence[Function],
    clients: Sequence[Client],
    *,
    host: str,
    port: int,
) -> None:
    async with connected(settings, migrate=True) as (store, broker):
        stop = asyncio.Event()
        api = Api(store=store, broker=broker, settings=settings)
        for client in clients:
            client.attach_sender(api.ingest)
        # Functions publish realtime messages, and clients subscribe, on this process's broker.
        hub = Realtime(broker, settings)
        owners = {id(f.client): f.client for f in functions if f.client is not None}
        for client in [*clients, *owners.values()]:
            client.realtime.hub = hub
        scheduler = Scheduler(store=store, broker=broker, settings=settings)
        worker = Worker(store=store, broker=broker, settings=settings, functions=functions)
        await worker.register()
        tasks = [
            asyncio.create_task(scheduler.run(stop), name="tideflow-scheduler"),
            asyncio.create_task(worker.run(stop), name="tideflow-worker"),
        ]
        logger.info("tideflow dev: %d functions, API on http://%s:%d", len(functions), host, port)
        try:
            await _serve_until(_server(api, host, port, settings), stop)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)


async def run_api(settings: Settings, *, host: str, port: int) -> None:
    async with connected(settings) as (store, broker):
        await _serve_until(
            _server(Api(store=store, broker=broker, settings=settings), host, port, settings),
            asyncio.Event(),
        )


def _serve_metrics(settings: Settings) -> None:
    if settings.metrics_port is not None:
        prometheus_client.start_http_server(settings.metrics_port)


async def run_scheduler(settings: Settings) -> None:
    _serve_metrics(settings)
    async with connected(settings) as (store, broker):
        stop = asyncio.Event()
        _stop_on_signals(stop)
        await Scheduler(store=store, broker=broker, settings=settings).run(stop)


async def run_worker(
    settings: Settings, functions: Sequence[Function], *, concurrency: int
) -> None:
    _serve_metrics(settings)
    async with connected(settings) as (store, broker):
        stop = asyncio.Event()
        _stop_on_signals(stop)
        worker = Worker(
            store=store,
            broker=broker,
            settings=settings,
            functions=functions,
            concurrency=concurrency,
        )
        await worker.run(stop)
    if worker.has_abandoned:
        # A step body running in a thread cannot be stopped, and the interpreter would wait
        # for it at exit: leave now, its lease lapses and it runs elsewhere.
        logger.warning("exiting with abandoned steps still running")
        logging.shutdown()
        os._exit(0)


async def run_migrate(settings: Settings) -> None:
    """Creates or upgrades the schema, and declares the broker's exchanges and queues, so that
    events published before any other process starts are kept."""
    # Both first: a URL that cannot work (a missing extra) fails before anything changes.
    store = create_store(settings.database_url)
    broker = create_broker(settings.broker_url, delivery_limit=settings.delivery_limit)
    await _retry("database", settings.database_url, store.open, settings=settings)
    try:
        await store.migrate()
    finally:
        await store.close()
    if broker.is_durable:
        await _retry("broker", settings.broker_url, broker.connect, settings=settings)
        await broker.close()
