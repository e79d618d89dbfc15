"""Inputs schemathesis found answered with a 5xx, each now a clear 4xx (regressions)."""

from __future__ import annotations

import tideflow
from tideflow.testing import EngineFactory

BAD_TS = [-1, 253_402_300_800_000, -4229685828556688935878656]
BAD_LIMITS = ["-20973326148496783383145961092374593536", "0", "²", "x"]


async def test_bad_event_times_limits_and_ids_are_4xx_never_5xx(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    async with engine_for(client) as engine:
        ingest = [await engine.http.post("/e/key", json={"name": "t/x", "ts": ts}) for ts in BAD_TS]
        signed = [
            await engine.http.post("/v1/events", json=[{"name": "t/x", "ts": ts}]) for ts in BAD_TS
        ]
        limits = [await engine.http.get("/v1/events", params={"limit": n}) for n in BAD_LIMITS]
        search = await engine.http.get("/runs", params={"q": "}\x19a"})
        event = await engine.http.get("/events/%7F1%1AB")
        run = await engine.http.get("/runs/%0D")
        cursor = await engine.http.get("/v1/runs", params={"cursor": "²-x", "from": "²"})

    assert [a.status_code for a in ingest + signed] == [400] * 6
    assert all(
        "ts must be milliseconds since the epoch" in a.json()["error"] for a in ingest + signed
    )
    assert [a.status_code for a in limits] == [400] * 4
    assert all(a.json()["error"].startswith("limit:") for a in limits)
    assert (search.status_code, event.status_code, run.status_code) == (200, 404, 404)
    assert cursor.status_code == 400


async def test_nul_characters_in_names_signals_and_urls_are_a_400(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    async with engine_for(client) as engine:
        names = [
            await engine.http.post("/e/key", json={"name": "t/\x00", "id": "a"}),
            await engine.http.post("/v1/events", json={"name": "t/x", "id": "\x00"}),
        ]
        signal = await engine.http.post("/v1/signals", json={"signal": "\x00a"})
        urls = [
            await engine.http.get("/v1/runs/%00"),
            await engine.http.get("/v1/events", params={"name": "\x00"}),
        ]

    assert [a.status_code for a in names] == [400, 400]
    assert all("NUL" in a.json()["error"] for a in names)
    assert signal.status_code == 400
    assert [a.status_code for a in urls] == [400, 400]
    assert all("NUL" in a.json()["error"] for a in urls)
