"""End-to-end encryption of step outputs, function outputs and one event field, with libsodium's
secretbox (PyNaCl), in the format of Inngest's own encryption middleware: a value encrypted by
either can be decrypted by the other with the same key."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.secret

from . import errors
from ._middleware import MiddlewareSync, RawRequest, TransformOutputResult

if TYPE_CHECKING:
    from ._client import Client
    from ._context import Context
    from ._event import Event
    from ._function import Function
    from ._steps import StoredStep

ENCRYPTION_MARKER: Final = "__ENCRYPTED__"
STRATEGY_MARKER: Final = "__STRATEGY__"
STRATEGY: Final = "inngest/libsodium"
DEFAULT_EVENT_FIELD: Final = "encrypted"

Key = bytes | str


class EncryptionError(errors.TideflowError):
    """A value could not be decrypted with the secret key or any fallback key."""


class Encryptor:
    """Encrypts JSON values into Inngest's envelope and back.

    Args:
        secret_key: a string (hashed to a 32-byte key with BLAKE2b, as Inngest does) or bytes
            of 64 hex digits (a 32-byte key).
        fallback_decryption_keys: older keys, tried in order after `secret_key` to decrypt.
    """

    def __init__(self, secret_key: Key, fallback_decryption_keys: Sequence[Key] = ()) -> None:
        self._box = _box(secret_key)
        self._fallbacks = [_box(key) for key in fallback_decryption_keys]

    def encrypt(self, value: Any) -> dict[str, Any]:
        """The envelope `{"__ENCRYPTED__": true, "__STRATEGY__": ..., "data": <base64>}`."""
        if is_encrypted(value):
            return dict(value)
        sealed = self._box.encrypt(json.dumps(value).encode(), encoder=nacl.encoding.Base64Encoder)
        return {ENCRYPTION_MARKER: True, STRATEGY_MARKER: STRATEGY, "data": sealed.decode()}

    def decrypt(self, value: Any) -> Any:
        """The value inside an envelope; anything else is returned as it is."""
        if not is_encrypted(value) or not isinstance(value.get("data"), str):
            return value
        for box in [self._box, *self._fallbacks]:
            try:
                plain = box.decrypt(value["data"].encode(), encoder=nacl.encoding.Base64Encoder)
            except (nacl.exceptions.CryptoError, ValueError):
                continue
            return json.loads(plain)
        raise EncryptionError("the value could not be decrypted with any of the keys")


class EncryptionMiddleware(MiddlewareSync):
    """Encrypts every step output, the function's output and `event.data[event_encryption_field]`
    before they leave the process, and decrypts them for the handler. The store, the broker and
    the HTTP API see only ciphertext. Use `factory`:

        client = tideflow.Client(app_id="shop", middleware=[
            tideflow.encryption.EncryptionMiddleware.factory(os.environ["ENCRYPTION_KEY"])])

    Event data is encrypted by `client.send` and `step.send_event` when the field is present;
    events from elsewhere may carry the field already encrypted (by any Inngest SDK with the same
    key), or not at all.
    """

    def __init__(
        self,
        client: Client,
        raw_request: RawRequest | None,
        secret_key: Key,
        *,
        fallback_decryption_keys: Sequence[Key] = (),
        event_encryption_field: str = DEFAULT_EVENT_FIELD,
        decrypt_only: bool = False,
    ) -> None:
        super().__init__(client, raw_request)
        self._encryptor = Encryptor(secret_key, fallback_decryption_keys)
        self._field = event_encryption_field
        self._decrypt_only = decrypt_only

    @classmethod
    def factory(
        cls,
        secret_key: Key,
        *,
        fallback_decryption_keys: Sequence[Key] = (),
        event_encryption_field: str = DEFAULT_EVENT_FIELD,
        decrypt_only: bool = False,
    ) -> Callable[[Client, RawRequest | None], EncryptionMiddleware]:
        """A middleware factory for `middleware=[...]`.

        The keys are checked here, so a bad key fails where the client is defined.

        Args:
            secret_key: the key encrypting and decrypting (a string, or 64 hex digits as bytes).
            fallback_decryption_keys: older keys tried after `secret_key`, for key rotation.
            event_encryption_field: the event data field encrypted and decrypted.
            decrypt_only: decrypt what comes in, encrypt nothing (while migrating away).

        Raises:
            ConfigError: a key is neither a string nor bytes of 64 hex digits.
        """
        Encryptor(secret_key, fallback_decryption_keys)  # a bad key fails at definition

        def make(client: Client, raw_request: RawRequest | None) -> EncryptionMiddleware:
            return cls(
                client,
                raw_request,
                secret_key,
                fallback_decryption_keys=fallback_decryption_keys,
                event_encryption_field=event_encryption_field,
                decrypt_only=decrypt_only,
            )

        make.__name__ = cls.__name__
        return make

    def transform_input(
        self, ctx: Context, function: Function, steps: Mapping[str, StoredStep]
    ) -> None:
        """Decrypts the memoized step outputs and the events' encrypted field for the handler.

        Raises:
            EncryptionError: a value decrypts with none of the keys.
        """
        for step in steps.values():
            step.output = self._decrypt_step(step.output)
        for event in {id(ctx.event): ctx.event, **{id(e): e for e in ctx.events}}.values():
            event.data = self._decrypt_event_data(event.data)

    def transform_output(self, result: TransformOutputResult) -> None:
        """Encrypts a step's or the function's output (and an invocation's event field) before
        it leaves the process."""
        if self._decrypt_only:
            return
        if result.has_output():
            result.output = self._encryptor.encrypt(result.output)
        elif result.step is not None and result.step.op == "invoke" and result.step.opts:
            # The invoked run's event carries this data: its field is encrypted like an event's.
            payload = result.step.opts.get("payload", {})
            payload["data"] = self._encrypt_field(payload.get("data"))

    def before_send_events(self, events: list[Event]) -> None:
        """Encrypts the encrypted field of each event that `client.send` or `step.send_event`
        sends."""
        if self._decrypt_only:
            return
        for event in events:
            event.data = self._encrypt_field(event.data)

    def _encrypt_field(self, data: Any) -> Any:
        if isinstance(data, dict) and data.get(self._field) is not None:
            return {**data, self._field: self._encryptor.encrypt(data[self._field])}
        return data

    def _decrypt_step(self, output: Any) -> Any:
        output = self._encryptor.decrypt(output)
        if isinstance(output, dict) and isinstance(output.get("name"), str) and "data" in output:
            # The event a wait_for_event matched: its field, encrypted by its sender.
            return {**output, "data": self._decrypt_event_data(output["data"])}
        return output

    def _decrypt_event_data(self, data: Any) -> Any:
        if not isinstance(data, dict):
            return data  # a schema's model instance: its data was never encrypted
        if is_encrypted(data):
            # Wholly encrypted data (as another SDK may send it); keep any plain fields beside.
            plain = {
                k: v
                for k, v in data.items()
                if k not in (ENCRYPTION_MARKER, STRATEGY_MARKER, "data")
            }
            return {**plain, **self._encryptor.decrypt(data)}
        # The configured field first, then any other encrypted field (another producer's).
        for key in sorted(data, key=lambda k: k != self._field):
            if is_encrypted(data[key]):
                return {**data, key: self._encryptor.decrypt(data[key])}
        return data


def is_encrypted(value: object) -> bool:
    """Whether `value` is an envelope of this strategy."""
    return (
        isinstance(value, dict)
        and value.get(ENCRYPTION_MARKER) is True
        and value.get(STRATEGY_MARKER) == STRATEGY
    )


def _box(key: Key) -> nacl.secret.SecretBox:
    # As Inngest's middleware: a string is hashed to a hex key; bytes are a key in hex.
    hexed = (
        nacl.hash.generichash(key.encode(), digest_size=nacl.secret.SecretBox.KEY_SIZE)
        if isinstance(key, str)
        else key
    )
    try:
        return nacl.secret.SecretBox(hexed, encoder=nacl.encoding.HexEncoder)
    except (TypeError, ValueError, nacl.exceptions.CryptoError) as exc:
        raise errors.ConfigError(
            "an encryption key must be a string, or bytes of 64 hex digits (a 32-byte key)"
        ) from exc
