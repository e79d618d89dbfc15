"""Every error tideflow raises, under one root."""

from __future__ import annotations

import datetime
from typing import Any


class TideflowError(Exception):
    """Root of every tideflow error."""


class ConfigError(TideflowError):
    """A setting or a function definition is invalid; raised when it is created."""


class ExpressionError(ConfigError):
    """A CEL expression does not compile.

    Attributes:
        expression: the expression's text.
        reason: the parser's message.
    """

    def __init__(self, expression: str, reason: str) -> None:
        super().__init__(f"invalid expression {expression!r}: {reason}")
        self.expression = expression
        self.reason = reason


class EventError(TideflowError):
    """An event is malformed or over a limit; nothing of the send was accepted."""


class LimitError(TideflowError):
    """A documented limit was exceeded (steps per run, output size, ...)."""


class LifecycleError(TideflowError):
    """An object was used before it was opened or after it was closed."""


class StoreError(TideflowError):
    """The store failed to do what was asked."""


class StoreConnectionError(StoreError):
    """The database cannot be reached."""


class BrokerError(TideflowError):
    """The broker failed to do what was asked."""


class BrokerConnectionError(BrokerError):
    """The broker cannot be reached."""


class SignatureError(BrokerError):
    """An internal message is not signed with `TIDEFLOW_SIGNING_KEY`."""


class SendError(TideflowError):
    """`Client.send` could not hand the events over."""


class NonRetriableError(TideflowError):
    """Fails its step (or, raised outside steps, the run) at once, without further attempts."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class FetchError(NonRetriableError):
    """An offloaded request (`step.fetch`, `step.ai.infer`) cannot be made as asked: a URL that
    is not http(s), a body that is not JSON-serialisable, a host `TIDEFLOW_FETCH_ALLOW` does not
    list, a response over the 4 MiB output limit. It fails its step at once (the handler sees a
    `StepError` named `FetchError`)."""


class RetryAfterError(TideflowError):
    """Retries the step after `retry_after` (a duration or an aware datetime).

    Args:
        message: why the step failed.
        retry_after: a `timedelta`, int milliseconds, a duration string, or a datetime.
    """

    def __init__(
        self, message: str, retry_after: datetime.timedelta | int | str | datetime.datetime
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class StepTimeout(TideflowError):
    """A step body ran longer than `TIDEFLOW_STEP_TIMEOUT_S`; the attempt fails and is retried
    like any error. (Named as the run's error shows it.)"""


class StepError(TideflowError):
    """A step failed for good; raised inside the handler where it can be caught.

    Attributes:
        name: the original error's class name.
        message: its message.
        stack: its formatted traceback, when known.
    """

    def __init__(self, name: str, message: str, stack: str | None = None) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message
        self.stack = stack

    def to_dict(self) -> dict[str, Any]:
        """The error as the HTTP API shows it: `{"name", "message", "stack"}`."""
        return {"name": self.name, "message": self.message, "stack": self.stack}


class UnroutableError(BrokerError):
    """A published message reached no queue: none is bound to its exchange by a key matching
    its routing key. Both brokers raise it (RabbitMQ returns such a mandatory publish).

    Attributes:
        exchange: the exchange the message was published to.
        routing_key: its routing key.
    """

    def __init__(self, exchange: str, routing_key: str) -> None:
        super().__init__(
            f"no queue is bound to exchange {exchange!r} for routing key {routing_key!r}:"
            " the message was not routed"
        )
        self.exchange = exchange
        self.routing_key = routing_key


class MiddlewareError(TideflowError):
    """A middleware hook raised; the run (or, for a step's `transform_output`, the step's
    attempt) fails with this error.

    Attributes:
        middleware: the middleware's class name.
        hook: the hook that raised.
    """

    def __init__(self, middleware: str, hook: str, cause: BaseException) -> None:
        self.middleware = middleware
        self.hook = hook
        self.message = f"middleware {middleware}.{hook} raised {type(cause).__name__}: {cause}"
        super().__init__(self.message)


class RealtimeError(TideflowError):
    """A realtime publish or subscription failed: data not matching its topic's schema, an
    unknown topic, an unreachable API, a refused token."""
