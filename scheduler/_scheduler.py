from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any

from tideflow import Settings, errors
from tideflow._core import protocol
from tideflow._core.backoff import Backoff, log_failure, pause
from tideflow._core.ids import new_id
from tideflow._core.protocol import ErrorInfo
from tideflow._core.tasks import cancel_and_wait
from tideflow.broker import (
    Broker,
    Delivery,
    Dispatcher,
    OutcomeMessage,
    Seal,
    decode_offloaded,
    topology,
)
from tideflow.store import Store, views
from tideflow.store import metrics as store_metrics
from tideflow.store import models as m

from . import _cancel_requests as cancel_requests
from . import _metrics
from . import _planning as planning
from ._batches import batches
from ._cron import cron_timer
from ._decoding import event_from_delivery
from ._registry import Registry
from .flow import concurrency

logger = logging.getLogger(__name__)

_BATCH = 256
_ADMIT_PER_POOL = 256
_RUN_TIMERS = frozenset({m.TIMER_SLEEP, m.TIMER_WAIT, m.TIMER_RETRY, m.TIMER_START})
_STORE_RETRY_S = 0.2
_STORE_RETRY_CAP_S = 10.0
_BROKER_RETRY_S = 0.2
_BROKER_RETRY_CAP_S = 5.0
_UNKNOWN_EVENT_REFRESH_S = 0.25
# Retention deletes in small batches, each its own short transaction, and a sweep stops after
# a few: a backlog (retention just shortened) drains over several sweeps, never in one long go.
_RETENTION_BATCH = 500
_RETENTION_BATCHES_PER_SWEEP = 8


class Scheduler:
    """Turns events, job outcomes and due timers into runs and step jobs. Keeps no state of its
    own: any number of replicas may run against one store and broker."""

    def __init__(
        self,
        *,
        store: Store,
        broker: Broker,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        poll_s: float = 0.2,
        registry_refresh_s: float = 1.0,
    ) -> None:
        self._store = store
        self._broker = broker
        self._settings = settings
        self._clock = clock
        self._poll_s = poll_s
        self._registry_refresh_s = registry_refresh_s
        self._registry = Registry()
        self._seal = Seal(settings.signing_key)
        self._dispatcher = Dispatcher(broker, self._seal)
        self._owner = f"scheduler-{new_id()}"
        self._rng = random.Random()
        self._timer_wakeup = asyncio.Event()
        self._registry_checked = 0.0
        self._sweep_s = min(max(settings.lease_s / 3, 0.5), 5.0)
        self._store_backoff = Backoff(base_s=_STORE_RETRY_S, cap_s=_STORE_RETRY_CAP_S)

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def run(self, stop: asyncio.Event) -> None:
        """Runs until `stop` is set."""
        if not await self._until_store_works(lambda: self._registry.refresh(self._store), stop):
            return
        if not self._broker.is_durable and not await self._until_store_works(
            # Messages of an in-process broker died with the last process: recover them now.
            lambda: self.sweep(grace_ms=0),
            stop,
        ):
            return
        loops: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "events": lambda: self._consume(topology.SCHEDULER_EVENTS_QUEUE, self._handle_events),
            "outcomes": lambda: self._consume(
                topology.SCHEDULER_OUTCOMES_QUEUE, self._handle_outcomes
            ),
            "offloaded": lambda: self._consume(
                topology.SCHEDULER_OFFLOADED_QUEUE, self._handle_offloaded
            ),
            "timers": self._timers_loop,
            "sweeper": self._sweeper_loop,
            "registry": self._registry_loop,
            "heartbeat": lambda: self._store.heartbeat(self._owner, "scheduler", ()),
            "metrics": lambda: _metrics.sample_queues(
                self._broker, self._store, self._registry.app_ids, self._registry.limited
            ),
        }
        tasks = [
            asyncio.create_task(loop(), name=f"tideflow-scheduler-{name}")
            for name, loop in loops.items()
        ]
        try:
            await stop.wait()
        finally:
            await cancel_and_wait(tasks)

    async def _until_store_works(
        self, action: Callable[[], Awaitable[None]], stop: asyncio.Event
    ) -> bool:
        """Runs `action` until the store lets it; False if `stop` was set first."""
        backoff = Backoff(base_s=_STORE_RETRY_S, cap_s=_STORE_RETRY_CAP_S)
        while not stop.is_set():
            try:
                await action()
                return True
            except errors.StoreError as exc:
                await pause(backoff, logger, "reaching the store", exc, stop=stop)
        return False

    async def _consume(
        self, queue: str, handle: Callable[[list[Delivery]], Awaitable[None]]
    ) -> None:
        backoff = Backoff(base_s=_BROKER_RETRY_S, cap_s=_BROKER_RETRY_CAP_S)
        while True:
            try:
                async for batch in batches(
                    self._broker.consume(queue, prefetch=_BATCH * 2), max_size=_BATCH
                ):
                    backoff.reset()
                    await self._settle(batch, handle)
                return
            except errors.BrokerError as exc:
                await pause(backoff, logger, f"consuming {queue}", exc)

    async def _settle(
        self, batch: list[Delivery], handle: Callable[[list[Delivery]], Awaitable[None]]
    ) -> None:
        while True:
            try:
                await handle(batch)
                break
            except errors.StoreConnectionError as exc:
                # The store is away: keep the batch in hand until it is back. Giving it back
                # would count against the messages' delivery limit (TIDEFLOW_DELIVERY_LIMIT),
                # and an outage is not their fault.
                await pause(self._store_backoff, logger, f"applying {len(batch)} messages", exc)
            except Exception as exc:  # one bad message must not stop the others
                if len(batch) > 1:
                    for delivery in batch:
                        await self._settle([delivery], handle)
                    return
                if isinstance(exc, errors.StoreError):
                    # A conflict passes when tried again; a message the store refuses each
                    # time reaches its delivery limit and goes to the dead letters.
                    logger.warning("giving a message back to its queue: %s", exc)
                    await batch[0].requeue()
                    return
                logger.exception("dead-lettering a message that cannot be processed")
                await batch[0].dead_letter("processing failed; see the scheduler's log")
                return
        self._store_backoff.reset()
        for delivery in batch:
            await delivery.ack()

    # Events

    async def _handle_events(self, batch: list[Delivery]) -> None:
        now = self.now_ms()
        records: list[m.EventRecord] = []
        for delivery in list(batch):
            try:
                records.append(event_from_delivery(delivery, now))
            except errors.EventError as exc:
                logger.error("dead-lettering a bad event message: %s", exc)
                batch.remove(delivery)
                await delivery.dead_letter(str(exc))
        if records:
            await self.process_events(records)

    async def process_events(self, records: Sequence[m.EventRecord]) -> None:
        # One order everywhere (ids sort by time), so that two transactions over the same
        # events (a consumer and a sweep) wait for each other instead of deadlocking.
        records = sorted(records, key=lambda record: record.internal_id)
        await self._refresh_if_unknown(records)
        # Listeners are matched as of each event's arrival (a timeout counts until then).
        received = min(record.received_at for record in records) if records else 0
        candidates = await self._store.wait_candidates(records, received)
        env = self._settings.env
        plans = [
            (
                record,
                planning.plan_event(
                    record, self._registry, candidates.get(record.internal_id, []), env=env
                ),
            )
            for record in records
        ]
        applied = await self._store.process_events(plans, self.now_ms())
        _metrics.EVENTS.inc(len(records))
        _metrics.count_flow(applied.flow)
        await self._publish(applied)

    async def _refresh_if_unknown(self, records: Sequence[m.EventRecord]) -> None:
        # A function registered since the last periodic refresh should not miss its first
        # events; refreshing on every unknown event would cost a query each, hence the pause.
        if time.monotonic() - self._registry_checked < _UNKNOWN_EVENT_REFRESH_S:
            return
        unknown = (r for r in records if r.target is None and not r.name.startswith("tideflow/"))
        if any(not self._registry.knows_event(record.name) for record in unknown):
            self._registry_checked = time.monotonic()
            await self._registry.refresh(self._store)

    # Outcomes

    async def _handle_outcomes(self, batch: list[Delivery]) -> None:
        job_ids: list[str] = []
        for delivery in list(batch):
            try:
                job_ids.extend(OutcomeMessage.decode(delivery.body, self._seal).job_ids)
            except (ValueError, TypeError, errors.SignatureError) as exc:
                batch.remove(delivery)
                await delivery.dead_letter(f"not an outcome message: {exc}")
        await self.process_outcomes(job_ids)

    async def process_outcomes(self, job_ids: Sequence[str]) -> None:
        if not job_ids:
            return
        outcomes = await self._store.job_outcomes(job_ids)
        if any(self._registry.get(outcome.run.function_id) is None for outcome in outcomes):
            await self._registry.refresh(self._store)
        now = self.now_ms()
        batch = [(outcome.job.job_id, self._plan_outcome(outcome, now)) for outcome in outcomes]
        results = await self._store.apply_outcomes(batch, now)
        published = m.Applied()
        for outcome, (_, changes), applied in zip(outcomes, batch, results, strict=True):
            published.extend(applied)
            _metrics.count_retries(outcome.run.function_id, changes)
            for change in changes:
                if isinstance(change, m.FinishRun) and applied.done:
                    store_metrics.run_finished(outcome.run.function_id, change.status)
                if isinstance(change, (m.AddWait, m.ScheduleRetry)):
                    self._timer_wakeup.set()
        await self._publish(published)

    def _plan_outcome(self, outcome: m.JobOutcome, now: int) -> list[m.Change]:
        try:
            return planning.plan_outcome(
                outcome,
                self._registry,
                now=now,
                backoff_base_ms=self._settings.retry_backoff_base_ms,
                rng=self._rng,
            )
        except (KeyError, ValueError, TypeError) as exc:
            logger.exception("bad outcome of job %s", outcome.job.job_id)
            error = ErrorInfo("EngineError", f"unplannable job outcome: {exc!r}")
            return [m.FinishRun(outcome.run.run_id, m.FAILED, error=error)]

    # Offloaded requests' results

    async def _handle_offloaded(self, batch: list[Delivery]) -> None:
        results = []
        for delivery in list(batch):
            try:
                results.append(decode_offloaded(delivery.body, self._seal))
            except (ValueError, TypeError, errors.SignatureError) as exc:
                batch.remove(delivery)
                await delivery.dead_letter(f"not an offloaded result message: {exc}")
        await self.process_offloaded(results)

    async def process_offloaded(self, results: Sequence[protocol.OffloadResult]) -> None:
        if not results:
            return
        if any(self._registry.get(result.function_id) is None for result in results):
            await self._registry.refresh(self._store)
        now = self.now_ms()
        batch = [
            planning.plan_offloaded(
                result,
                self._registry,
                now=now,
                backoff_base_ms=self._settings.retry_backoff_base_ms,
                rng=self._rng,
            )
            for result in results
        ]
        published = m.Applied()
        for applied in await self._store.apply_changes(batch, now):
            published.extend(applied)
        if any(isinstance(change, m.ScheduleRetry) for changes in batch for change in changes):
            self._timer_wakeup.set()
        await self._publish(published)

    # Timers

    async def _timers_loop(self) -> None:
        backoff = Backoff(base_s=_STORE_RETRY_S, cap_s=_STORE_RETRY_CAP_S)
        while True:
            try:
                fired = await self.fire_due_timers()
                backoff.reset()
            except errors.StoreError as exc:
                await pause(backoff, logger, "firing timers", exc)
                fired = 0
            except Exception:  # the loop must outlive any one timer
                logger.exception("firing timers failed")
                fired = 0
            if fired:
                continue
            self._timer_wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._timer_wakeup.wait(), self._poll_s)

    async def fire_due_timers(self) -> int:
        now = self.now_ms()
        claim_until = now + int(self._settings.lease_s * 1000)
        timers = await self._store.claim_timers(self._owner, now, claim_until, _BATCH)
        for timer in timers:
            _metrics.observe_timer(timer, now)
        # Sleeps, wait timeouts, retries and starts change only their runs: one transaction
        # fires them all. The others (cron, holds, deadlines, cancellations) go one by one.
        simple = [timer for timer in timers if timer.kind in _RUN_TIMERS]
        if simple:
            batch = [
                (timer, planning.plan_timer(timer, self._registry, now, env=self._settings.env))
                for timer in simple
            ]
            published = m.Applied()
            for applied in await self._store.fire_timers(batch, self._owner, self.now_ms()):
                published.extend(applied)
            await self._publish(published)
        for timer in timers:
            if timer.kind in _RUN_TIMERS:
                continue
            if timer.kind in cancel_requests.KINDS:
                applied = await cancel_requests.fire(self._store, timer, self._owner, self.now_ms())
                await self._publish(applied)
                continue
            if timer.kind == m.TIMER_TIMEOUT:
                # A deadline depends on the run as it is now (started? ended?).
                run = await self._store.get_run(timer.run_id)
                changes = planning.plan_timeout(timer, run, self.now_ms())
            else:
                changes = planning.plan_timer(
                    timer, self._registry, self.now_ms(), env=self._settings.env
                )
            applied = await self._store.fire_timer(timer, self._owner, changes, self.now_ms())
            await self._publish(applied)
        return len(timers)

    # Sweeping: recovers every notification that was lost to a crash or a broker outage.

    async def _sweeper_loop(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(self._sweep_s)
            try:
                await self.sweep(grace_ms=int(self._settings.lease_s * 1000))
                failures = 0
            except errors.StoreError as exc:
                failures += 1
                log_failure(logger, "sweeping", failures, exc)
            except Exception:  # the loop must outlive any one sweep
                logger.exception("sweeping failed")

    async def sweep(self, *, grace_ms: int) -> None:
        now = self.now_ms()
        for job in await self._store.stale_jobs(now, now - grace_ms, _BATCH * 4):
            logger.info("re-dispatching job %s of run %s", job.job_id, job.run_id)
            _metrics.REDISPATCHED.inc()
            await self._dispatcher.publish(m.Applied(jobs=[job]))
        stale_outcomes = await self._store.stale_outcomes(now - grace_ms, _BATCH)
        await self.process_outcomes(stale_outcomes)
        stale_events = await self._store.unprocessed_events(now - grace_ms, _BATCH)
        if stale_events:
            await self.process_events(stale_events)
        await self._store.forget_gate_state(now, _BATCH * 4)
        await self.forget_history(before=now - self._settings.retention_ms)
        # Admission is woken by the transaction that creates a pending job or frees a slot; a
        # process that died between that commit and its admission leaves the pool to us.
        await self.admit(await self._store.pending_slot_keys(_BATCH))

    async def forget_history(self, *, before: int) -> views.Forgotten:
        """Retention: deletes runs that ended, and events received, before `before`, batch by
        batch while batches come back full. Returns how many runs and events went."""
        runs = events = 0
        for _ in range(_RETENTION_BATCHES_PER_SWEEP):
            forgotten = await self._store.forget_history(before, _RETENTION_BATCH)
            runs += forgotten.runs
            events += forgotten.events
            if max(forgotten.runs, forgotten.events) < _RETENTION_BATCH:
                break
            await asyncio.sleep(0)  # the other loops get the store between batches
        if runs or events:
            logger.info("retention: deleted %d finished runs and %d events", runs, events)
        return views.Forgotten(runs=runs, events=events)

    # Admission

    async def _publish(self, applied: m.Applied) -> None:
        """Publishes what a committed change set made, then admits into the pools it touched."""
        for run in applied.cancelled:
            store_metrics.run_finished(run.function_id, m.CANCELLED)
        await self._dispatcher.publish(applied)
        if applied.admission_keys:
            await self.admit(applied.admission_keys)

    async def admit(self, keys: Iterable[str]) -> None:
        """Admits waiting jobs of these concurrency pools while slots are free, and publishes
        them; a pool with more waiting than one pass reads gets another pass."""
        pending = set(keys)
        while pending:
            jobs, pending = await self._store.admit(
                sorted(pending), self.now_ms(), concurrency.admit, per_key=_ADMIT_PER_POOL
            )
            _metrics.count_admitted(jobs)
            await self._dispatcher.publish(m.Applied(jobs=jobs))

    async def _registry_loop(self) -> None:
        failures = 0
        while True:
            try:
                await self._registry.refresh(self._store)
                timers = [
                    cron_timer(spec.function_id, cron, after_ms=self.now_ms())
                    for spec, cron in self._registry.crons()
                ]
                if timers:
                    await self._store.add_timers(timers)
                failures = 0
            except errors.StoreError as exc:
                failures += 1
                log_failure(logger, "reading the registry", failures, exc)
            await asyncio.sleep(self._registry_refresh_s)
