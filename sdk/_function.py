from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pydantic

from . import errors
from ._checkpointing import DEFAULT as DEFAULT_CHECKPOINTING
from ._checkpointing import Checkpointing
from ._checkpointing import resolve as resolve_checkpointing
from ._core.system_events import FAILED_EVENT
from ._flow_control import FlowControl, flow_control_config
from ._triggers import Trigger, TriggerCron, TriggerEvent
from ._types import is_name

if TYPE_CHECKING:
    from ._client import Client
    from ._middleware import MiddlewareFactory

MAX_TRIGGERS = 10
MAX_RETRIES = 20
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")

Handler = Callable[..., Any]


class Function:
    """A durable function: its handler, triggers and retry policy.

    Made by `Client.create_function`; `id` is `<app_id>-<fn_id>`.
    """

    def __init__(
        self,
        *,
        app_id: str,
        fn_id: str,
        handler: Handler,
        triggers: list[Trigger],
        name: str | None,
        retries: int,
        on_failure: Handler | None,
        checkpointing: Checkpointing | None = DEFAULT_CHECKPOINTING,
        flow_control: dict[str, Any] | None = None,
    ) -> None:
        self.app_id = app_id
        self.fn_id = fn_id
        self.id = f"{app_id}-{fn_id}"
        self.name = name or fn_id
        self.handler = handler
        self.triggers = triggers
        self.retries = retries
        self.checkpointing = checkpointing
        """None: every job runs one step (or parallel group) and hands the run back."""
        self.flow_control = flow_control or {}
        """The checked flow-control options, as the scheduler reads them."""
        self.is_async = inspect.iscoroutinefunction(handler)
        self.schemas: dict[str, type[pydantic.BaseModel]] = {}
        self.logger = logging.getLogger(f"tideflow.app.{app_id}")
        self.client: Client | None = None
        self.middleware: list[MiddlewareFactory] = []
        """The client's middleware, then the function's."""
        self.on_failure: Function | None = None
        if on_failure is not None:
            self.on_failure = Function(
                app_id=app_id,
                fn_id=f"{fn_id}-failure",
                handler=on_failure,
                triggers=[
                    TriggerEvent(
                        event=FAILED_EVENT, expression=f"event.data.function_id == {self.id!r}"
                    )
                ],
                name=f"{self.name} (on failure)",
                retries=retries,
                on_failure=None,
                checkpointing=checkpointing,
            )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.handler(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<tideflow.Function {self.id}>"

    async def publish_realtime(self, message: dict[str, Any]) -> None:
        """Hands a realtime message from a run of this function to its client."""
        if self.client is None:
            raise errors.RealtimeError(f"function {self.id} has no client to publish through")
        await self.client.realtime.publish(message)

    def with_companions(self) -> list[Function]:
        """This function and its `on_failure` handler, which runs as a function of its own."""
        return [self] if self.on_failure is None else [self, self.on_failure]

    def config(self) -> dict[str, Any]:
        """What the scheduler needs to know of this function, as JSON."""
        return {
            "function_id": self.id,
            "app_id": self.app_id,
            "fn_id": self.fn_id,
            "name": self.name,
            "retries": self.retries,
            "triggers": [trigger.to_config() for trigger in self.triggers],
            **self.flow_control,
        }


def make_function(
    *,
    app_id: str,
    fn_id: str,
    handler: Handler,
    trigger: Trigger | Sequence[Trigger],
    name: str | None,
    retries: int,
    on_failure: Handler | None,
    checkpointing: Checkpointing | bool | None = None,
    flow_control: FlowControl | None = None,
) -> Function:
    if not is_name(fn_id) or not _ID.match(fn_id):
        raise errors.ConfigError(
            f"fn_id: {fn_id!r} must be letters, digits, '-', '_', '.' or ':' (starting alphanumeric)"
        )
    triggers = _triggers(fn_id, trigger)
    if not _is_count(retries, MAX_RETRIES):
        raise errors.ConfigError(
            f"{fn_id}: retries must be an int in 0..{MAX_RETRIES}, got {retries!r}"
        )
    if not _is_callable(handler):
        raise errors.ConfigError(f"{fn_id}: the handler must be callable")
    if on_failure is not None and not _is_callable(on_failure):
        raise errors.ConfigError(f"{fn_id}: on_failure must be callable, got {on_failure!r}")
    return Function(
        app_id=app_id,
        fn_id=fn_id,
        handler=handler,
        triggers=triggers,
        name=name,
        retries=retries,
        on_failure=on_failure,
        checkpointing=resolve_checkpointing(checkpointing, where=fn_id),
        flow_control=flow_control_config(fn_id, flow_control or FlowControl()),
    )


def _triggers(fn_id: str, trigger: Trigger | Sequence[Trigger]) -> list[Trigger]:
    triggers: list[object] = list(trigger) if isinstance(trigger, (list, tuple)) else [trigger]
    if not triggers:
        raise errors.ConfigError(f"{fn_id}: at least one trigger is required")
    if len(triggers) > MAX_TRIGGERS:
        raise errors.ConfigError(f"{fn_id}: {len(triggers)} triggers; the limit is {MAX_TRIGGERS}")
    checked: list[Trigger] = []
    for item in triggers:
        if not isinstance(item, (TriggerEvent, TriggerCron)):
            raise errors.ConfigError(
                f"{fn_id}: a trigger must be TriggerEvent or TriggerCron, got {item!r}"
            )
        checked.append(item)
    return checked


def _is_callable(value: object) -> bool:
    return callable(value)


def _is_count(value: object, maximum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum
