"""Concurrency: at most `limit` steps executing at once per key. Slots are counted (jobs that
were admitted and have not ended), never inferred from queue positions."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from tideflow._core.expressions import Expression
from tideflow.store import models as m

from .keys import compile_key, key_value


@dataclasses.dataclass(frozen=True)
class Constraint:
    limit: int
    key: Expression | None
    scope: str

    def slot_key(self, function_id: str, env: str, event: dict[str, Any]) -> str:
        """The name of the slot pool a job of this run draws from: per function (and key
        expression, so two keyed limits of one function never share a pool), or shared by
        every function of the environment or account whose key gives the same value."""
        value = key_value(self.key, event)
        if self.scope == "fn":
            expression = self.key.text if self.key is not None else ""
            return f"fn\x1f{function_id}\x1f{expression}\x1f{value}"
        if self.scope == "env":
            return f"env\x1f{env}\x1f{value}"
        return f"account\x1f{value}"


def slots(
    constraints: Sequence[Constraint], function_id: str, env: str, event: dict[str, Any]
) -> tuple[m.Slot, ...]:
    """The pools a run's steps draw from; one pool named twice obeys the lower limit."""
    limits: dict[str, int] = {}
    for constraint in constraints:
        key = constraint.slot_key(function_id, env, event)
        limits[key] = min(limits.get(key, constraint.limit), constraint.limit)
    return tuple(m.Slot(key, limit) for key, limit in limits.items())


def admit(waiting: Sequence[m.PendingJob], in_use: Mapping[str, int]) -> list[str]:
    """The jobs to admit, from jobs waiting in line order and the slots each pool has in use:
    each job in turn, if every pool it needs has a free slot under the job's limit. A job held
    by one full pool does not hold back jobs of other pools behind it."""
    used = dict(in_use)
    admitted = []
    for job in waiting:
        if all(used.get(slot.key, 0) < slot.limit for slot in job.slots):
            admitted.append(job.job_id)
            for slot in job.slots:
                used[slot.key] = used.get(slot.key, 0) + 1
    return admitted


def parse(config: list[dict[str, Any]] | None) -> tuple[Constraint, ...]:
    return tuple(
        Constraint(int(item["limit"]), compile_key(item.get("key")), item.get("scope", "fn"))
        for item in config or ()
    )
