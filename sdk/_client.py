from __future__ import annotations

import asyncio
import datetime
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import pydantic

from . import errors
from ._checkpointing import Checkpointing
from ._core import realtime as rt
from ._core.ids import new_id
from ._event import Event, parse_events
from ._function import Function, Handler, make_function
from ._middleware import Chain, MiddlewareFactory, send_through
from ._realtime import Channel, Realtime, Subscription, Topic
from ._realtime import resolve as resolve_topic
from ._settings import Settings
from ._triggers import Trigger
from ._types import is_name

_SEND_TIMEOUT_S = 30.0


class Client:
    """An app: the functions it defines, and how it sends events.

    Args:
        app_id: the app's name; a function's id is `<app_id>-<fn_id>`.
        event_key: the key for `POST /e/{key}` (default `TIDEFLOW_EVENT_KEY`).
        signing_key: default `TIDEFLOW_SIGNING_KEY`.
        logger: the logger handlers get as `ctx.logger`.
        middleware: `tideflow.Middleware` / `tideflow.MiddlewareSync` classes (or factories
            `(client, raw_request) -> middleware`), run around every function of this client
            (before the function's own) and around `send`.
        schemas: event name -> pydantic model; `send` validates `data` against it and handlers
            see `ctx.event.data` as that model's instance.
        checkpointing: the default of its functions' `checkpointing=`: a
            `tideflow.Checkpointing`, or False to hand every run back to the scheduler after each
            step (default `tideflow.Checkpointing()`).
        database_url: default `TIDEFLOW_DATABASE_URL`.
        broker_url: default `TIDEFLOW_BROKER_URL`; with `amqp://`, `send` publishes straight to
            the events exchange, otherwise it posts to `TIDEFLOW_API_URL`.
    """

    def __init__(
        self,
        *,
        app_id: str,
        event_key: str | None = None,
        signing_key: str | None = None,
        logger: logging.Logger | None = None,
        middleware: Sequence[MiddlewareFactory] | None = None,
        schemas: Mapping[str, type[pydantic.BaseModel]] | None = None,
        database_url: str | None = None,
        broker_url: str | None = None,
        settings: Settings | None = None,
        checkpointing: Checkpointing | bool | None = None,
    ) -> None:
        if not is_name(app_id):
            raise errors.ConfigError(f"app_id: must be a non-empty string, got {app_id!r}")
        self.settings = settings or Settings.from_env()
        self.app_id = app_id
        self.event_key = event_key or self.settings.event_key
        self.signing_key = signing_key or self.settings.signing_key
        self.logger = logger or logging.getLogger(f"tideflow.app.{app_id}")
        self.middleware = _checked_middleware(middleware, where="Client")
        self.schemas = dict(schemas or {})
        self.database_url = database_url or self.settings.database_url
        self.broker_url = broker_url or self.settings.broker_url
        self.checkpointing = checkpointing
        self.functions: list[Function] = []
        self.realtime = Realtime(
            signing_key=self.signing_key, broker_url=self.broker_url, api_url=self.settings.api_url
        )
        self._send_hook: Callable[[list[dict[str, Any]]], Any] | None = None

    def create_function(
        self,
        *,
        fn_id: str,
        trigger: Trigger | Sequence[Trigger],
        name: str | None = None,
        retries: int = 4,
        on_failure: Handler | None = None,
        checkpointing: Checkpointing | bool | None = None,
        middleware: Sequence[MiddlewareFactory] | None = None,
    ) -> Callable[[Handler], Function]:
        """Decorates a handler `(ctx) -> result` as a durable `Function` of this app.

        `middleware` runs after the client's, in the order given (see `tideflow.Middleware`).
        """
        own_middleware = _checked_middleware(middleware, where=fn_id)

        def decorate(handler: Handler) -> Function:
            function = make_function(
                app_id=self.app_id,
                fn_id=fn_id,
                handler=handler,
                trigger=trigger,
                name=name,
                retries=retries,
                on_failure=on_failure,
                checkpointing=self.checkpointing if checkpointing is None else checkpointing,
            )
            taken = {existing.id for existing in self.functions}
            for item in function.with_companions():
                if item.id in taken:
                    raise errors.ConfigError(
                        f"function {item.id!r} is defined twice in app {self.app_id!r}"
                    )
            for item in function.with_companions():
                item.schemas = self.schemas
                item.logger = self.logger
                item.client = self
                item.middleware = [*self.middleware, *own_middleware]
            self.functions.extend(function.with_companions())
            return function

        return decorate

    def prepare(
        self, events: Event | dict[str, Any] | Sequence[Event | dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """Validates events (and their schemas) into wire records carrying fresh ids."""
        return self._records(events, check_schemas=True)

    def _records(
        self,
        events: Event | dict[str, Any] | Sequence[Event | dict[str, Any]],
        *,
        check_schemas: bool,
    ) -> list[dict[str, Any]]:
        parsed = parse_events(list(events) if isinstance(events, (list, tuple)) else events)
        records = []
        for event in parsed:
            model = self.schemas.get(event.name) if check_schemas else None
            if model is not None:
                try:
                    model.model_validate(event.data)
                except pydantic.ValidationError as exc:
                    raise errors.EventError(
                        f"event {event.name!r}: data does not match its schema: {exc}"
                    ) from None
            record = event.model_dump(mode="json")
            record["internal_id"] = new_id()
            records.append(record)
        return records

    async def send(
        self, events: Event | dict[str, Any] | Sequence[Event | dict[str, Any]]
    ) -> list[str]:
        """Sends one event or a list; returns their ids, in order.

        Client middleware sees them in `before_send_events` / `after_send_events`.
        """
        if not self.middleware:
            return await self._send(events)
        chain = Chain.start(self.middleware, self, None)
        listed = parse_events(list(events) if isinstance(events, (list, tuple)) else events)
        # Schemas describe the data as the sender wrote it, before middleware (encryption) ran.
        self.prepare(listed)
        return await send_through(chain, listed, lambda sent: self._send(sent, checked=True))

    async def _send(
        self,
        events: Event | dict[str, Any] | Sequence[Event | dict[str, Any]],
        *,
        checked: bool = False,
    ) -> list[str]:
        records = self._records(events, check_schemas=not checked)
        if self._send_hook is not None:
            await self._send_hook(records)
        elif self.broker_url.startswith("amqp"):
            await self._publish(records)
        else:
            # The API gives events ids of its own.
            return await self._post([_without_id(record) for record in records])
        return [record["internal_id"] for record in records]

    def send_sync(
        self, events: Event | dict[str, Any] | Sequence[Event | dict[str, Any]]
    ) -> list[str]:
        """`send` for synchronous code."""
        result: list[list[str]] = []
        failure: list[BaseException] = []

        def target() -> None:
            try:
                result.append(asyncio.run(self.send(events)))
            except BaseException as exc:  # noqa: BLE001 - handed back to the calling thread
                failure.append(exc)

        # A thread of its own, so that send_sync works inside a running event loop too.
        thread = threading.Thread(target=target, name="tideflow-send")
        thread.start()
        thread.join()
        if failure:
            raise failure[0]
        return result[0]

    async def _post(self, records: list[dict[str, Any]]) -> list[str]:
        url = f"{self.settings.api_url}/e/{self.event_key or 'dev'}"
        try:
            async with httpx.AsyncClient(timeout=_SEND_TIMEOUT_S) as http:
                response = await http.post(url, json=records)
        except httpx.HTTPError as exc:
            raise errors.SendError(f"could not reach {url}: {exc}") from exc
        if response.status_code != 200:
            raise errors.SendError(f"{url} answered {response.status_code}: {response.text}")
        ids: list[str] = response.json()["ids"]
        return ids

    async def _publish(self, records: list[dict[str, Any]]) -> None:
        from tideflow.broker import create_broker, publish_events

        broker = create_broker(self.broker_url)
        async with broker:
            await publish_events(broker, records)

    def realtime_token(
        self,
        channel: Channel | str,
        topics: Sequence[Topic | str],
        ttl: datetime.timedelta | int | str = "1h",
    ) -> str:
        """A token letting its holder subscribe to these topics of `channel` for `ttl`.

        Signed with `signing_key` (HMAC-SHA256); without one, with a fixed development key that
        anyone can use: set `TIDEFLOW_SIGNING_KEY` wherever the API is reachable by others.
        """
        return self.realtime.token(channel, topics, ttl)

    def subscribe(self, token: str) -> Subscription:
        """The messages published from now on to the token's channel and topics:
        `async for message in client.subscribe(token)`."""
        return self.realtime.subscribe(token)

    async def publish(
        self, channel: Channel | str, topic: Topic | str, data: Any, *, run_id: str | None = None
    ) -> None:
        """Publishes a realtime message (what `ctx.publish` does, from anywhere)."""
        name, typed = resolve_topic(channel, topic)
        await self.realtime.publish(rt.message(name, typed.name, typed.encode(data), run_id))

    def attach_sender(self, hook: Callable[[list[dict[str, Any]]], Any] | None) -> None:
        """Used by an engine in this process so `send` hands events over without HTTP."""
        self._send_hook = hook


def _without_id(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key != "internal_id"}


def _checked_middleware(
    middleware: Sequence[MiddlewareFactory] | None, *, where: str
) -> list[MiddlewareFactory]:
    checked = list(middleware or [])
    for item in checked:
        if not callable(item):
            raise errors.ConfigError(
                f"{where}: middleware must be Middleware classes or factories, got {item!r}"
            )
    return checked
