"""Limits on a run: 1,000 steps, and 4 MiB of step outputs in all (by default). The step that
would go over fails the run with a clear error; other runs go on."""

from __future__ import annotations

from typing import Any

import pytest
import tideflow
from tideflow.testing import Engine

MIB = 1024 * 1024
# Engine behaviour, checked on each store; the broker plays no part in either limit.
BACKENDS = pytest.mark.parametrize("backend_environ", ["embedded", "postgres"], indirect=True)


def _name(environ: dict[str, str]) -> str:
    return "postgres" if environ else "embedded"


def define(client: tideflow.Client) -> None:
    @client.create_function(
        fn_id="fat",
        trigger=tideflow.TriggerEvent(event="t/fat"),
        retries=0,
        # One step a job: the later steps count the state from the stored ones.
        checkpointing=False,
    )
    async def fat(ctx: tideflow.Context) -> Any:
        for name in "abcd":
            await ctx.step.run(name, lambda: "x" * MIB)
        return "never"

    @client.create_function(fn_id="many", trigger=tideflow.TriggerEvent(event="t/many"))
    async def many(ctx: tideflow.Context) -> Any:
        for _ in range(ctx.event.data["steps"]):
            await ctx.step.run("s", lambda: 1)
        return "done"

    @client.create_function(fn_id="slim", trigger=tideflow.TriggerEvent(event="t/slim"))
    async def slim(ctx: tideflow.Context) -> Any:
        return await ctx.step.run("a", lambda: "ok")


@BACKENDS
async def test_a_run_over_4_mib_of_step_outputs_fails_at_the_step_that_goes_over(
    client: tideflow.Client, backend_environ: dict[str, str], figures: list[str]
) -> None:
    define(client)
    async with Engine(client, environ=backend_environ) as engine:
        fat = await engine.finish({"name": "t/fat"}, timeout_s=60)
        slim = await engine.finish({"name": "t/slim"})

    assert fat.run["status"] == "Failed"
    assert fat.run["error"]["name"] == "LimitError"
    assert (
        "step 'd' output (1048578 bytes) would bring this run's state to 4194312"
        in (fat.run["error"]["message"])
    )
    assert "the limit is 4194304 bytes" in fat.run["error"]["message"]
    assert [(s["name"], s["status"]) for s in fat.steps] == [
        ("a", "Completed"),
        ("b", "Completed"),
        ("c", "Completed"),
    ]
    assert slim.run["status"] == "Completed"
    figures.append(
        f"run state limit ({_name(backend_environ)}): "
        "4 x 1 MiB steps, failed at the 4th with LimitError; other run completed"
    )


@BACKENDS
async def test_a_run_reaching_its_1001st_step_fails_with_a_limit_error(
    client: tideflow.Client, backend_environ: dict[str, str], figures: list[str]
) -> None:
    define(client)
    async with Engine(client, environ=backend_environ) as engine:
        within = await engine.finish({"name": "t/many", "data": {"steps": 1000}}, timeout_s=60)
        over = await engine.finish({"name": "t/many", "data": {"steps": 1001}}, timeout_s=60)

    assert within.run["status"] == "Completed"
    assert len(within.steps) == 1000
    assert over.run["status"] == "Failed"
    assert over.run["error"]["name"] == "LimitError"
    assert (
        "would be step 1001 of this run; the limit is 1000 steps a run"
        in (over.run["error"]["message"])
    )
    assert len(over.steps) == 1000
    figures.append(
        f"steps limit ({_name(backend_environ)}): 1000 steps completed, 1001 failed with LimitError"
    )


async def test_the_run_state_limit_is_a_setting(client: tideflow.Client) -> None:
    define(client)
    environ = {"TIDEFLOW_MAX_RUN_STATE_BYTES": str(MIB)}
    async with Engine(client, environ=environ) as engine:
        fat = await engine.finish({"name": "t/fat"}, timeout_s=30)

    assert fat.run["status"] == "Failed"
    assert "step 'a' output" in fat.run["error"]["message"]
    assert "TIDEFLOW_MAX_RUN_STATE_BYTES" in fat.run["error"]["message"]
    assert fat.steps == []
