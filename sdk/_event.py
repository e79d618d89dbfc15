from __future__ import annotations

import json
from typing import Any

import pydantic

from . import errors

MAX_EVENT_BYTES = 512 * 1024
MAX_EVENTS_PER_SEND = 5_000
MAX_TS = 253_402_300_799_999
"""The last millisecond of year 9999: later `ts` values fit no date type, nor the store's."""
SYSTEM_PREFIX = "tideflow/"


class Event(pydantic.BaseModel):
    """An event: what happened (`name`) and its payload (`data`).

    `id` is a deduplication key: a second event with the same `id` within 24 hours is accepted
    and stored, and starts no run. `ts` is milliseconds since the epoch (set on receipt when
    absent).
    """

    model_config = pydantic.ConfigDict(extra="forbid")

    name: str
    data: Any = pydantic.Field(default_factory=dict)
    id: str | None = None
    ts: int | None = None
    user: Any = None
    v: str | None = None

    def __init__(self, name: str | None = None, data: Any = None, /, **fields: Any) -> None:
        if name is not None:
            fields["name"] = name
        if data is not None:
            fields["data"] = data
        super().__init__(**fields)

    @pydantic.field_validator("name")
    @classmethod
    def _name_is_set(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("an event needs a non-empty name")
        return value

    @pydantic.field_validator("name", "id", "v")
    @classmethod
    def _has_no_nul(cls, value: str | None) -> str | None:
        # No store keeps NUL in text (PostgreSQL refuses it), and no name needs one.
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters (\\u0000)")
        return value

    @pydantic.field_validator("ts")
    @classmethod
    def _ts_is_a_time(cls, value: int | None) -> int | None:
        if value is not None and not 0 <= value <= MAX_TS:
            raise ValueError(f"ts must be milliseconds since the epoch, 0..{MAX_TS}; got {value}")
        return value

    @pydantic.field_validator("data")
    @classmethod
    def _data_is_object(cls, value: Any) -> Any:
        if isinstance(value, pydantic.BaseModel):
            return value.model_dump(mode="json")
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError(f"event data must be a JSON object, got {type(value).__name__}")
        return value


def parse_events(payload: Any, *, allow_system: bool = False) -> list[Event]:
    """Validates one event or a list of events, as received on the wire.

    Raises:
        EventError: naming the first bad event and what is wrong with it.
    """
    items = payload if isinstance(payload, list) else [payload]
    if not items:
        raise errors.EventError("no events to send")
    if len(items) > MAX_EVENTS_PER_SEND:
        raise errors.EventError(
            f"{len(items)} events in one send; the limit is {MAX_EVENTS_PER_SEND}"
        )
    events: list[Event] = []
    for index, item in enumerate(items):
        where = f"event {index}" if isinstance(payload, list) else "event"
        if isinstance(item, Event):
            event = item
        elif isinstance(item, dict):
            try:
                event = Event.model_validate(item)
            except pydantic.ValidationError as exc:
                raise errors.EventError(f"{where}: {_first_problem(exc)}") from None
        else:
            raise errors.EventError(f"{where}: expected a JSON object, got {type(item).__name__}")
        check_event(event, where=where, allow_system=allow_system)
        events.append(event)
    return events


def check_event(event: Event, *, where: str = "event", allow_system: bool = False) -> None:
    if not allow_system and event.name.startswith(SYSTEM_PREFIX):
        raise errors.EventError(f"{where}: names starting {SYSTEM_PREFIX!r} are reserved")
    try:
        size = len(json.dumps(event.model_dump(mode="json"), separators=(",", ":")).encode())
    except (TypeError, ValueError) as exc:
        raise errors.EventError(f"{where}: data is not JSON-serialisable: {exc}") from None
    if size > MAX_EVENT_BYTES:
        raise errors.EventError(
            f"{where} {event.name!r} is {size} bytes; the limit is {MAX_EVENT_BYTES} (512 KiB)"
        )


def _first_problem(exc: pydantic.ValidationError) -> str:
    problem = exc.errors()[0]
    field = ".".join(str(part) for part in problem["loc"]) or "event"
    message = str(problem["msg"]).removeprefix("Value error, ")
    if problem["type"] == "missing":
        message = "is required"
    return f"{field} {message}" if field != "event" else message


def apply_schemas(ctx: Any, schemas: dict[str, type[pydantic.BaseModel]]) -> None:
    """Gives `ctx.event.data` / `ctx.events[i].data` as instances of their schema's model.

    Done after middleware's `transform_input`, which sees (and may decrypt) the plain data.
    Raises `pydantic.ValidationError` for data that does not match.
    """
    if not schemas:
        return
    ctx.event = _typed(ctx.event, schemas)
    ctx.events = [_typed(event, schemas) for event in ctx.events]


def _typed(event: Event, schemas: dict[str, type[pydantic.BaseModel]]) -> Event:
    model = schemas.get(event.name)
    if model is None or isinstance(event.data, model):
        return event
    return event.model_copy(update={"data": model.model_validate(event.data)})
