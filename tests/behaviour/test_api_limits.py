"""Limits that protect the API: the request body size on every route, and the events each event
key may send per period. Each is a clear error, and nothing else is affected.

Both are checked in the API process before any store or broker is reached, so these run on the
embedded engine only (the store-facing bad inputs run on every backend: test_api_bad_input.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import tideflow
from tideflow.testing import Engine


def define_echo(client: tideflow.Client) -> None:
    @client.create_function(fn_id="echo", trigger=tideflow.TriggerEvent(event="t/echo"))
    async def echo(ctx: tideflow.Context) -> object:
        return ctx.event.data


async def _chunks(total: int) -> AsyncIterator[bytes]:
    # Sent chunked, with no Content-Length: the limit is counted as the body is read.
    for _ in range(total // 500):
        yield b" " * 500


async def test_a_body_over_the_limit_is_a_413_on_every_route_and_others_pass(
    client: tideflow.Client, figures: list[str]
) -> None:
    define_echo(client)
    big = {"name": "t/echo", "data": {"pad": "x" * 3000}}
    async with Engine(client, environ={"TIDEFLOW_MAX_BODY_BYTES": "2048"}) as engine:
        refused = [
            await engine.http.post("/e/key", json=big),
            await engine.http.post("/v1/events", json=big),
            await engine.http.post("/v1/signals", json={"signal": "s", "data": "x" * 3000}),
            await engine.http.post("/v1/functions/test-echo/invoke", json={"data": big}),
            await engine.http.post("/e/key", content=_chunks(4000)),
            await engine.http.post("/login", content=b"key=" + b"x" * 3000),
        ]
        ended = await engine.finish({"name": "t/echo", "data": {"pad": "x" * 1000}})

    assert [answer.status_code for answer in refused] == [413] * len(refused)
    assert all("TIDEFLOW_MAX_BODY_BYTES" in answer.json()["error"] for answer in refused)
    assert ended.run["status"] == "Completed"
    assert ended.run["output"] == {"pad": "x" * 1000}
    figures.append(f"body limit: {len(refused)} oversized requests, 413 each; 0 runs lost")


async def test_an_event_key_over_its_rate_gets_429_with_retry_after_and_other_keys_pass(
    client: tideflow.Client, figures: list[str]
) -> None:
    define_echo(client)
    events = [{"name": "t/echo", "data": {"n": n}} for n in range(3)]
    async with Engine(client, environ={"TIDEFLOW_EVENT_KEY_RATE": "5/1h"}) as engine:
        first = await engine.http.post("/e/busy", json=events)
        over = await engine.http.post("/e/busy", json=events)
        other = await engine.http.post("/e/quiet", json=events[:1])
        # A send larger than the whole bucket passes once, when the bucket is full.
        batch = await engine.http.post("/e/batch", json=events * 3)
        after_batch = await engine.http.post("/e/batch", json=events[:1])
        runs = [await engine.wait_for_runs(i) for i in first.json()["ids"]]

    assert (first.status_code, other.status_code, batch.status_code) == (200, 200, 200)
    assert (over.status_code, after_batch.status_code) == (429, 429)
    assert "TIDEFLOW_EVENT_KEY_RATE" in over.json()["error"]
    # 1 of 5 events an hour: the second send waits for its third event, about 720 s away.
    assert 700 <= int(over.headers["retry-after"]) <= 721
    assert int(after_batch.headers["retry-after"]) > 720
    assert [len(r) for r in runs] == [1, 1, 1]
    figures.append("event key rate: 2 sends over the rate, 429 + Retry-After each; 0 runs lost")
