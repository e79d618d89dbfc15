from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from tideflow import _function as fn
from tideflow import errors
from tideflow._core.ids import new_id
from tideflow._settings import Settings
from tideflow.broker import (
    Broker,
    Delivery,
    JobMessage,
    OutcomeMessage,
    Seal,
    publish_events,
    topology,
)
from tideflow.store import Store
from tideflow.store import models as m

from . import _metrics
from ._executor import Execution, JobResult

logger = logging.getLogger(__name__)


class Worker:
    """Pulls step jobs of its apps' functions, runs them, and writes their results.

    Args:
        functions: the functions this worker can run (of one or more apps).
        concurrency: jobs run at once; also the prefetch of each app queue.
    """

    def __init__(
        self,
        *,
        store: Store,
        broker: Broker,
        settings: Settings,
        functions: Sequence[fn.Function],
        concurrency: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if concurrency < 1:
            raise errors.ConfigError(f"concurrency: must be at least 1, got {concurrency}")
        self._store = store
        self._broker = broker
        self._settings = settings
        self._functions = {function.id: function for function in functions}
        self._concurrency = concurrency
        self._clock = clock
        self._owner = f"worker-{new_id()}"
        self._seal = Seal(settings.signing_key)
        self._tasks: set[asyncio.Task[None]] = set()

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def register(self) -> None:
        """Tells the scheduler (through the store) which functions exist, and their triggers."""
        by_app: dict[str, list[fn.Function]] = {}
        for function in self._functions.values():
            by_app.setdefault(function.app_id, []).append(function)
        for app_id, functions in by_app.items():
            await self._store.register_functions(
                app_id, [f.config() for f in functions], self.now_ms()
            )
            await self._broker.declare_queue(
                topology.jobs_queue(app_id),
                exchange=topology.INTERNAL_EXCHANGE,
                routing_keys=[topology.jobs_key(app_id)],
            )
            logger.info("registered %d functions of app %s", len(functions), app_id)

    async def run(self, stop: asyncio.Event) -> None:
        """Registers, then runs jobs until `stop` is set; jobs in hand finish first."""
        await self.register()
        apps = sorted({function.app_id for function in self._functions.values()})
        consumers = [
            asyncio.create_task(self._consume(app_id), name=f"tideflow-worker-{app_id}")
            for app_id in apps
        ]
        try:
            await stop.wait()
        finally:
            for consumer in consumers:
                consumer.cancel()
            await asyncio.gather(*consumers, return_exceptions=True)
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=self._settings.lease_s)

    async def _consume(self, app_id: str) -> None:
        slots = asyncio.Semaphore(self._concurrency)
        while True:
            try:
                async for delivery in self._broker.consume(
                    topology.jobs_queue(app_id), prefetch=self._concurrency
                ):
                    await slots.acquire()
                    task = asyncio.create_task(self._handle(delivery), name="tideflow-job")
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                    task.add_done_callback(lambda _: slots.release())
                return
            except errors.BrokerError as exc:
                logger.warning("consuming jobs of %s failed (%s); reconnecting", app_id, exc)
                await asyncio.sleep(1.0)

    async def _handle(self, delivery: Delivery) -> None:
        try:
            message = JobMessage.decode(delivery.body, self._seal)
        except (ValueError, TypeError, errors.SignatureError) as exc:
            await delivery.dead_letter(f"not a job message: {exc}")
            return
        try:
            await self.run_job(message)
        except errors.StoreError as exc:
            logger.warning(
                "store unavailable running job %s (%s); it goes back to the queue",
                message.job_id,
                exc,
            )
            await asyncio.sleep(0.5)
            await delivery.requeue()
            return
        except Exception:  # the sweeper re-dispatches the job if it is still due
            logger.exception("running job %s failed", message.job_id)
        await delivery.ack()

    async def run_job(self, message: JobMessage) -> None:
        lease_ms = int(self._settings.lease_s * 1000)
        now = self.now_ms()
        state = await self._store.claim_job(message.job_id, self._owner, now, now + lease_ms)
        if state is None:
            return
        function = self._functions.get(state.run.function_id)
        _metrics.job_started(state, now)
        renewal = asyncio.create_task(self._renew(message.job_id, lease_ms), name="tideflow-lease")
        try:
            with _metrics.JOB_SECONDS.time(), _metrics.JOBS_IN_FLIGHT.track_inprogress():
                result = await self._execute(function, state)
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
        _metrics.JOBS.labels(result.outcome.get("kind", "unknown")).inc()
        _metrics.steps_done(state.run.function_id, result.steps)
        written = await self._store.finish_job(
            message.job_id,
            self._owner,
            steps=result.steps,
            events=result.events,
            outcome=result.outcome,
            now=self.now_ms(),
        )
        if not written:
            _metrics.LEASES_LOST.inc()
            logger.warning("lost the lease of job %s; its result is dropped", message.job_id)
            return
        try:
            if result.events:
                await publish_events(self._broker, [event.wire() for event in result.events])
            await self._broker.publish([OutcomeMessage(message.job_id).to_message(self._seal)])
        except errors.BrokerError as exc:
            logger.warning("could not report job %s (%s); the sweeper will", message.job_id, exc)

    async def _execute(self, function: fn.Function | None, state: m.RunState) -> JobResult:
        if function is None:
            error = {
                "name": "FunctionNotFoundError",
                "message": f"this worker has no function {state.run.function_id!r}",
                "stack": None,
            }
            return JobResult(outcome={"kind": "failed", "error": error})
        try:
            return await Execution(function, state).execute()
        except Exception as exc:
            logger.exception("executing run %s failed", state.run.run_id)
            return JobResult(outcome={"kind": "error", "error": errors.error_dict(exc)})

    async def _renew(self, job_id: str, lease_ms: int) -> None:
        while True:
            await asyncio.sleep(lease_ms / 3000)
            try:
                if not await self._store.renew_lease(job_id, self._owner, self.now_ms() + lease_ms):
                    logger.warning("lease of job %s was lost", job_id)
                    return
            except errors.StoreError as exc:
                logger.warning("could not renew the lease of job %s: %s", job_id, exc)
