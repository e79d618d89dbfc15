"""Flow control made visible through the HTTP API: why a run is held now (`held` on a run), why
an event started no run of a function (`not_started` on an event), and the scheduler's
flow-control metrics; each on every backend."""

from __future__ import annotations

import asyncio
import datetime
import time
from typing import Any

import prometheus_client
import tideflow
from tideflow.testing import Engine, EngineFactory

TIMEOUT_S = 20.0


def moment(value: str) -> float:
    return datetime.datetime.fromisoformat(value).timestamp()


def sample(name: str, **labels: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


async def event_data(engine: Engine, event_id: str) -> dict[str, Any]:
    answer = await engine.http.get(f"/v1/events/{event_id}")
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()["data"]
    return data


async def eventually_not_started(
    engine: Engine, event_id: str, expected: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The event's `not_started` once it equals `expected` (or at the timeout, to fail on)."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        fates: list[dict[str, Any]] = (await event_data(engine, event_id))["not_started"]
        if fates == expected or time.monotonic() > deadline:
            return fates
        await asyncio.sleep(0.05)


async def test_a_run_waiting_for_a_slot_is_held_by_concurrency_until_admitted(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def block() -> str:
        started.set()
        await release.wait()
        return "done"

    @client.create_function(
        fn_id="one-at-a-time", trigger=tideflow.TriggerEvent(event="t/slot"), concurrency=1
    )
    async def one_at_a_time(ctx: tideflow.Context) -> Any:
        if ctx.event.data["n"] == 0:
            return await ctx.step.run("block", block)
        return await ctx.step.run("quick", lambda: "quick")

    admitted = sample("tideflow_scheduler_jobs_admitted_total", function="test-one-at-a-time")
    async with engine_for(client) as engine:
        [first] = await engine.send({"name": "t/slot", "data": {"n": 0}})
        [first_run] = await engine.wait_for_runs(first, timeout_s=TIMEOUT_S)
        await asyncio.wait_for(started.wait(), TIMEOUT_S)
        sent_at = time.time()
        [second] = await engine.send({"name": "t/slot", "data": {"n": 1}})
        [second_run] = await engine.wait_for_runs(second, timeout_s=TIMEOUT_S)
        held = (await engine.run(second_run["run_id"]))["held"]
        running = await engine.run(first_run["run_id"])
        # What the scheduler's pending gauge samples.
        waiting = await engine.store.pending_jobs_by_function()
        release.set()
        ended = await engine.wait_for_run(second_run["run_id"], timeout_s=TIMEOUT_S)

    assert waiting == {"test-one-at-a-time": 1}
    assert running["held"] is None
    assert held is not None
    assert held["rule"] == "concurrency"
    assert set(held) == {"rule", "since"}
    assert sent_at - 1 <= moment(held["since"]) <= time.time()
    assert ended["status"] == "Completed"
    assert ended["held"] is None
    # Both runs' first jobs, at least (the blocked run's next job, too).
    assert sample("tideflow_scheduler_jobs_admitted_total", function="test-one-at-a-time") >= (
        admitted + 2
    )


async def test_a_throttled_run_is_held_until_its_start_time(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(
        fn_id="throttled-view",
        trigger=tideflow.TriggerEvent(event="t/throttle"),
        throttle=tideflow.Throttle(limit=1, period="30s"),
    )
    async def throttled_view(ctx: tideflow.Context) -> Any:
        return ctx.event.data["n"]

    before = sample("tideflow_scheduler_runs_throttled_total", function="test-throttled-view")
    async with engine_for(client) as engine:
        sent_at = time.time()
        first, second = await engine.send(
            *({"name": "t/throttle", "data": {"n": n}} for n in range(2))
        )
        [first_run] = await engine.wait_for_runs(first, timeout_s=TIMEOUT_S)
        [second_run] = await engine.wait_for_runs(second, timeout_s=TIMEOUT_S)
        done = await engine.wait_for_run(first_run["run_id"], timeout_s=TIMEOUT_S)
        queued = await engine.run(second_run["run_id"])

    assert done["status"] == "Completed"
    assert done["held"] is None
    assert queued["status"] == "Queued"
    held = queued["held"]
    assert held is not None
    assert held["rule"] == "throttle"
    assert set(held) == {"rule", "until"}
    assert sent_at + 25 <= moment(held["until"]) <= time.time() + 31
    assert sample("tideflow_scheduler_runs_throttled_total", function="test-throttled-view") == (
        before + 1
    )


def define_why(client: tideflow.Client) -> None:
    """Six functions on `t/why`, each of which a second event passes by for its own reason."""

    def on(fn_id: str, expression: str | None = None, **options: Any) -> None:
        trigger = tideflow.TriggerEvent(event="t/why", expression=expression)

        @client.create_function(fn_id=fn_id, trigger=trigger, **options)
        async def handler(ctx: tideflow.Context) -> Any:
            return [event.data["n"] for event in ctx.events]

    on("why-limited", rate_limit=tideflow.RateLimit(limit=1, period="60s"))
    on("why-idem", idempotency="event.data.k")
    on("why-single", singleton=tideflow.Singleton(key="event.data.k", mode="skip"))
    on("why-filtered", expression="event.data.n == 0")
    on("why-debounced", debounce=tideflow.Debounce(period="1s"))
    on("why-batched", batch_events=tideflow.Batch(max_size=2, timeout="10s"))


async def test_an_event_says_per_function_why_it_started_no_run(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_why(client)
    counted = {
        ("refused", "test-why-limited", "rate_limited"): sample(
            "tideflow_scheduler_events_refused_total",
            function="test-why-limited",
            reason="rate_limited",
        ),
        ("refused", "test-why-idem", "idempotent"): sample(
            "tideflow_scheduler_events_refused_total", function="test-why-idem", reason="idempotent"
        ),
        ("refused", "test-why-single", "singleton"): sample(
            "tideflow_scheduler_events_refused_total",
            function="test-why-single",
            reason="singleton",
        ),
        ("held", "test-why-debounced", "debounce"): sample(
            "tideflow_scheduler_events_held_total", function="test-why-debounced", rule="debounce"
        ),
        ("held", "test-why-batched", "batch"): sample(
            "tideflow_scheduler_events_held_total", function="test-why-batched", rule="batch"
        ),
    }
    async with engine_for(client) as engine:
        first, second = await engine.send(
            *({"name": "t/why", "data": {"n": n, "k": "same"}} for n in range(2))
        )
        # The batch of two is full at once and its run is listed under its first event; the
        # burst's run, a second later, under its last.
        [batch_run] = [
            run
            for run in await engine.wait_for_runs(first, count=5, timeout_s=TIMEOUT_S)
            if run["function_id"] == "test-why-batched"
        ]
        [burst_run] = [
            run
            for run in await engine.wait_for_runs(second, count=1, timeout_s=TIMEOUT_S)
            if run["function_id"] == "test-why-debounced"
        ]
        first_fates = await eventually_not_started(
            engine,
            first,
            [
                {
                    "function_id": "test-why-debounced",
                    "reason": "debounced",
                    "run_id": burst_run["run_id"],
                }
            ],
        )
        second_fates = sorted(
            (await event_data(engine, second))["not_started"], key=lambda f: f["function_id"]
        )
        page = (await engine.http.get(f"/events/{second}")).text

    assert first_fates == [
        {"function_id": "test-why-debounced", "reason": "debounced", "run_id": burst_run["run_id"]}
    ]
    assert second_fates == [
        {"function_id": "test-why-batched", "reason": "batched", "run_id": batch_run["run_id"]},
        {"function_id": "test-why-filtered", "reason": "filtered", "run_id": None},
        {"function_id": "test-why-idem", "reason": "idempotent", "run_id": None},
        {"function_id": "test-why-limited", "reason": "rate_limited", "run_id": None},
        {"function_id": "test-why-single", "reason": "singleton", "run_id": None},
    ]
    for reason in ("batched", "filtered", "idempotent", "rate_limited", "singleton"):
        assert f">{reason}</span>" in page
    for (kind, function_id, label), before in counted.items():
        name = f"tideflow_scheduler_events_{kind}_total"
        key = "reason" if kind == "refused" else "rule"
        assert sample(name, function=function_id, **{key: label}) == before + (
            2 if kind == "held" else 1
        ), (kind, function_id)


async def test_a_held_event_has_no_run_yet_and_a_duplicate_says_so(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(
        fn_id="slow-burst",
        trigger=tideflow.TriggerEvent(event="t/dup"),
        debounce=tideflow.Debounce(period="60s"),
    )
    async def slow_burst(ctx: tideflow.Context) -> Any:
        return ctx.event.data

    async with engine_for(client) as engine:
        first, again = await engine.send(
            *({"name": "t/dup", "id": "same-id", "data": {"n": n}} for n in range(2))
        )
        held = await eventually_not_started(
            engine,
            first,
            [{"function_id": "test-slow-burst", "reason": "debounced", "run_id": None}],
        )
        duplicate = await eventually_not_started(
            engine,
            again,
            [{"function_id": "test-slow-burst", "reason": "duplicate", "run_id": None}],
        )
        status = (await event_data(engine, again))["status"]

    assert held == [{"function_id": "test-slow-burst", "reason": "debounced", "run_id": None}]
    assert duplicate == [{"function_id": "test-slow-burst", "reason": "duplicate", "run_id": None}]
    assert status == "duplicate"
