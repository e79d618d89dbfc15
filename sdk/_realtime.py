"""Realtime: functions publish messages on channels and topics; subscribers holding a signed
token receive them as they are published (nothing is stored)."""

from __future__ import annotations

import asyncio
import json
import string
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol

import httpx
import pydantic

from . import errors
from ._core import realtime as rt
from ._core.durations import to_ms
from ._types import is_name

_Duration = Any
_READY_TIMEOUT_S = 30.0
_CLOSE_TIMEOUT_S = 10.0


class Topic:
    """A topic of a channel, with an optional pydantic schema its messages must match.

    Args:
        name: the topic's name.
        schema: a pydantic model; `publish` validates data against it.
    """

    def __init__(self, name: str, schema: type[pydantic.BaseModel] | None = None) -> None:
        if not is_name(name):
            raise errors.ConfigError(f"a topic name must be a non-empty string, got {name!r}")
        self.name = name
        self.schema = schema

    def __repr__(self) -> str:
        return f"<tideflow.realtime.Topic {self.name}>"

    def encode(self, data: Any) -> Any:
        """`data` as JSON, checked against the schema. Raises `RealtimeError` if it does not
        match."""
        if self.schema is None:
            return data.model_dump(mode="json") if isinstance(data, pydantic.BaseModel) else data
        try:
            model = data if isinstance(data, self.schema) else self.schema.model_validate(data)
        except pydantic.ValidationError as exc:
            raise errors.RealtimeError(
                f"data published on topic {self.name!r} does not match its schema: {exc}"
            ) from None
        return model.model_dump(mode="json")


class Channel:
    """A named stream of messages with typed topics. A name with `{fields}` is a template: call
    it with the fields to get the channel (`user = channel("user:{id}"); user(id="42")`).

    Args:
        name: the channel's name or template.
    """

    def __init__(self, name: str, topics: Mapping[str, Topic] | None = None) -> None:
        if not is_name(name):
            raise errors.ConfigError(f"a channel name must be a non-empty string, got {name!r}")
        self.name = name
        self.topics: dict[str, Topic] = dict(topics or {})
        self._fields = [field for _, field, _, _ in string.Formatter().parse(name) if field]

    def __repr__(self) -> str:
        return f"<tideflow.realtime.Channel {self.name}>"

    @property
    def is_template(self) -> bool:
        return bool(self._fields)

    def add_topic(self, topic: Topic) -> Channel:
        """Adds a topic; returns the channel, for chaining."""
        self.topics[topic.name] = topic
        return self

    def __call__(self, **fields: Any) -> Channel:
        """The channel this template names with `fields` filled in; the same topics."""
        missing = [field for field in self._fields if field not in fields]
        if missing:
            raise errors.ConfigError(f"channel {self.name!r} needs {', '.join(missing)}")
        return Channel(self.name.format(**fields), self.topics)

    def topic(self, name: str) -> Topic:
        """This channel's topic `name`. Raises `RealtimeError` for an unknown topic of a channel
        that declares topics."""
        known = self.topics.get(name)
        if known is not None:
            return known
        if self.topics:
            raise errors.RealtimeError(
                f"channel {self.name!r} has no topic {name!r} (it has {sorted(self.topics)})"
            )
        return Topic(name)


def channel(name_or_template: str) -> Channel:
    """A channel: `tideflow.realtime.channel("orders").add_topic(topic("status", Status))`."""
    return Channel(name_or_template)


def topic(name: str, schema: type[pydantic.BaseModel] | None = None) -> Topic:
    """A topic, with an optional pydantic schema enforced on publish."""
    return Topic(name, schema)


def resolve(channel: Channel | str, topic: Topic | str) -> tuple[str, Topic]:
    """The channel name and the (typed, if declared) topic a publish or token names."""
    if isinstance(channel, str):
        channel = Channel(channel)
    if channel.is_template:
        raise errors.RealtimeError(
            f"channel {channel.name!r} is a template: call it with its fields"
        )
    if isinstance(topic, Topic):
        declared = channel.topics.get(topic.name)
        return channel.name, declared or topic
    return channel.name, channel.topic(topic)


class Hub(Protocol):
    """Realtime inside an engine running in this process (what `Engine` attaches)."""

    async def publish(self, message: dict[str, Any]) -> None: ...

    def stream(self, grant: rt.Grant) -> AsyncIterator[dict[str, Any] | None]: ...


class Subscription:
    """Messages for a token, as they are published: `async for message in subscription`.

    Each message is `{"channel", "topic", "data", "run_id", "created_at"}`. Only messages
    published after the subscription is live arrive; `await subscription.ready()` waits for that.
    Close it with `aclose()` or `async with`.
    """

    def __init__(self, source: Callable[[], AsyncIterator[dict[str, Any] | None]]) -> None:
        self._source = source
        self._inbox: asyncio.Queue[dict[str, Any] | BaseException | None] = asyncio.Queue()
        self._ready = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None
        self._failure: Exception | None = None

    def _start(self) -> None:
        if self._pump is None:
            self._pump = asyncio.create_task(self._run(), name="tideflow-realtime-subscription")

    async def _run(self) -> None:
        try:
            async for item in self._source():
                if item is None:
                    self._ready.set()
                else:
                    self._inbox.put_nowait(item)
        except Exception as exc:  # noqa: BLE001 - handed to the iterating task
            self._failure = exc
            self._inbox.put_nowait(exc)
        self._inbox.put_nowait(None)
        self._ready.set()

    async def ready(self, timeout_s: float = _READY_TIMEOUT_S) -> None:
        """Returns once messages published from now on will arrive. Raises what made the
        subscription fail (a `RealtimeError` for a refused token)."""
        self._start()
        await asyncio.wait_for(self._ready.wait(), timeout_s)
        if self._failure is not None:
            raise self._failure

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> dict[str, Any]:
        self._start()
        item = await self._inbox.get()
        if item is None:
            self._inbox.put_nowait(None)
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            raise item
        return item

    async def aclose(self) -> None:
        """Stops receiving. Waits a bounded time for the broker to let go of the subscription;
        a slow broker finishes that in the background."""
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.wait({self._pump}, timeout=_CLOSE_TIMEOUT_S)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class Realtime:
    """A client's realtime: tokens, publishing and subscribing.

    Publishing goes to the engine in this process when one is attached, else straight to the
    broker's realtime exchange with an `amqp://` broker, else through the API
    (`TIDEFLOW_API_URL`). Subscribing goes to the attached engine, else to the API's SSE route.
    """

    def __init__(self, *, signing_key: str | None, broker_url: str, api_url: str) -> None:
        self._key = signing_key
        self._broker_url = broker_url
        self._api_url = api_url
        self.hub: Hub | None = None
        self._broker: Any = None
        self._broker_loop: asyncio.AbstractEventLoop | None = None
        self._broker_lock = asyncio.Lock()

    def token(
        self, channel: Channel | str, topics: Sequence[Topic | str], ttl: _Duration = "1h"
    ) -> str:
        names = []
        for item in topics:
            channel_name, resolved = resolve(channel, item)
            names.append(resolved.name)
        if not names:
            raise errors.RealtimeError("a realtime token needs at least one topic")
        expires_at = time.time() + to_ms(ttl, field="ttl") / 1000
        return rt.make_token(rt.Grant(channel_name, tuple(names), expires_at), self._key)

    async def publish(self, message: dict[str, Any]) -> None:
        if self.hub is not None:
            await self.hub.publish(message)
        elif self._broker_url.startswith("amqp"):
            await self._publish_to_broker(message)
        else:
            await self._post(message)

    async def _publish_to_broker(self, message: dict[str, Any]) -> None:
        from tideflow.broker import Message, create_broker, topology

        loop = asyncio.get_running_loop()
        if self._broker_loop is not loop:
            # A connection serves the loop it was made on (a worker has one; tests may not).
            self._broker, self._broker_loop, self._broker_lock = None, loop, asyncio.Lock()
        async with self._broker_lock:
            if self._broker is None:
                broker = create_broker(self._broker_url, publish_only=True)
                await broker.connect()
                self._broker = broker
        body = json.dumps(message).encode()
        key = rt.routing_key(message["channel"], message["topic"])
        await self._broker.publish(
            [
                Message(
                    topology.REALTIME_EXCHANGE,
                    key,
                    body,
                    content_type="application/json",
                    mandatory=False,
                )
            ]
        )

    async def _post(self, message: dict[str, Any]) -> None:
        body = json.dumps(message).encode()
        url = f"{self._api_url}{rt.PUBLISH_PATH}"
        headers = {rt.SIGNATURE_HEADER: rt.sign_body(body, self._key)}
        try:
            async with httpx.AsyncClient(timeout=10.0) as http:
                response = await http.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise errors.RealtimeError(f"could not reach {url}: {exc}") from exc
        if response.status_code != 202:
            raise errors.RealtimeError(f"{url} answered {response.status_code}: {response.text}")

    def subscribe(self, token: str) -> Subscription:
        hub = self.hub
        if hub is not None:
            grant = rt.read_token(token, self._key)
            return Subscription(lambda: hub.stream(grant))
        return Subscription(lambda: _sse(f"{self._api_url}/v1/realtime", token))


async def _sse(url: str, token: str) -> AsyncIterator[dict[str, Any] | None]:
    timeout = httpx.Timeout(10.0, read=None)
    async with (
        httpx.AsyncClient(timeout=timeout) as http,
        http.stream("GET", url, params={"token": token}) as response,
    ):
        if response.status_code != 200:
            await response.aread()
            raise errors.RealtimeError(f"{url} answered {response.status_code}: {response.text}")
        kind = "message"
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                yield None if kind == "ready" else json.loads(line[5:])
                kind = "message"
