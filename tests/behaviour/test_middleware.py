from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytest
import tideflow
from tideflow.testing import Engine, EngineFactory

_HOOKS = (
    "transform_input",
    "before_memoization",
    "after_memoization",
    "before_execution",
    "after_execution",
    "transform_output",
    "before_response",
    "before_send_events",
    "after_send_events",
)


def recorder(tag: str, log: list[str]) -> type[tideflow.MiddlewareSync]:
    """A middleware class that appends `tag.hook` (and the step, for transform_output)."""

    class Recorder(tideflow.MiddlewareSync):
        def transform_input(
            self,
            ctx: tideflow.Context,
            function: tideflow.Function,
            steps: Mapping[str, Any],
        ) -> None:
            log.append(f"{tag}.transform_input")

        def transform_output(self, result: tideflow.TransformOutputResult) -> None:
            step = result.step.id if result.step is not None else "fn"
            log.append(f"{tag}.transform_output({step})")

    for hook in _HOOKS:
        if hook not in ("transform_input", "transform_output"):
            setattr(Recorder, hook, lambda self, *args, _hook=hook: log.append(f"{tag}.{_hook}"))
    return Recorder


def one_pass(step: str | None, *, output: bool = True) -> list[str]:
    """The documented order for one execution by a client middleware C and a function one F."""
    before = [
        "C.transform_input",
        "F.transform_input",
        "C.before_memoization",
        "F.before_memoization",
        "F.after_memoization",
        "C.after_memoization",
        "C.before_execution",
        "F.before_execution",
        "F.after_execution",
        "C.after_execution",
    ]
    transform = [f"F.transform_output({step or 'fn'})", f"C.transform_output({step or 'fn'})"]
    return [*before, *(transform if output else []), "C.before_response", "F.before_response"]


async def test_hooks_run_in_the_documented_order_over_three_steps_and_a_retry(
    engine_for: EngineFactory,
) -> None:
    log: list[str] = []
    client = tideflow.Client(app_id="test", middleware=[recorder("C", log)])
    failures = ["once"]

    def flaky() -> str:
        if failures:
            failures.pop()
            raise RuntimeError("first attempt fails")
        return "b"

    @client.create_function(
        fn_id="three",
        trigger=tideflow.TriggerEvent(event="t/mw"),
        retries=1,
        middleware=[recorder("F", log)],
    )
    async def three(ctx: tideflow.Context) -> str:
        a: str = await ctx.step.run("a", lambda: "a")
        b: str = await ctx.step.run("b", flaky)
        c: str = await ctx.step.run("c", lambda: "c")
        return a + b + c

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/mw", "data": {}})

    assert result.status == "Completed", result.run
    assert result.output == "abc"
    assert log == [
        *one_pass("a"),
        *one_pass("b", output=False),  # the failed attempt: no output to transform
        *one_pass("b"),
        *one_pass("c"),
        *one_pass(None),
    ]


class AddsTen(tideflow.Middleware):
    """Changes what the handler sees and what is stored."""

    async def transform_input(
        self, ctx: tideflow.Context, function: tideflow.Function, steps: Mapping[str, Any]
    ) -> None:
        ctx.event.data["n"] = ctx.event.data["n"] + 10
        for step in steps.values():
            step.data = step.data * 2

    async def transform_output(self, result: tideflow.TransformOutputResult) -> None:
        if result.step is not None:
            result.output = result.output + 1
        else:
            result.output = {"wrapped": result.output}


async def test_transform_input_and_output_change_what_handlers_see_and_what_is_stored() -> None:
    client = tideflow.Client(app_id="test", middleware=[AddsTen])
    seen: list[int] = []

    @client.create_function(fn_id="add", trigger=tideflow.TriggerEvent(event="t/add"))
    async def add(ctx: tideflow.Context) -> int:
        n: int = ctx.event.data["n"]
        stored: int = await ctx.step.run("double", lambda: n)
        seen.append(stored)
        return stored

    async with Engine(client) as engine:
        result = await engine.finish({"name": "t/add", "data": {"n": 1}})

    # The step returned 11 (1 + 10), stored 12 (+1), replayed as 24 (x2).
    assert [(s["name"], s["output"]) for s in result.steps] == [("double", 12)]
    assert seen == [24]
    assert result.output == {"wrapped": 24}


class Renames(tideflow.MiddlewareSync):
    sent: list[list[str]] = []  # noqa: RUF012 - shared on purpose: instances are per execution

    def before_send_events(self, events: list[tideflow.Event]) -> None:
        for event in events:
            event.data = {**event.data, "seen_by": "middleware"}

    def after_send_events(self, result: tideflow.SendEventsResult) -> None:
        Renames.sent.append(result.ids)


async def test_send_hooks_wrap_step_send_event_and_client_send() -> None:
    Renames.sent = []
    client = tideflow.Client(app_id="test", middleware=[Renames])

    @client.create_function(fn_id="sender", trigger=tideflow.TriggerEvent(event="t/send"))
    async def sender(ctx: tideflow.Context) -> list[str]:
        return await ctx.step.send_event("out", {"name": "t/out", "data": {"x": 1}})

    async with Engine(client) as engine:
        (sent_id,) = await client.send({"name": "t/send", "data": {}})
        (run,) = await engine.wait_for_runs(sent_id)
        ended = await engine.wait_for_run(run["run_id"])
        events = (await engine.http.get("/v1/events")).json()["data"]

    assert ended["status"] == "Completed"
    by_name = {event["name"]: event for event in events}
    assert by_name["t/send"]["data"] == {"seen_by": "middleware"}
    assert by_name["t/out"]["data"] == {"x": 1, "seen_by": "middleware"}
    assert Renames.sent == [[sent_id], ended["output"]]


class Broken(tideflow.MiddlewareSync):
    def before_execution(self) -> None:
        raise ValueError("no database")


async def test_a_raising_hook_fails_the_run_with_an_error_naming_the_middleware() -> None:
    client = tideflow.Client(app_id="test")

    @client.create_function(
        fn_id="broken", trigger=tideflow.TriggerEvent(event="t/broken"), middleware=[Broken]
    )
    async def broken(ctx: tideflow.Context) -> None:
        await ctx.step.run("never", lambda: "ran")

    async with Engine(client) as engine:
        result = await engine.finish({"name": "t/broken", "data": {}})

    assert result.status == "Failed"
    assert result.run["error"]["name"] == "MiddlewareError"
    assert result.run["error"]["message"] == (
        "middleware Broken.before_execution raised ValueError: no database"
    )
    assert result.steps == []


class BadOutput(tideflow.Middleware):
    async def transform_output(self, result: tideflow.TransformOutputResult) -> None:
        if result.step is not None:
            raise KeyError("no such key")


async def test_a_raising_transform_output_fails_the_step_attempt_which_is_retried() -> None:
    client = tideflow.Client(app_id="test")
    bodies: list[str] = []

    @client.create_function(
        fn_id="bad-output",
        trigger=tideflow.TriggerEvent(event="t/bad-output"),
        retries=1,
        middleware=[BadOutput],
    )
    async def bad_output(ctx: tideflow.Context) -> None:
        await ctx.step.run("body", lambda: bodies.append("ran"))

    async with Engine(client) as engine:
        result = await engine.finish({"name": "t/bad-output", "data": {}})

    assert result.status == "Failed"
    assert bodies == ["ran", "ran"]
    ((name, status, error),) = [(s["name"], s["status"], s["error"]) for s in result.steps]
    assert (name, status, error["name"]) == ("body", "Failed", "MiddlewareError")
    assert (
        error["message"] == "middleware BadOutput.transform_output raised KeyError: 'no such key'"
    )


def test_middleware_that_is_not_callable_is_refused() -> None:
    with pytest.raises(tideflow.errors.ConfigError, match="middleware must be"):
        tideflow.Client(app_id="test", middleware=["nope"])  # type: ignore[list-item]


async def test_lines_logged_during_replay_appear_once_per_real_execution(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("tests.replay")
    client = tideflow.Client(app_id="test", logger=logger)

    @client.create_function(fn_id="logs", trigger=tideflow.TriggerEvent(event="t/logs"))
    def logs(ctx: tideflow.SyncContext) -> None:
        ctx.logger.info("start")
        ctx.step.run("a", lambda: 1)
        ctx.logger.info("after a")
        ctx.step.sleep("nap", 1)
        ctx.logger.info("after nap")
        ctx.step.run("b", lambda: 2)
        ctx.logger.info("end")

    with caplog.at_level(logging.INFO, logger="tests.replay"):
        async with Engine(client) as engine:
            result = await engine.finish({"name": "t/logs", "data": {}})

    assert result.status == "Completed"
    assert [r.getMessage() for r in caplog.records if r.name == "tests.replay"] == [
        "start",
        "after a",
        "after nap",
        "end",
    ]
