from __future__ import annotations

import asyncio
import atexit
import datetime
import logging
import threading
import weakref
from collections.abc import Callable, Coroutine, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pydantic

from . import errors
from ._checkpointing import Checkpointing
from ._core import realtime as rt
from ._core.ids import new_id
from ._event import Event, parse_events
from ._flow_control import (
    Batch,
    Cancel,
    Concurrency,
    Debounce,
    FlowControl,
    Priority,
    RateLimit,
    Singleton,
    Throttle,
    Timeouts,
)
from ._function import Function, Handler, make_function
from ._middleware import Chain, MiddlewareFactory, send_through
from ._realtime import Channel, Realtime, Subscription, Topic
from ._realtime import resolve as resolve_topic
from ._settings import Settings
from ._triggers import Trigger
from ._types import is_name

if TYPE_CHECKING:
    from tideflow.broker import Broker

_SEND_TIMEOUT_S = 30.0
_T = TypeVar("_T")


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

    Raises:
        ConfigError: `app_id` is empty, a middleware is not a middleware class or factory, or
            a `TIDEFLOW_*` setting is not valid.

    Over `amqp://`, the client keeps its broker connection between sends: `send` opens it on
    its first call and reuses it for every later call from the same event loop; a send from
    another event loop (each pytest test has its own) replaces it with one of that loop.
    `send_sync` sends from an event loop of its own, in a daemon thread started on its first
    call, with its own connection. Close the client with `await client.aclose()` or
    `async with client:` (or `client.close()` / `with client:` in synchronous code), at the
    latest before the event loop of `send` ends; a send after that opens a new connection.
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
        self._connection: _Connection | None = None
        self._sync_sender: _LoopThread | None = None
        self._sync_lock = threading.Lock()
        self._closes_at_exit = False

    def create_function(
        self,
        *,
        fn_id: str,
        trigger: Trigger | Sequence[Trigger],
        name: str | None = None,
        retries: int = 4,
        on_failure: Handler | None = None,
        concurrency: int | Concurrency | Sequence[Concurrency] | None = None,
        throttle: Throttle | None = None,
        rate_limit: RateLimit | None = None,
        debounce: Debounce | None = None,
        priority: Priority | None = None,
        singleton: Singleton | None = None,
        idempotency: str | None = None,
        batch_events: Batch | None = None,
        cancel: Cancel | Sequence[Cancel] | None = None,
        timeouts: Timeouts | None = None,
        middleware: Sequence[MiddlewareFactory] | None = None,
        checkpointing: Checkpointing | bool | None = None,
    ) -> Callable[[Handler], Function]:
        """Decorates a handler `(ctx) -> result` as a durable `Function` of this app.

        The handler is `async def` (it gets a `Context`) or plain `def` (a `SyncContext`, run in
        a thread). Every option is checked here, so a bad definition fails at import, and a
        worker refuses to start with it.

        Args:
            fn_id: the function's id in the app; its full id is `<app_id>-<fn_id>`.
            trigger: a `TriggerEvent` or `TriggerCron`, or a list of up to 10.
            name: a display name (default `fn_id`).
            retries: extra attempts of each step, 0..20 (default 4: five attempts).
            on_failure: a handler run once, as a function of its own, when a run fails for
                good; its `ctx.event` is the `tideflow/function.failed` event.
            concurrency: an int, or up to 2 `Concurrency`: how many steps execute at once.
            throttle: a `Throttle`: how fast runs start (excess runs wait).
            rate_limit: a `RateLimit`: how many runs start per period (excess events start none).
            debounce: a `Debounce`: one run per burst of events, with the last one.
            priority: a `Priority`: how far ahead of its line a run's steps go.
            singleton: a `Singleton`: one unfinished run per key.
            idempotency: a CEL key expression over `event`: one run per key per 24 hours.
            batch_events: a `Batch`: one run per batch of events (`ctx.events`).
            cancel: up to 5 `Cancel`: events that cancel a run.
            timeouts: a `Timeouts`: cancel a run that waits to start, or takes, too long.
            middleware: run after the client's, in the order given (see `tideflow.Middleware`).
            checkpointing: a `Checkpointing`, or False; default the client's.

        Returns:
            A decorator; the decorated name becomes the `Function`.

        Raises:
            ConfigError: an option is out of range or of the wrong type, a trigger or key
                expression does not compile (`ExpressionError`), options clash (batching with
                rate limit, ...), or `fn_id` is already defined in this app. The message names
                the function and the option.
        """
        own_middleware = _checked_middleware(middleware, where=fn_id)
        flow_control = FlowControl(
            concurrency=concurrency,
            throttle=throttle,
            rate_limit=rate_limit,
            debounce=debounce,
            priority=priority,
            singleton=singleton,
            idempotency=idempotency,
            batch_events=batch_events,
            cancel=cancel,
            timeouts=timeouts,
        )

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
                flow_control=flow_control,
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

        With an `amqp://` broker the events are published to the `tideflow.events` exchange;
        otherwise they are posted to `TIDEFLOW_API_URL` (`POST /e/{event_key}`). Client
        middleware sees them in `before_send_events` / `after_send_events`.

        Args:
            events: a `tideflow.Event`, a dict of its fields, or a list of either.

        Returns:
            The engine's id of each event, in order (an event's own `id` field is only its
            deduplication key).

        Raises:
            EventError: an event is malformed, over 512 KiB, or its data does not match its
                schema (`schemas=`); a send of more than 5,000 events. Nothing is sent.
            SendError: the API or the broker could not be reached or refused the events.
            MiddlewareError: a middleware's send hook raised.
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
        """`send` for synchronous code; works inside a running event loop too.

        Sends from the client's own event loop, in a daemon thread started on the first call,
        so that the broker connection is kept between calls until `close()`.

        Raises:
            EventError, SendError, MiddlewareError: as `send`.
            LifecycleError: called from the client's own sending loop (await `send` there).
        """
        sender = self._sync_loop()
        if threading.current_thread() is sender.thread:
            raise errors.LifecycleError("send_sync called from its own loop: await send() there")
        return sender.run(self.send(events))

    async def aclose(self) -> None:
        """Closes the broker connections of `send` and `send_sync`. Safe to call twice; a later
        send opens a new connection."""
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close_from(asyncio.get_running_loop())
        if self._sync_sender is not None:
            await asyncio.to_thread(self._close_sync_sender)

    def close(self) -> None:
        """`aclose` for synchronous code. Inside the event loop that `send` used, await
        `aclose()` instead: this call cannot close that loop's connection without blocking it.
        """
        connection = self._connection
        if connection is not None and connection.is_current():
            raise errors.LifecycleError("close() inside the loop of send: await aclose() instead")
        self._connection = None
        if connection is not None:
            connection.close_elsewhere()
        self._close_sync_sender()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _sync_loop(self) -> _LoopThread:
        with self._sync_lock:
            if self._sync_sender is None:
                self._sync_sender = _LoopThread(self.broker_url)
                if not self._closes_at_exit:
                    # A daemon thread dies at exit without a word: close its connection first.
                    atexit.register(_close_at_exit, weakref.ref(self))
                    self._closes_at_exit = True
            return self._sync_sender

    def _close_sync_sender(self) -> None:
        with self._sync_lock:
            sender, self._sync_sender = self._sync_sender, None
        if sender is not None:
            sender.stop()

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
        from tideflow.broker import publish_events

        await publish_events(await self._broker(), records)

    async def _broker(self) -> Broker:
        """The connected broker of the running loop: send_sync's, or the one `send` keeps."""
        loop = asyncio.get_running_loop()
        sender = self._sync_sender
        if sender is not None and sender.loop is loop:
            return await sender.connection.broker()
        connection = self._connection
        if connection is None or connection.loop is not loop:
            if connection is not None:
                # Bound to a loop that has ended, or to another one: useless from this loop.
                connection.close_elsewhere()
            connection = self._connection = _Connection(self.broker_url, loop)
        return await connection.broker()

    def realtime_token(
        self,
        channel: Channel | str,
        topics: Sequence[Topic | str],
        ttl: datetime.timedelta | int | str = "1h",
    ) -> str:
        """A token letting its holder subscribe to these topics of `channel` for `ttl`.

        Signed with `signing_key` (HMAC-SHA256); without one, with a fixed development key that
        anyone can use: set `TIDEFLOW_SIGNING_KEY` wherever the API is reachable by others.

        Args:
            channel: a channel (a template must be called with its fields first) or its name.
            topics: the topics the holder may follow.
            ttl: how long the token is valid: a timedelta, milliseconds or `"1h"`.

        Raises:
            RealtimeError: `channel` is a template not filled in, or has no such topic.
        """
        return self.realtime.token(channel, topics, ttl)

    def subscribe(self, token: str) -> Subscription:
        """The messages published from now on to the token's channel and topics:
        `async for message in client.subscribe(token)`.

        Each message is `{"channel", "topic", "data", "run_id", "created_at"}`. Iterating
        raises `RealtimeError` if the token is refused (wrong, expired) or the API cannot be
        reached.
        """
        return self.realtime.subscribe(token)

    async def publish(
        self, channel: Channel | str, topic: Topic | str, data: Any, *, run_id: str | None = None
    ) -> None:
        """Publishes a realtime message (what `ctx.publish` does, from anywhere).

        Raises:
            RealtimeError: the data does not match the topic's schema, or the topic is unknown.
        """
        name, typed = resolve_topic(channel, topic)
        await self.realtime.publish(rt.message(name, typed.name, typed.encode(data), run_id))

    def attach_sender(self, hook: Callable[[list[dict[str, Any]]], Any] | None) -> None:
        """Used by an engine in this process so `send` hands events over without HTTP."""
        self._send_hook = hook


def _without_id(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key != "internal_id"}


def _close_at_exit(client: weakref.ref[Client]) -> None:
    alive = client()
    if alive is not None:
        alive._close_sync_sender()


class _Connection:
    """One broker, connected on first use, on the event loop it belongs to."""

    def __init__(self, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self.url = url
        self.loop = loop
        self._broker: Broker | None = None
        self._lock = asyncio.Lock()

    async def broker(self) -> Broker:
        # The lock makes concurrent first sends share one connection.
        async with self._lock:
            if self._broker is None:
                from tideflow.broker import create_broker

                broker = create_broker(self.url, publish_only=True)
                try:
                    await broker.connect()
                except BaseException:
                    # Cancelled halfway, it may hold a connection already.
                    await asyncio.shield(broker.close())
                    raise
                self._broker = broker
            return self._broker

    async def close(self) -> None:
        async with self._lock:
            broker, self._broker = self._broker, None
            if broker is not None:
                await broker.close()

    def is_current(self) -> bool:
        try:
            return asyncio.get_running_loop() is self.loop
        except RuntimeError:
            return False

    async def close_from(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is self.loop:
            await self.close()
        else:
            self.close_elsewhere()

    def close_elsewhere(self) -> None:
        """Closes the connection from outside its loop: on that loop, if it runs in another
        thread; a loop that has ended (or is stopped) took the connection with it."""
        if self.loop.is_running() and not self.loop.is_closed():
            asyncio.run_coroutine_threadsafe(self.close(), self.loop)


class _LoopThread:
    """An event loop running in a daemon thread, with the broker connection of send_sync."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.connection = _Connection(url, self.loop)
        self.thread = threading.Thread(target=self._serve, name="tideflow-send", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            # As asyncio.run ends a loop: what the connection left running ends with it.
            tasks = asyncio.all_tasks(self.loop)
            for task in tasks:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    def run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        try:
            self.run(self.connection.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()


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
