"""Realtime, as the SDK and the API must agree on it: subscription tokens, the routing keys of
the realtime exchange, and the message shape."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

from tideflow import errors

DEV_KEY = "tideflow-dev-realtime-key"
"""Signs tokens when no `TIDEFLOW_SIGNING_KEY` is set (dev): anyone can make such tokens, so set
a signing key wherever the API is reachable by others."""

PUBLISH_PATH = "/v1/realtime/publish"
SIGNATURE_HEADER = "x-tideflow-signature"


class TokenError(errors.TideflowError):
    """A realtime token that is malformed, wrongly signed, expired or out of scope."""


@dataclasses.dataclass(frozen=True)
class Grant:
    """What a token allows: these topics of one channel, until `expires_at` (epoch seconds)."""

    channel: str
    topics: tuple[str, ...]
    expires_at: float


def signing_key(key: str | None) -> bytes:
    return (key or DEV_KEY).encode()


def make_token(grant: Grant, key: str | None) -> str:
    payload = _b64(
        json.dumps(
            {"c": grant.channel, "t": list(grant.topics), "exp": grant.expires_at},
            separators=(",", ":"),
        ).encode()
    )
    return f"{payload}.{_b64(_mac(key, payload.encode()))}"


def read_token(token: str, key: str | None, *, now: float | None = None) -> Grant:
    """The grant of a token signed with `key`. Raises `TokenError` otherwise."""
    payload, _, signature = token.partition(".")
    try:
        given = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    except ValueError:
        raise TokenError("malformed token") from None
    if not hmac.compare_digest(given, _mac(key, payload.encode())):
        raise TokenError("token signature does not match")
    try:
        body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        grant = Grant(str(body["c"]), tuple(str(t) for t in body["t"]), float(body["exp"]))
    except (ValueError, KeyError, TypeError):
        raise TokenError("malformed token") from None
    if grant.expires_at <= (time.time() if now is None else now):
        raise TokenError("token has expired")
    return grant


def sign_body(body: bytes, key: str | None) -> str:
    """The signature a worker puts on a message it publishes through the API."""
    return _mac(key, body).hex()


def check_body(body: bytes, signature: str, key: str | None) -> bool:
    return hmac.compare_digest(signature, sign_body(body, key))


def routing_key(channel: str, topic: str) -> str:
    """The realtime exchange's key of a channel's topic: dots (AMQP's word separator) escaped,
    so that any channel name routes to exactly its subscribers."""
    return f"m.{_word(channel)}.{_word(topic)}"


def routing_keys(channel: str, topics: Sequence[str]) -> list[str]:
    return [routing_key(channel, topic) for topic in topics]


def message(channel: str, topic: str, data: Any, run_id: str | None) -> dict[str, Any]:
    return {
        "channel": channel,
        "topic": topic,
        "data": data,
        "run_id": run_id,
        "created_at": int(time.time() * 1000),
    }


def _word(text: str) -> str:
    return urllib.parse.quote(text, safe="").replace(".", "%2E")


def _mac(key: str | None, payload: bytes) -> bytes:
    return hmac.digest(signing_key(key), b"realtime\x00" + payload, hashlib.sha256)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
