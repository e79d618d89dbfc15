"""An `ai.infer` adapter's explicit API key on its way from the worker that ran the handler to
the offload loop that makes the request: through the job's outcome (a database row, until the
scheduler applies it) and the offload queue. With `TIDEFLOW_SIGNING_KEY` set, which every
process of a cluster shares, it goes encrypted (libsodium secretbox under a key derived from
the signing key), so neither the row nor the message shows it; without one, as it is."""

from __future__ import annotations

import base64
import dataclasses
import hashlib

import nacl.exceptions
import nacl.secret
from tideflow import errors

from . import protocol

_PREFIX = "sealed:"


def seal_outcome(outcome: protocol.Outcome, signing_key: str | None) -> protocol.Outcome:
    """`outcome` with the explicit API keys of its `ai.infer` requests sealed."""
    if signing_key is None or not isinstance(outcome, protocol.Suspended):
        return outcome
    requests = tuple(
        dataclasses.replace(
            request,
            ask=dataclasses.replace(request.ask, api_key=_seal(request.ask.api_key, signing_key)),
        )
        if isinstance(request.ask, protocol.AiInfer) and request.ask.api_key is not None
        else request
        for request in outcome.requests
    )
    return protocol.Suspended(requests)


def open_key(value: str, signing_key: str | None) -> str:
    """An API key as `seal_outcome` left it, opened. Raises `SignatureError` if it was sealed
    under another signing key (or none is set here)."""
    if not value.startswith(_PREFIX):
        return value
    if signing_key is None:
        raise errors.SignatureError("a sealed API key, and no TIDEFLOW_SIGNING_KEY to open it")
    try:
        return _box(signing_key).decrypt(base64.b64decode(value[len(_PREFIX) :])).decode()
    except (nacl.exceptions.CryptoError, ValueError) as exc:
        raise errors.SignatureError("a sealed API key that this signing key cannot open") from exc


def _seal(value: str, signing_key: str) -> str:
    return _PREFIX + base64.b64encode(_box(signing_key).encrypt(value.encode())).decode()


def _box(signing_key: str) -> nacl.secret.SecretBox:
    key = hashlib.sha256(b"tideflow api keys\0" + signing_key.encode()).digest()
    return nacl.secret.SecretBox(key)
