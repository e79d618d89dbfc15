"""Run a whole engine inside a test: `async with Engine(client) as engine: ...`; or unit-test
one function with mocked steps and no engine: `await TestEngine(fn).execute(...)`.

The engine is the real one (store, broker, scheduler, worker, HTTP API) in this process and
event loop; by default on an in-memory SQLite database and the in-process broker. Tests talk to
it through `engine.http`, an HTTP client bound to the API, as a user's tools would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol

import httpx

from . import errors
from ._client import Client
from ._function import Function
from ._realtime import Hub
from ._settings import Settings
from ._test_engine import StepCall, TestEngine, TestResult

__all__ = ["Engine", "EngineFactory", "Result", "StepCall", "TestEngine", "TestResult"]

FINISHED = ("Completed", "Failed", "Cancelled")


class EngineFactory(Protocol):
    """Makes an engine for an app, with extra `TIDEFLOW_*` settings."""

    def __call__(self, app: Client, **environ: str) -> Engine: ...


class Engine:
    """An engine running `app`'s functions.

    Args:
        app: a `Client` (all its functions) or a list of `Function`s.
        environ: `TIDEFLOW_*` settings; defaults suit tests (fast retries, short leases).
        run_worker: False to run no worker, e.g. to let a test start workers of its own.
        clock: the engine's time in seconds since the epoch, e.g. shifted to just before a
            cron tick.
    """

    def __init__(
        self,
        app: Client | Sequence[Function],
        *,
        environ: Mapping[str, str] | None = None,
        run_worker: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        defaults = {
            "TIDEFLOW_DATABASE_URL": "sqlite://:memory:",
            "TIDEFLOW_RETRY_BACKOFF_BASE_MS": "20",
            "TIDEFLOW_LEASE_S": "5",
            # A test engine stops at once: steps still running at its exit are abandoned.
            "TIDEFLOW_SHUTDOWN_GRACE_S": "1",
        }
        self.settings = Settings.from_env({**defaults, **(environ or {})})
        self._clients = [app] if isinstance(app, Client) else []
        self.functions = (
            list(app.functions)
            if isinstance(app, Client)
            else [companion for function in app for companion in function.with_companions()]
        )
        self._run_worker = run_worker
        self._clock = clock
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.http: httpx.AsyncClient

    async def __aenter__(self) -> Engine:
        from tideflow.api import Api, Realtime, create_app
        from tideflow.broker import create_broker
        from tideflow.scheduler import Scheduler
        from tideflow.store import create_store
        from tideflow.worker import Worker

        self.store = create_store(self.settings.database_url)
        self.broker = create_broker(
            self.settings.broker_url, delivery_limit=self.settings.delivery_limit
        )
        await self.store.open()
        await self.store.migrate()
        await self.broker.connect()
        self.api = Api(store=self.store, broker=self.broker, settings=self.settings)
        for client in self._clients:
            client.attach_sender(self.api.ingest)
        self._attach_realtime(Realtime(self.broker, self.settings))
        self.scheduler = Scheduler(
            store=self.store,
            broker=self.broker,
            settings=self.settings,
            poll_s=0.05,
            clock=self._clock,
        )
        if self._run_worker:
            worker = Worker(
                store=self.store,
                broker=self.broker,
                settings=self.settings,
                functions=self.functions,
                clock=self._clock,
            )
            await worker.register()
            self._tasks.append(
                asyncio.create_task(worker.run(self._stop), name="tideflow-test-worker")
            )
        self._tasks.append(
            asyncio.create_task(self.scheduler.run(self._stop), name="tideflow-test-scheduler")
        )
        transport = httpx.ASGITransport(app=create_app(self.api))
        # With a signing key set the API's /v1 routes want it, as from any other client.
        key = self.settings.signing_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.AsyncClient(
            transport=transport, base_url="http://tideflow.test", headers=headers
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self._clients:
            client.attach_sender(None)
        self._attach_realtime(None)
        await self.http.aclose()
        await self.broker.close()
        await self.store.close()

    def _attach_realtime(self, hub: Hub | None) -> None:
        # Publishing and subscribing clients reach this engine's broker directly.
        clients = {id(f.client): f.client for f in self.functions if f.client is not None}
        for client in [*self._clients, *clients.values()]:
            client.realtime.hub = hub

    async def send(self, *events: dict[str, Any]) -> list[str]:
        """Posts events to `/e/{key}`; returns their ids.

        Raises:
            SendError: the API refused them (its status and answer in the message).
        """
        key = self.settings.event_key or "test"
        response = await self.http.post(f"/e/{key}", json=list(events))
        if response.status_code != 200:
            raise errors.SendError(f"POST /e answered {response.status_code}: {response.text}")
        ids: list[str] = response.json()["ids"]
        return ids

    async def runs(self, event_id: str) -> list[dict[str, Any]]:
        """The runs the event started so far (`GET /v1/events/{id}/runs`)."""
        response = await self.http.get(f"/v1/events/{event_id}/runs")
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    async def run(self, run_id: str) -> dict[str, Any]:
        """The run as `GET /v1/runs/{id}` shows it."""
        response = await self.http.get(f"/v1/runs/{run_id}")
        data: dict[str, Any] = response.json()["data"]
        return data

    async def steps(self, run_id: str) -> list[dict[str, Any]]:
        """The run's steps, in order (`GET /v1/runs/{id}/steps`)."""
        response = await self.http.get(f"/v1/runs/{run_id}/steps")
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    async def wait_for_runs(
        self, event_id: str, *, count: int = 1, timeout_s: float = 10.0
    ) -> list[dict[str, Any]]:
        """The event's runs once `count` of them exist.

        Raises:
            TimeoutError: fewer than `count` runs after `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            runs = await self.runs(event_id)
            if len(runs) >= count:
                return runs
            if time.monotonic() > deadline:
                raise TimeoutError(f"event {event_id} has {len(runs)} runs, expected {count}")
            await asyncio.sleep(0.02)

    async def wait_for_run(
        self, run_id: str, *, status: Sequence[str] = FINISHED, timeout_s: float = 10.0
    ) -> dict[str, Any]:
        """The run once its status is one of `status` (by default: once it has ended).

        Raises:
            TimeoutError: the run's status is still another after `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            run = await self.run(run_id)
            if run["status"] in status:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"run {run_id} is {run['status']}, expected one of {list(status)}"
                )
            await asyncio.sleep(0.02)

    async def finish(self, event: dict[str, Any], *, timeout_s: float = 10.0) -> Result:
        """Sends one event and waits for the one run it starts to end.

        Raises:
            TimeoutError: no run started, or it did not end, within `timeout_s`.
            ValueError: the event started more than one run.
        """
        (event_id,) = await self.send(event)
        (run,) = await self.wait_for_runs(event_id, timeout_s=timeout_s)
        ended = await self.wait_for_run(run["run_id"], timeout_s=timeout_s)
        return Result(event_id=event_id, run=ended, steps=await self.steps(run["run_id"]))


@dataclasses.dataclass
class Result:
    """A finished run, as `Engine.finish` returns it.

    Attributes:
        event_id: the id of the event that started it.
        run: the run, as `GET /v1/runs/{id}` shows it.
        steps: its steps, in order, as `GET /v1/runs/{id}/steps` shows them.
    """

    event_id: str
    run: dict[str, Any]
    steps: list[dict[str, Any]]

    @property
    def status(self) -> str:
        """The run's status: `Completed`, `Failed` or `Cancelled`."""
        status: str = self.run["status"]
        return status

    @property
    def output(self) -> Any:
        """The run's output (the handler's return value), or None."""
        return self.run["output"]
