from __future__ import annotations

import dataclasses
import datetime

from . import errors
from ._core.durations import to_ms

_Duration = datetime.timedelta | int | str


@dataclasses.dataclass(frozen=True, init=False)
class Checkpointing:
    """How a worker runs a run's consecutive `run` / `send_event` steps in one job.

    A job runs steps back to back for up to `max_runtime`, then hands the run back to the
    scheduler. Finished results are written when `buffered_steps` of them are waiting or
    `max_interval` has passed since the first of them finished, whichever comes first; the
    write overlaps the next step's execution rather than delaying it. With the defaults, a step
    whose body has returned is never run again once the next step's body has been going for
    longer than one write.

    Args:
        max_runtime: how long one job may keep running steps (a duration).
        buffered_steps: finished results to gather before a write (1 writes each at once).
        max_interval: the longest a finished result waits for its write.

    Raises:
        ConfigError: a duration that is not one, or `buffered_steps` below 1.
    """

    max_runtime_ms: int
    buffered_steps: int
    max_interval_ms: int

    def __init__(
        self,
        max_runtime: _Duration = "60s",
        buffered_steps: int = 1,
        max_interval: _Duration = "1s",
    ) -> None:
        if isinstance(buffered_steps, bool) or not isinstance(buffered_steps, int):
            raise errors.ConfigError(
                f"Checkpointing.buffered_steps: expected an int, got {buffered_steps!r}"
            )
        if buffered_steps < 1:
            raise errors.ConfigError(
                f"Checkpointing.buffered_steps: must be at least 1, got {buffered_steps}"
            )
        runtime = to_ms(max_runtime, field="Checkpointing.max_runtime")
        if runtime <= 0:
            raise errors.ConfigError(
                f"Checkpointing.max_runtime: must be positive, got {max_runtime!r}"
            )
        object.__setattr__(self, "max_runtime_ms", runtime)
        object.__setattr__(self, "buffered_steps", buffered_steps)
        object.__setattr__(
            self, "max_interval_ms", to_ms(max_interval, field="Checkpointing.max_interval")
        )


DEFAULT = Checkpointing()


def resolve(value: Checkpointing | bool | None, *, where: str) -> Checkpointing | None:
    """The policy a `checkpointing=` argument names: None (the default policy), a
    `Checkpointing`, or False (a job runs one step, or one parallel group, then hands back)."""
    if value is None or value is True:
        return DEFAULT
    if value is False:
        return None
    if isinstance(value, Checkpointing):
        return value
    raise errors.ConfigError(
        f"{where}: checkpointing must be tideflow.Checkpointing(...) or False, got {value!r}"
    )
