"""Functions written for the official `inngest` package run on tideflow with only the import and
the client construction changed (examples/inngest_compat/)."""

from __future__ import annotations

import ast
import asyncio
import pathlib
import types
from typing import Any

import inngest
import pytest
import tideflow
from tideflow.testing import Engine

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples" / "inngest_compat"
MARKER = "# tideflow: "


def load(name: str, *, on_tideflow: bool) -> types.ModuleType:
    """An example as a module: as written (for inngest), or with the marked lines swapped."""
    source = (EXAMPLES / f"{name}.py").read_text()
    if on_tideflow:
        source = ported(source)
    module = types.ModuleType(f"compat_{name}_{'tideflow' if on_tideflow else 'inngest'}")
    exec(compile(source, str(EXAMPLES / f"{name}.py"), "exec"), module.__dict__)
    return module


def ported(source: str) -> str:
    """The source with each statement under a `# tideflow:` comment replaced by the comment's
    text; nothing else changes."""
    lines = source.splitlines()
    statements = {node.lineno: node for node in ast.parse(source).body}
    replaced = 0
    for index in reversed(range(len(lines))):
        if not lines[index].startswith(MARKER):
            continue
        statement = statements[index + 2]  # 1-based line numbers: the next line
        assert statement.end_lineno is not None
        lines[index + 1 : statement.end_lineno] = [lines[index].removeprefix(MARKER)]
        replaced += 1
    assert replaced == 2, "each example changes exactly the import and the client"
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name", ["orders", "fanout", "middleware"])
def test_the_examples_are_valid_inngest_code(name: str) -> None:
    module = load(name, on_tideflow=False)

    assert isinstance(module.client, inngest.Inngest)
    assert any(isinstance(value, inngest.Function) for value in vars(module).values())


async def finish(engine: Engine, event: dict[str, Any]) -> dict[str, Any]:
    result = await engine.finish(event, timeout_s=20)
    assert result.status == "Completed", result.run
    output: dict[str, Any] = {"output": result.output, "steps": result.steps}
    return output


async def test_orders_runs_on_tideflow() -> None:
    module = load("orders", on_tideflow=True)
    assert isinstance(module.client, tideflow.Client)

    async with Engine(module.client) as engine:
        rejected = await finish(
            engine, {"name": "shop/order.placed", "data": {"order_id": "o1", "items": []}}
        )
        (event_id,) = await engine.send(
            {"name": "shop/order.placed", "data": {"order_id": "o2", "items": ["a", "b"]}}
        )
        (run,) = await engine.wait_for_runs(event_id)
        await _until_waiting(engine, run["run_id"], "wait-payment")
        await engine.send({"name": "shop/order.paid", "data": {"order_id": "o2", "amount": 12}})
        paid = await engine.wait_for_run(run["run_id"], timeout_s=20)
        fulfilled = await engine.http.get("/v1/events", params={"name": "shop/order.fulfilled"})

    assert rejected["output"] == {"status": "rejected", "reason": "an order needs items"}
    assert paid["output"] == {"status": "fulfilled", "stock": {"reserved": 2}, "amount": 12}
    assert [e["data"] for e in fulfilled.json()["data"]] == [{"order_id": "o2"}]


async def _until_waiting(engine: Engine, run_id: str, step: str) -> None:
    for _ in range(1000):
        steps = await engine.steps(run_id)
        if any(s["name"] == step and s["status"] == "Waiting" for s in steps):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"run {run_id} never waited at {step}")


async def test_fanout_runs_on_tideflow() -> None:
    module = load("fanout", on_tideflow=True)

    async with Engine(module.client) as engine:
        result = await finish(
            engine, {"name": "shop/checkout", "data": {"skus": ["apple", "pear", "plum"]}}
        )

    assert result["output"] == {"total": 24, "attempt": 0}
    assert len(module._flaky_calls) == 2  # RetryAfterError retried the step once


async def test_middleware_runs_on_tideflow() -> None:
    module = load("middleware", on_tideflow=True)

    async with Engine(module.client) as engine:
        result = await finish(engine, {"name": "mw/relay", "data": {"value": 5}})
        relayed = await engine.http.get("/v1/events", params={"name": "mw/relayed"})

    assert result["output"] == {"value": 5, "sent": 1, "seen": True, "stamped": True}
    assert [e["data"] for e in relayed.json()["data"]] == [{"value": 5, "stamped": True}]
