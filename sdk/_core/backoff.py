"""Exponential backoff with jitter for reconnection loops, and when a failure is worth a warning."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Literal

Jitter = Literal["full", "equal", "none"]


def should_warn(attempt: int, *, warn_every: int = 64) -> bool:
    """Whether failure number `attempt` in a row deserves a warning rather than a debug line:
    the 1st, 2nd, 4th, 8th, ... and every `warn_every`-th."""
    return attempt >= 1 and (attempt & (attempt - 1) == 0 or attempt % warn_every == 0)


class Backoff:
    """The delays of a loop that retries an operation (connecting, consuming, publishing) until
    it succeeds: `base_s * factor ** (n - 1)` after the n-th failure in a row, capped at `cap_s`,
    then jittered so that processes which failed together do not retry together.

    Jitter: `"full"` draws the delay uniformly from [0, d]; `"equal"` (the default) from
    [d/2, d], so it never collapses to nothing; `"none"` keeps d. The state is only the count of
    failures since the last success; nothing here sleeps except `sleep()`.

    Logging: a loop that logs every failure floods its log during an outage. `should_warn()` is
    true for the 1st, 2nd, 4th, 8th, ... failure in a row and then every `warn_every`-th one;
    log the others at debug level.

    One instance per loop (it counts that loop's failures in a row). Use::

        backoff = Backoff(base_s=0.5, cap_s=10.0)
        while not stop.is_set():
            try:
                async for delivery in broker.consume(queue, prefetch=10):
                    backoff.reset()  # a success: the next failure starts from base_s
                    ...
            except errors.BrokerError as exc:
                delay = backoff.next_delay()  # counts the failure
                logger.log(
                    logging.WARNING if backoff.should_warn() else logging.DEBUG,
                    "consuming %s failed (attempt %d: %s); again in %.1fs",
                    queue, backoff.attempt, exc, delay,
                )
                await asyncio.sleep(delay)  # or `await backoff.sleep()`, which counts too

    Args:
        base_s: the delay after the first failure, before jitter.
        cap_s: the longest delay, before jitter.
        factor: how much the delay grows per failure.
        jitter: `"full"`, `"equal"` or `"none"`.
        warn_every: past the powers of two, how many failures between warnings.
        rng: the source of jitter (a seeded `random.Random` in tests).

    Raises:
        ValueError: `base_s` not in (0, cap_s], `factor` below 1, an unknown `jitter`, or
            `warn_every` below 1.
    """

    def __init__(
        self,
        *,
        base_s: float,
        cap_s: float,
        factor: float = 2.0,
        jitter: Jitter = "equal",
        warn_every: int = 64,
        rng: random.Random | None = None,
    ) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError(f"need 0 < base_s <= cap_s, got base_s={base_s}, cap_s={cap_s}")
        if factor < 1:
            raise ValueError(f"factor must be at least 1, got {factor}")
        if jitter not in ("full", "equal", "none"):
            raise ValueError(f"jitter must be 'full', 'equal' or 'none', got {jitter!r}")
        if warn_every < 1:
            raise ValueError(f"warn_every must be positive, got {warn_every}")
        self.base_s = base_s
        self.cap_s = cap_s
        self.factor = factor
        self.jitter: Jitter = jitter
        self.warn_every = warn_every
        self._rng = rng or random.Random()
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """How many failures in a row were counted since the last `reset()`."""
        return self._attempt

    def delay_for(self, attempt: int) -> float:
        """The delay, in seconds, after failure number `attempt` (1 for the first) in a row."""
        try:
            ceiling = min(self.cap_s, self.base_s * self.factor ** max(0, attempt - 1))
        except OverflowError:  # a long outage: the cap was reached long ago
            ceiling = self.cap_s
        if self.jitter == "full":
            return self._rng.uniform(0, ceiling)
        if self.jitter == "equal":
            return ceiling / 2 + self._rng.uniform(0, ceiling / 2)
        return ceiling

    def next_delay(self) -> float:
        """Counts one more failure and returns the delay before the next attempt."""
        self._attempt += 1
        return self.delay_for(self._attempt)

    def reset(self) -> None:
        """Records a success: the next failure starts again from `base_s`."""
        self._attempt = 0

    def should_warn(self, attempt: int | None = None) -> bool:
        """Whether failure number `attempt` (by default the last one counted) deserves a
        warning: the 1st, 2nd, 4th, 8th, ... and every `warn_every`-th."""
        n = self._attempt if attempt is None else attempt
        return should_warn(n, warn_every=self.warn_every)

    async def sleep(self) -> float:
        """Counts one more failure, sleeps its delay, and returns the delay slept."""
        delay = self.next_delay()
        await asyncio.sleep(delay)
        return delay


def log_failure(
    logger: logging.Logger,
    what: str,
    attempt: int,
    exc: BaseException,
    *,
    then: str = "",
    warn_every: int = 64,
) -> None:
    """Logs failure number `attempt` in a row of `what`, followed by `then`: a warning only
    now and then (see `should_warn`), a debug line otherwise."""
    level = logging.WARNING if should_warn(attempt, warn_every=warn_every) else logging.DEBUG
    logger.log(level, "%s failed (attempt %d: %s)%s", what, attempt, exc, then)


async def pause(
    backoff: Backoff,
    logger: logging.Logger,
    what: str,
    exc: BaseException,
    *,
    stop: asyncio.Event | None = None,
) -> None:
    """Counts a failure of `what`, logs it (`log_failure`), and waits out the backoff's
    delay, or until `stop` is set."""
    delay = backoff.next_delay()
    log_failure(
        logger,
        what,
        backoff.attempt,
        exc,
        then=f"; again in {delay:.1f}s",
        warn_every=backoff.warn_every,
    )
    if stop is None:
        await asyncio.sleep(delay)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay):
            await stop.wait()
