from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import inngest
import inngest_encryption
import psycopg
import pydantic
import pytest
import tideflow
from tideflow.broker import Message
from tideflow.encryption import EncryptionError, EncryptionMiddleware, Encryptor, is_encrypted
from tideflow.testing import Engine, TestEngine

SECRET = "4111-1111-1111-1111"
KEY = "correct horse battery staple"


def inngest_middleware(key: str, fallbacks: list[str | bytes] | None = None) -> Any:
    client = inngest.Inngest(app_id="interop", is_production=False)
    return inngest_encryption.EncryptionMiddleware(
        client, None, key, fallback_decryption_keys=fallbacks
    )


def test_values_encrypted_by_either_sdk_decrypt_with_the_other() -> None:
    ours = Encryptor(KEY)
    theirs = inngest_middleware(KEY)
    value = {"card": SECRET, "amounts": [1, 2.5], "ok": True}

    from_us = ours.encrypt(value)
    from_them = theirs._encrypt(value)

    assert is_encrypted(from_us)
    assert from_us["__STRATEGY__"] == "inngest/libsodium"
    assert SECRET not in json.dumps(from_us)
    assert theirs._decrypt(from_us) == value
    assert ours.decrypt(from_them) == value


def test_decryption_falls_back_to_older_keys_for_rotation() -> None:
    old = inngest_middleware("old key")._encrypt({"card": SECRET})
    rotated = Encryptor("new key", fallback_decryption_keys=["older key", "old key"])

    assert rotated.decrypt(old) == {"card": SECRET}
    assert rotated.decrypt(rotated.encrypt(7)) == 7
    with pytest.raises(EncryptionError, match="could not be decrypted"):
        Encryptor("new key").decrypt(old)


def test_a_bytes_key_is_hex_as_in_inngest() -> None:
    key = bytes(range(32)).hex().encode()
    theirs = inngest_encryption.EncryptionMiddleware(
        inngest.Inngest(app_id="interop", is_production=False), None, key
    )
    assert Encryptor(key).decrypt(theirs._encrypt([SECRET])) == [SECRET]
    with pytest.raises(tideflow.errors.ConfigError, match="64 hex digits"):
        EncryptionMiddleware.factory(b"short")


async def _raw_rows(url: str) -> str:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        dump: list[str] = []
        for table in ("events", "runs", "steps", "jobs", "waits", "timers"):
            cursor = await conn.execute(f"SELECT * FROM {table}")
            dump.extend(repr(row) for row in await cursor.fetchall())
        return "\n".join(dump)


async def test_the_store_the_broker_and_the_api_never_see_plaintext(postgres_url: str) -> None:
    client = tideflow.Client(app_id="vault", middleware=[EncryptionMiddleware.factory(KEY)])
    seen: list[Any] = []

    @client.create_function(fn_id="verify", trigger=tideflow.TriggerEvent(event="t/verify"))
    async def verify(ctx: tideflow.Context) -> dict[str, Any]:
        return {"verified": ctx.event.data["encrypted"]["card"]}

    @client.create_function(fn_id="charge", trigger=tideflow.TriggerEvent(event="t/charge"))
    async def charge(ctx: tideflow.Context) -> dict[str, Any]:
        card = ctx.event.data["encrypted"]["card"]
        seen.append(card)
        echoed = await ctx.step.run("echo", lambda: {"card": card})
        seen.append(echoed["card"])
        verified = await ctx.step.invoke(
            "verify", function=verify, data={"encrypted": {"card": card}}
        )
        seen.append(verified["verified"])
        await ctx.step.send_event(
            "receipt", {"name": "t/receipt", "data": {"encrypted": {"card": card}}}
        )
        return {"charged": echoed["card"]}

    published: list[bytes] = []
    async with Engine(client, environ={"TIDEFLOW_DATABASE_URL": postgres_url}) as engine:
        real_publish = engine.broker.publish

        async def recording(messages: Sequence[Message]) -> None:
            published.extend(message.body for message in messages)
            await real_publish(messages)

        engine.broker.publish = recording  # type: ignore[method-assign]
        (event_id,) = await client.send(
            {"name": "t/charge", "data": {"encrypted": {"card": SECRET}}}
        )
        (run,) = await engine.wait_for_runs(event_id)
        ended = await engine.wait_for_run(run["run_id"])
        api_text = "".join(
            [
                json.dumps(ended),
                json.dumps(await engine.steps(run["run_id"])),
                (await engine.http.get("/v1/events")).text,
                (await engine.http.get(f"/v1/events/{event_id}/runs")).text,
            ]
        )
        rows = await _raw_rows(postgres_url)

    assert ended["status"] == "Completed", ended
    assert set(seen) == {SECRET}  # the handler saw plaintext on every replay
    assert Encryptor(KEY).decrypt(ended["output"]) == {"charged": SECRET}
    assert published, "the run's messages were recorded"
    # msgpack keeps strings as UTF-8 bytes, so plaintext would show in the raw bodies.
    broker_text = b"".join(published).decode("latin-1")
    for where, text in (("store", rows), ("broker", broker_text), ("API", api_text)):
        assert "t/receipt" in text or where == "broker", f"{where}: nothing recorded"
        assert SECRET not in text, f"plaintext in the {where}"
        assert "__ENCRYPTED__" in text, f"{where}: no ciphertext either"


def test_a_waited_for_event_reaches_the_handler_decrypted() -> None:
    client = tideflow.Client(app_id="vault", middleware=[EncryptionMiddleware.factory(KEY)])

    @client.create_function(fn_id="wait", trigger=tideflow.TriggerEvent(event="t/start"))
    async def wait(ctx: tideflow.Context) -> Any:
        matched = await ctx.step.wait_for_event("paid", event="t/paid", timeout="1h")
        assert matched is not None
        return matched.data["encrypted"]

    sent_by_inngest = inngest_middleware(KEY)._encrypt({"card": SECRET})
    outcome = TestEngine(wait).execute_sync(
        steps={"paid": {"name": "t/paid", "data": {"encrypted": sent_by_inngest}}}
    )

    assert outcome.error is None
    assert Encryptor(KEY).decrypt(outcome.result) == {"card": SECRET}


class Card(pydantic.BaseModel):
    number: str


class CardAdded(pydantic.BaseModel):
    encrypted: Card
    label: str


async def test_schemas_describe_the_plain_data_of_encrypted_events() -> None:
    client = tideflow.Client(
        app_id="vault",
        middleware=[EncryptionMiddleware.factory(KEY)],
        schemas={"t/card": CardAdded},
    )

    @client.create_function(fn_id="card", trigger=tideflow.TriggerEvent(event="t/card"))
    async def card(ctx: tideflow.Context) -> str:
        data: CardAdded = ctx.event.data
        return f"{data.label}: {data.encrypted.number}"

    async with Engine(client) as engine:
        (event_id,) = await client.send(
            {"name": "t/card", "data": {"encrypted": {"number": SECRET}, "label": "work"}}
        )
        (run,) = await engine.wait_for_runs(event_id)
        ended = await engine.wait_for_run(run["run_id"])
        (stored,) = (await engine.http.get("/v1/events", params={"name": "t/card"})).json()["data"]
        with pytest.raises(tideflow.errors.EventError, match="does not match its schema"):
            await client.send({"name": "t/card", "data": {"encrypted": {"no": 1}, "label": "x"}})

    assert ended["status"] == "Completed", ended
    assert Encryptor(KEY).decrypt(ended["output"]) == f"work: {SECRET}"
    assert is_encrypted(stored["data"]["encrypted"])
    assert stored["data"]["label"] == "work"
