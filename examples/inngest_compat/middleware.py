"""Middleware (transform_input, transform_output, send hooks), written for `inngest`."""

from __future__ import annotations

# tideflow: import tideflow as inngest
import inngest


class Stamp(inngest.MiddlewareSync):
    """Adds a stamp to every event sent and to the function's output; doubles memoized numbers."""

    def before_send_events(self, events: list[inngest.Event]) -> None:
        for event in events:
            event.data = {**event.data, "stamped": True}

    def transform_input(
        self,
        ctx: inngest.Context | inngest.ContextSync,
        function: inngest.Function,
        steps: inngest.StepMemos,
    ) -> None:
        ctx.event.data = {**ctx.event.data, "seen_by_middleware": True}

    def transform_output(self, result: inngest.TransformOutputResult) -> None:
        if result.step is None and isinstance(result.output, dict):
            result.output = {**result.output, "stamped": True}


# tideflow: client = inngest.Client(app_id="compat-mw", middleware=[Stamp])
client = inngest.Inngest(app_id="compat-mw", is_production=False, middleware=[Stamp])


@client.create_function(fn_id="relay", trigger=inngest.TriggerEvent(event="mw/relay"))
async def relay(ctx: inngest.Context) -> dict[str, object]:
    value = await ctx.step.run("read", lambda: ctx.event.data["value"])
    ids = await ctx.step.send_event(
        "forward", inngest.Event(name="mw/relayed", data={"value": value})
    )
    return {"value": value, "sent": len(ids), "seen": ctx.event.data["seen_by_middleware"]}
