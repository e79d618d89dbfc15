from __future__ import annotations

import pytest
import tideflow
from tideflow.broker import JobMessage, MemoryBroker, OutcomeMessage, Seal, topology
from tideflow.errors import SignatureError
from tideflow.testing import Engine


def test_sealed_messages_open_only_with_the_same_key() -> None:
    job = JobMessage("job-1", "run-1", "app-fn", "app")
    sealed = job.to_message(Seal("k1")).body

    assert JobMessage.decode(sealed, Seal("k1")) == job
    with pytest.raises(SignatureError, match="missing or wrong signature"):
        JobMessage.decode(sealed, Seal("k2"))
    with pytest.raises(SignatureError):
        OutcomeMessage.decode(OutcomeMessage(("job-1",)).to_message().body, Seal("k1"))
    assert OutcomeMessage.decode(OutcomeMessage(("job-1",)).to_message().body) == OutcomeMessage(
        ("job-1",)
    )


async def test_with_a_signing_key_runs_complete_and_forged_jobs_are_dead_lettered() -> None:
    client = tideflow.Client(app_id="signed")
    ran: list[str] = []

    @client.create_function(fn_id="work", trigger=tideflow.TriggerEvent(event="s/go"))
    async def work(ctx: tideflow.Context) -> str:
        def record() -> str:
            ran.append(ctx.run_id)
            return "done"

        return str(await ctx.step.run("step", record))

    async with Engine(client, environ={"TIDEFLOW_SIGNING_KEY": "s3cret"}) as engine:
        result = await engine.finish({"name": "s/go"})
        broker = engine.broker
        assert isinstance(broker, MemoryBroker)
        forged = JobMessage("forged", result.run["run_id"], "signed-work", "signed").to_message(
            Seal("guess")
        )
        await broker.publish([forged])
        for _ in range(100):
            if broker.dead_letters:
                break
            import asyncio

            await asyncio.sleep(0.01)

    assert result.output == "done"
    assert len(ran) == 1
    (dead,) = broker.dead_letters
    assert dead.queue == topology.jobs_queue("signed")
    assert "wrong signature" in dead.reason
