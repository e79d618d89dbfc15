"""Realtime over HTTP: Server-Sent Events and WebSocket subscriptions with signed tokens, and
the publishing route for workers that reach no broker of their own (the embedded dev engine).

Messages travel over the broker's realtime exchange, so a subscriber on any API process gets what
a function on any worker publishes. Each subscription has its own exclusive queue bound to its
channel's topics; nothing is stored for a subscriber that is not connected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from tideflow import Settings, errors
from tideflow._core import realtime as rt
from tideflow._core.ids import new_id
from tideflow.broker import Broker, Message, topology

from . import _openapi as oa
from . import _schemas as sc

logger = logging.getLogger(__name__)

_PROBE_EVERY_S = 0.05
_KEEPALIVE_S = 15.0
_MAX_PUBLISH_BYTES = 512 * 1024


class Realtime:
    """Publishes realtime messages to the broker and streams them to subscribers."""

    def __init__(self, broker: Broker, settings: Settings) -> None:
        self._broker = broker
        self._key = settings.signing_key

    async def publish(self, message: dict[str, Any]) -> None:
        body = json.dumps(message).encode()
        key = rt.routing_key(message["channel"], message["topic"])
        await self._broker.publish([_message(key, body)])

    async def stream(self, grant: rt.Grant) -> AsyncGenerator[dict[str, Any] | None, None]:
        """Yields None once the subscription is live (messages published from then on arrive),
        then each message.

        The broker gives no signal when a subscription's queue is bound, so the stream sends
        itself probes on a key of its own until one comes back.
        """
        probe = f"p.{new_id()}"
        keys = [*rt.routing_keys(grant.channel, grant.topics), probe]
        probing = asyncio.create_task(self._probe(probe), name="tideflow-realtime-probe")
        try:
            async for delivery in self._broker.subscribe(topology.REALTIME_EXCHANGE, keys):
                if delivery.routing_key == probe:
                    if not probing.done():
                        probing.cancel()
                        yield None
                    continue
                try:
                    yield json.loads(delivery.body)
                except ValueError:
                    logger.warning("dropping a realtime message that is not JSON")
        finally:
            probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probing

    async def _probe(self, key: str) -> None:
        while True:
            await self._broker.publish([_message(key, b"{}")])
            await asyncio.sleep(_PROBE_EVERY_S)

    def grant(self, params: Any) -> rt.Grant:
        """The grant of a request's `token`, narrowed by optional `channel` and `topics`
        parameters. Raises `TokenError` for a bad, expired or out-of-scope token."""
        grant = rt.read_token(params.get("token", ""), self._key)
        channel = params.get("channel")
        if channel is not None and channel != grant.channel:
            raise rt.TokenError(f"the token is not for channel {channel!r}")
        wanted = params.get("topics")
        if wanted is None:
            return grant
        topics = tuple(topic for topic in wanted.split(",") if topic)
        outside = [topic for topic in topics if topic not in grant.topics]
        if outside or not topics:
            raise rt.TokenError(f"the token does not cover topics {outside or wanted!r}")
        return rt.Grant(grant.channel, topics, grant.expires_at)

    async def sse(self, request: Request) -> Response:
        try:
            grant = self.grant(request.query_params)
        except rt.TokenError as exc:
            return _unauthorized(exc)
        return StreamingResponse(
            self._events(grant),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    async def _events(self, grant: rt.Grant) -> AsyncIterator[str]:
        stream = self.stream(grant)
        try:
            while True:
                try:
                    item = await asyncio.wait_for(anext(stream), _KEEPALIVE_S)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                except StopAsyncIteration:
                    return
                if item is None:
                    yield "event: ready\ndata: {}\n\n"
                else:
                    yield f"event: message\ndata: {json.dumps(item)}\n\n"
        finally:
            await stream.aclose()

    async def websocket(self, socket: WebSocket) -> None:
        try:
            grant = self.grant(socket.query_params)
        except rt.TokenError as exc:
            # Refused before the handshake completes: the client sees HTTP 401.
            await socket.send_denial_response(_unauthorized(exc))
            return
        await socket.accept()
        stream = self.stream(grant)
        forward = asyncio.create_task(_forward(stream, socket), name="tideflow-realtime-ws")
        closed = asyncio.create_task(_until_closed(socket), name="tideflow-realtime-ws-close")
        try:
            await asyncio.wait({forward, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (forward, closed):
                task.cancel()
            await asyncio.gather(forward, closed, return_exceptions=True)
            await stream.aclose()

    async def publish_route(self, request: Request) -> Response:
        body = await request.body()
        if len(body) > _MAX_PUBLISH_BYTES:
            return JSONResponse({"error": "message too large", "status": 413}, status_code=413)
        signature = request.headers.get(rt.SIGNATURE_HEADER, "")
        if not rt.check_body(body, signature, self._key):
            return JSONResponse({"error": "bad signature", "status": 401}, status_code=401)
        try:
            message = json.loads(body)
            channel, topic = message["channel"], message["topic"]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "not a realtime message", "status": 400}, status_code=400)
        if not isinstance(channel, str) or not isinstance(topic, str):
            return JSONResponse({"error": "not a realtime message", "status": 400}, status_code=400)
        try:
            await self.publish(message)
        except errors.BrokerError as exc:
            return JSONResponse({"error": str(exc), "status": 503}, status_code=503)
        return JSONResponse({"status": 202}, status_code=202)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/realtime", self.sse, methods=["GET"]),
            WebSocketRoute("/v1/realtime/ws", self.websocket),
            Route(rt.PUBLISH_PATH, self.publish_route, methods=["POST"]),
        ]


def realtime_routes(broker: Broker, settings: Settings) -> list[BaseRoute]:
    """The realtime routes of an API on this broker."""
    return Realtime(broker, settings).routes()


def _message(key: str, body: bytes) -> Message:
    return Message(
        topology.REALTIME_EXCHANGE, key, body, content_type="application/json", mandatory=False
    )


def _unauthorized(exc: Exception) -> JSONResponse:
    return JSONResponse({"error": str(exc), "status": 401}, status_code=401)


async def _forward(stream: AsyncIterator[dict[str, Any] | None], socket: WebSocket) -> None:
    async for item in stream:
        if item is None:
            await socket.send_json({"type": "ready"})
        else:
            await socket.send_json({"type": "message", **item})


async def _until_closed(socket: WebSocket) -> None:
    with contextlib.suppress(WebSocketDisconnect):
        while True:
            await socket.receive_text()


_TOKEN = (
    oa.Param("token", "query", "A token from `client.realtime_token`.", required=True),
    oa.Param("channel", "query", "Narrows to this channel (must be the token's)."),
    oa.Param("topics", "query", "Narrows to these topics, comma-separated (within the token's)."),
)
_BAD_TOKEN = oa.problem("A bad, expired or out-of-scope token.")

OPERATIONS = (
    oa.Operation(
        "GET",
        "/v1/realtime",
        "Server-Sent Events: realtime messages for the token's channel and topics",
        "realtime",
        {
            200: oa.Answer(
                "An event stream: `event: ready` once subscribed, then `event: message` with "
                "a RealtimeMessage as `data`.",
                {"type": "string"},
                media_type="text/event-stream",
            ),
            401: _BAD_TOKEN,
        },
        params=_TOKEN,
        auth="token",
        extensions={
            "x-stream": "sse",
            "x-message": {"$ref": oa.REF.format(model="RealtimeMessage")},
        },
    ),
    oa.Operation(
        "GET",
        "/v1/realtime/ws",
        "WebSocket: realtime messages for the token's channel and topics",
        "realtime",
        {
            101: oa.Answer(
                'Switching to WebSocket: a `{"type": "ready"}` frame once subscribed, '
                'then `{"type": "message", ...RealtimeMessage}` frames.',
                sc.RealtimeMessage,
            ),
            401: _BAD_TOKEN,
        },
        params=_TOKEN,
        auth="token",
        extensions={"x-websocket": True},
    ),
    oa.Operation(
        "POST",
        rt.PUBLISH_PATH,
        "Publishes a realtime message (workers without a broker of their own)",
        "realtime",
        {
            202: oa.json_answer("Published.", sc.Accepted),
            400: oa.problem("Not a realtime message."),
            401: oa.problem(f"A missing or bad `{rt.SIGNATURE_HEADER}` signature."),
            413: oa.problem("Larger than 512 KiB."),
        },
        params=(
            oa.Param(
                rt.SIGNATURE_HEADER,
                "header",
                "HMAC of the body with the signing key.",
                required=True,
            ),
        ),
        body=sc.RealtimeMessage,
        auth="none",
    ),
)
