"""Publishes what committed store changes ask for."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from tideflow import errors
from tideflow._core import protocol

from . import _topology as topology
from ._base import Broker
from ._messages import CancelNotice, JobMessage, Seal, offload_message, publish_events

logger = logging.getLogger(__name__)


class _Job(Protocol):
    @property
    def job_id(self) -> str: ...
    @property
    def run_id(self) -> str: ...
    @property
    def function_id(self) -> str: ...
    @property
    def app_id(self) -> str: ...


class _Event(Protocol):
    def wire(self) -> dict[str, Any]: ...


class _Run(Protocol):
    @property
    def run_id(self) -> str: ...
    @property
    def app_id(self) -> str: ...


class Changes(Protocol):
    """What a committed change set asks to be published (the store's `Applied`)."""

    @property
    def jobs(self) -> Sequence[_Job]: ...
    @property
    def events(self) -> Sequence[_Event]: ...
    @property
    def cancelled(self) -> Sequence[_Run]: ...
    @property
    def offloads(self) -> Sequence[protocol.OffloadJob]: ...


class Dispatcher:
    """Publishes what committed changes ask for: step jobs and offloaded requests to their app's
    queues, events to the exchange, cancel notices to the app's workers. A lost publish is
    recovered by the scheduler's sweeper (a lost offloaded request by its step's deadline, and
    a lost notice by the worker's next write), so failures here are only logged."""

    def __init__(self, broker: Broker, seal: Seal) -> None:
        self._broker = broker
        self._seal = seal
        self._declared: set[str] = set()
        self._declared_offload: set[str] = set()

    async def publish(self, changes: Changes) -> None:
        try:
            for app_id in {job.app_id for job in changes.jobs} - self._declared:
                await self._broker.declare_queue(
                    topology.jobs_queue(app_id),
                    exchange=topology.INTERNAL_EXCHANGE,
                    routing_keys=[topology.jobs_key(app_id)],
                )
                self._declared.add(app_id)
            for app_id in {job.app_id for job in changes.offloads} - self._declared_offload:
                await self._broker.declare_queue(
                    topology.offload_queue(app_id),
                    exchange=topology.INTERNAL_EXCHANGE,
                    routing_keys=[topology.offload_key(app_id)],
                )
                self._declared_offload.add(app_id)
            messages = [
                JobMessage(j.job_id, j.run_id, j.function_id, j.app_id).to_message(self._seal)
                for j in changes.jobs
            ]
            messages.extend(offload_message(job, self._seal) for job in changes.offloads)
            by_app: dict[str, list[str]] = {}
            for run in changes.cancelled:
                by_app.setdefault(run.app_id, []).append(run.run_id)
            messages.extend(
                CancelNotice(app_id, tuple(run_ids)).to_message(self._seal)
                for app_id, run_ids in by_app.items()
            )
            if messages:
                await self._broker.publish(messages)
            if changes.events:
                await publish_events(self._broker, [event.wire() for event in changes.events])
        except errors.BrokerError as exc:
            logger.warning("publish failed, the sweeper will retry: %s", exc)
        except errors.ConfigError as exc:  # a queue of another type: the operator must act
            logger.error("publish failed, the sweeper will retry: %s", exc)
