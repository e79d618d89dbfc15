from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence

from tideflow import Function, Settings, errors
from tideflow._core import protocol, sealing
from tideflow._core.backoff import Backoff, pause
from tideflow._core.ids import new_id
from tideflow._core.tasks import cancel_and_wait
from tideflow.broker import (
    Broker,
    CancelNotice,
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
from ._checkpoint import Checkpointer
from ._executor import Execution
from ._group_commit import GroupCommit
from ._offload import Offloader

logger = logging.getLogger(__name__)

# Cancelled runs remembered for their notices; a run still running past this many later
# cancellations is stopped by its next write instead.
_REMEMBERED_CANCELS = 10_000
_RETRY_S = 0.2
_RETRY_CAP_S = 5.0


class Worker:
    """Pulls step jobs of its apps' functions, runs them, and writes their results.

    Shutdown (`stop` set): it takes no new job, lets running jobs finish their current steps
    (no new step starts) for up to `TIDEFLOW_SHUTDOWN_GRACE_S`, then abandons what still runs:
    nothing of an abandoned job is written, its lease lapses and the job runs elsewhere.

    It also makes its apps' offloaded requests (`step.fetch`, `step.ai.infer`; see
    `_offload`), up to `TIDEFLOW_FETCH_CONCURRENCY` at once, apart from its job slots.

    Args:
        functions: the functions this worker can run (of one or more apps).
        concurrency: jobs run at once; also the prefetch of each app queue.
        environ: where the API keys of `ai.infer` adapters are read (default: the process's).
    """

    def __init__(
        self,
        *,
        store: Store,
        broker: Broker,
        settings: Settings,
        functions: Sequence[Function],
        concurrency: int = 10,
        clock: Callable[[], float] = time.time,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if concurrency < 1:
            raise errors.ConfigError(f"concurrency: must be at least 1, got {concurrency}")
        self._store = store
        self._broker = broker
        self._settings = settings
        self._functions = {function.id: function for function in functions}
        self._apps = sorted({function.app_id for function in functions})
        self._concurrency = concurrency
        self._clock = clock
        self._owner = f"worker-{new_id()}"
        self._seal = Seal(settings.signing_key)
        self._tasks: set[asyncio.Task[None]] = set()
        self._cancelled: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._stopping = False
        self._store_backoff = Backoff(base_s=_RETRY_S, cap_s=_RETRY_CAP_S)
        self._claims = GroupCommit(self._claim_jobs, max_size=concurrency)
        # One write per run in a batch: two jobs of one run must not race in one statement.
        self._finishes = GroupCommit(
            self._finish_jobs, key=lambda finish: finish[0], max_size=concurrency
        )
        self.has_abandoned = False
        """True once a shutdown gave up on running jobs; their threads may still be going."""
        self._offloader = Offloader(
            broker=broker,
            settings=settings,
            apps=self._apps,
            environ=os.environ if environ is None else environ,
        )

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def register(self) -> None:
        """Tells the scheduler (through the store) which functions exist, and their triggers."""
        by_app: dict[str, list[Function]] = {}
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
        await self._offloader.declare()

    async def run(self, stop: asyncio.Event) -> None:
        """Registers, then runs jobs until `stop` is set, then drains (see the class)."""
        await self.register()
        listener = asyncio.create_task(self._listen_for_cancels(), name="tideflow-cancels")
        consumers = [
            asyncio.create_task(self._consume(app_id), name=f"tideflow-worker-{app_id}")
            for app_id in self._apps
        ]
        consumers.append(
            asyncio.create_task(self._store.heartbeat(self._owner, "worker", self._apps))
        )
        consumers.append(asyncio.create_task(self._offloader.run(), name="tideflow-offload"))
        try:
            await stop.wait()
        finally:
            self._stopping = True
            await cancel_and_wait(consumers)
            await self._drain()
            await cancel_and_wait([listener])

    async def _drain(self) -> None:
        if not self._tasks:
            return
        logger.info(
            "waiting up to %gs for %d jobs", self._settings.shutdown_grace_s, len(self._tasks)
        )
        _, running = await asyncio.wait(self._tasks, timeout=self._settings.shutdown_grace_s)
        if running:
            self.has_abandoned = True
            logger.warning(
                "abandoning %d jobs still running; their leases will lapse", len(running)
            )
            await cancel_and_wait(running)

    async def _consume(self, app_id: str) -> None:
        slots = asyncio.Semaphore(self._concurrency)
        backoff = Backoff(base_s=_RETRY_S, cap_s=_RETRY_CAP_S)
        while True:
            try:
                async for delivery in self._broker.consume(
                    topology.jobs_queue(app_id), prefetch=self._concurrency
                ):
                    backoff.reset()
                    await slots.acquire()
                    task = asyncio.create_task(self._handle(delivery), name="tideflow-job")
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                    task.add_done_callback(lambda _: slots.release())
                return
            except errors.BrokerError as exc:
                await pause(backoff, logger, f"consuming jobs of {app_id}", exc)

    async def _listen_for_cancels(self) -> None:
        keys = [topology.cancel_key(app_id) for app_id in self._apps]
        backoff = Backoff(base_s=_RETRY_S, cap_s=_RETRY_CAP_S)
        while True:
            try:
                async for notice in self._broker.subscribe(topology.BROADCAST_EXCHANGE, keys):
                    backoff.reset()
                    self._note_cancelled(notice)
                return
            except errors.BrokerError as exc:
                await pause(backoff, logger, "listening for cancellations", exc)

    def _note_cancelled(self, notice: Delivery) -> None:
        try:
            message = CancelNotice.decode(notice.body, self._seal)
        except (ValueError, TypeError, errors.SignatureError) as exc:
            logger.warning("ignoring a message that is not a cancel notice: %s", exc)
            return
        for run_id in message.run_ids:
            self._cancelled[run_id] = None
        while len(self._cancelled) > _REMEMBERED_CANCELS:
            self._cancelled.popitem(last=False)

    async def _handle(self, delivery: Delivery) -> None:
        try:
            message = JobMessage.decode(delivery.body, self._seal)
        except (ValueError, TypeError, errors.SignatureError) as exc:
            await delivery.dead_letter(f"not a job message: {exc}")
            return
        try:
            await self.run_job(message)
            self._store_backoff.reset()
        except errors.StoreError as exc:
            # Back to the queue once the store has had a moment: every job in hand meets the
            # same outage, and they share one backoff.
            await pause(self._store_backoff, logger, f"running job {message.job_id}", exc)
            await delivery.requeue()
            return
        except asyncio.CancelledError:
            # Abandoned at shutdown: the message goes back; the job runs again once the lease
            # has lapsed.
            await asyncio.shield(delivery.requeue())
            raise
        except Exception:  # the sweeper re-dispatches the job if it is still due
            logger.exception("running job %s failed", message.job_id)
        await delivery.ack()

    async def _claim_jobs(self, job_ids: list[str]) -> list[m.RunState | None]:
        now = self.now_ms()
        lease_until = now + int(self._settings.lease_s * 1000)
        states = await self._store.claim_jobs(job_ids, self._owner, now, lease_until)
        # Two deliveries of one job (a redelivery beside a re-dispatch): one claim holds it.
        return [states.pop(job_id, None) for job_id in job_ids]

    async def _finish_jobs(self, finishes: list[tuple[str, m.JobFinish]]) -> list[bool]:
        written = await self._store.finish_jobs([f for _, f in finishes], self._owner)
        done = [f for _, f in finishes if f.job_id in written]
        try:
            # The events first: an outcome's scheduler may already look for them.
            await self._announce([event for f in done for event in f.events])
            if done:
                outcome = OutcomeMessage(tuple(f.job_id for f in done))
                await self._broker.publish([outcome.to_message(self._seal)])
        except errors.BrokerError as exc:
            logger.warning("could not report %d jobs (%s); the sweeper will", len(done), exc)
        return [f.job_id in written for _, f in finishes]

    async def run_job(self, message: JobMessage) -> None:
        lease_ms = int(self._settings.lease_s * 1000)
        now = self.now_ms()
        state = await self._claims.submit(message.job_id)
        if state is None:
            return
        function = self._functions.get(state.run.function_id)
        _metrics.job_started(state, now)
        checkpointer = self._checkpointer(message.job_id, function, lease_ms)
        renewal = asyncio.create_task(self._renew(message.job_id, lease_ms), name="tideflow-lease")
        try:
            with _metrics.JOB_SECONDS.time(), _metrics.JOBS_IN_FLIGHT.track_inprogress():
                outcome = await self._execute(function, state, checkpointer)
            # An explicit ai.infer key goes through the outcome's row encrypted, if it can.
            outcome = sealing.seal_outcome(outcome, self._settings.signing_key)
            steps, events = await checkpointer.take_rest()
        except BaseException:
            await checkpointer.abandon()
            raise
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
        _metrics.JOBS.labels(outcome.kind).inc()
        finish = m.JobFinish(message.job_id, steps, events, outcome, self.now_ms())
        if not await self._finish(state.run.run_id, finish, lease_ms):
            _metrics.LEASES_LOST.inc()
            logger.info(
                "job %s lost its lease (run cancelled, or lapsed); its result is dropped",
                message.job_id,
            )

    async def _finish(self, run_id: str, finish: m.JobFinish, lease_ms: int) -> bool:
        """Writes a job's end; whether it was still this worker's. A store that cannot be
        reached is tried again, with backoff, for three leases: the result is in hand, and
        writing it late costs less than running the step again (a write after the lease has
        lapsed is refused, so nothing is recorded over another worker's result)."""
        backoff = Backoff(base_s=_RETRY_S, cap_s=_RETRY_CAP_S)
        give_up = time.monotonic() + 3 * lease_ms / 1000
        while True:
            try:
                return await self._finishes.submit((run_id, finish))
            except errors.StoreError as exc:
                if time.monotonic() >= give_up:
                    raise
                await pause(backoff, logger, f"writing the end of job {finish.job_id}", exc)

    def _checkpointer(self, job_id: str, function: Function | None, lease_ms: int) -> Checkpointer:
        policy = function.checkpointing if function is not None else None
        function_id = function.id if function is not None else "unknown"

        async def write(steps: list[m.StepRecord], events: list[m.EventRecord]) -> bool:
            written = await self._store.checkpoint_job(
                job_id,
                self._owner,
                steps=steps,
                events=events,
                lease_until=self.now_ms() + lease_ms,
            )
            if written:
                with contextlib.suppress(errors.BrokerError):
                    await self._announce(events)
            return written

        return Checkpointer(
            write,
            on_step=lambda step: _metrics.steps_done(function_id, [step]),
            buffered_steps=policy.buffered_steps if policy is not None else None,
            max_interval_ms=policy.max_interval_ms if policy is not None else 0,
        )

    async def _announce(self, events: Sequence[m.EventRecord]) -> None:
        if events:
            await publish_events(self._broker, [event.wire() for event in events])

    async def _execute(
        self, function: Function | None, state: m.RunState, checkpointer: Checkpointer
    ) -> protocol.Outcome:
        if function is None:
            error = protocol.ErrorInfo(
                "FunctionNotFoundError", f"this worker has no function {state.run.function_id!r}"
            )
            return protocol.Failed(error)
        run_id = state.run.run_id
        execution = Execution(
            function,
            state,
            checkpointing=function.checkpointing,
            checkpointer=checkpointer,
            step_timeout_s=self._settings.step_timeout_s,
            max_state_bytes=self._settings.max_run_state_bytes,
            should_stop=lambda: self._stopping or run_id in self._cancelled,
        )
        try:
            return await execution.execute()
        except Exception as exc:
            logger.exception("executing run %s failed", run_id)
            return protocol.Errored(protocol.ErrorInfo.from_exception(exc))

    async def _renew(self, job_id: str, lease_ms: int) -> None:
        while True:
            await asyncio.sleep(lease_ms / 3000)
            try:
                if not await self._store.renew_lease(job_id, self._owner, self.now_ms() + lease_ms):
                    logger.info("job %s lost its lease (run cancelled, or lapsed)", job_id)
                    return
            except errors.StoreError as exc:
                logger.warning("could not renew the lease of job %s: %s", job_id, exc)
