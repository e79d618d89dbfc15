from __future__ import annotations

import dataclasses
import itertools

import tideflow
from tideflow.testing import Engine, TestEngine


@dataclasses.dataclass
class Deps:
    serial: int
    greeting: str


async def test_dependencies_are_made_once_per_process_and_given_to_every_run() -> None:
    serials = itertools.count()
    deps = tideflow.Dependencies(lambda: Deps(serial=next(serials), greeting="hello"))
    client = tideflow.Client(app_id="test", middleware=[deps])

    @client.create_function(fn_id="greet", trigger=tideflow.TriggerEvent(event="t/greet"))
    async def greet(ctx: tideflow.Context) -> str:
        made = deps.of(ctx)
        assert made is ctx.deps
        name: str = await ctx.step.run("name", lambda: ctx.event.data["name"])
        return f"{made.greeting} {name} #{made.serial}"

    async with Engine(client) as engine:
        outputs = [
            (await engine.finish({"name": "t/greet", "data": {"name": name}})).output
            for name in ("ada", "bo", "cy")
        ]

    assert outputs == ["hello ada #0", "hello bo #0", "hello cy #0"]
    assert next(serials) == 1


async def test_an_async_factory_is_awaited_and_the_test_engine_injects_too() -> None:
    async def make() -> Deps:
        return Deps(serial=42, greeting="hi")

    deps = tideflow.Dependencies(make)
    client = tideflow.Client(app_id="test")

    @client.create_function(
        fn_id="greet", trigger=tideflow.TriggerEvent(event="t/greet"), middleware=[deps]
    )
    def greet(ctx: tideflow.SyncContext) -> str:
        return f"{deps.of(ctx).greeting} #{deps.of(ctx).serial}"

    assert (await TestEngine(greet).execute()).result == "hi #42"
