"""Cancel on event: the option's checks (each error names the function and the option), the
listeners a run is created with, and the decision an incoming event makes."""

from __future__ import annotations

from typing import Any

import pytest
import tideflow
from tideflow import errors
from tideflow._core import matching
from tideflow.scheduler._planning import plan_event
from tideflow.scheduler._registry import Registry, _spec
from tideflow.store import models as m


def handler(ctx: tideflow.Context) -> None:
    return None


def define(**options: Any) -> tideflow.Function:
    client = tideflow.Client(app_id="cancel-defs")
    return client.create_function(
        fn_id="stoppable", trigger=tideflow.TriggerEvent(event="t/go"), **options
    )(handler)


@pytest.mark.parametrize(
    ("cancel", "message"),
    [
        (
            tideflow.Cancel(event="t/stop", if_exp="event.data.id == "),
            r"stoppable: cancel\.if_exp: ",
        ),
        (
            [tideflow.Cancel(event=f"t/stop{n}") for n in range(6)],
            r"^stoppable: cancel takes 1 to 5 Cancel, got 6",
        ),
        ([], r"^stoppable: cancel takes 1 to 5 Cancel, got 0"),
        (
            tideflow.Cancel(event="t/stop", timeout="500ms"),
            r"^stoppable: cancel\.timeout must be between 1s and 365d, got '500ms'",
        ),
        (
            tideflow.Cancel(event="t/stop", timeout="400d"),
            r"^stoppable: cancel\.timeout must be between 1s and 365d",
        ),
        (tideflow.Cancel(event=""), r"^stoppable: cancel\.event must be an event name"),
        ("t/stop", r"^stoppable: cancel must be a tideflow\.Cancel, got 't/stop'"),
    ],
)
def test_a_bad_cancel_names_the_function_and_option(cancel: Any, message: str) -> None:
    with pytest.raises(errors.ConfigError, match=message):
        define(cancel=cancel)


def test_cancel_cannot_be_combined_with_batching() -> None:
    with pytest.raises(errors.ConfigError, match=r"^stoppable: batch_events cannot be combined"):
        define(
            cancel=tideflow.Cancel(event="t/stop"),
            batch_events=tideflow.Batch(max_size=2, timeout="1s"),
        )


def test_good_cancels_reach_the_function_config() -> None:
    function = define(
        cancel=[
            tideflow.Cancel(event="t/stop", if_exp="event.data.id == async.data.id"),
            tideflow.Cancel(event="t/halt", timeout="1h"),
        ]
    )
    assert function.config()["cancel"] == [
        {"event": "t/stop", "if_exp": "event.data.id == async.data.id", "timeout_ms": None},
        {"event": "t/halt", "if_exp": None, "timeout_ms": 3_600_000},
    ]


def registry_with(function: tideflow.Function) -> Registry:
    registry = Registry()
    spec = _spec({**function.config(), "app_id": "cancel-defs"})
    registry._functions = {spec.function_id: spec}
    return registry


def go(data: dict[str, Any]) -> m.EventRecord:
    return m.EventRecord(internal_id="evt-go", name="t/go", data=data, ts=1, received_at=1)


def test_a_run_is_created_with_its_listeners_indexed_by_its_trigger() -> None:
    registry = registry_with(
        define(
            cancel=[
                tideflow.Cancel(event="t/stop", if_exp="event.data.id == async.data.id"),
                tideflow.Cancel(event="t/halt", timeout="2s"),
            ]
        )
    )
    (run,) = plan_event(go({"id": 4}), registry, [])
    assert isinstance(run, m.CreateRun)
    stop, halt = run.listeners
    assert (stop.wait.run_id, stop.wait.kind, stop.wait.event_name) == (
        run.run_id,
        m.WAIT_CANCEL,
        "t/stop",
    )
    assert (stop.wait.match_path, stop.wait.match_key, stop.timeout_ms) == (
        matching.path_text(("data", "id")),
        matching.key_of(4),
        None,
    )
    assert stop.wait.step_hash != halt.wait.step_hash
    assert (halt.wait.match_path, halt.wait.if_exp, halt.timeout_ms) == (None, None, 2000)


def test_a_function_without_cancel_creates_runs_without_listeners() -> None:
    (run,) = plan_event(go({"id": 4}), registry_with(define()), [])
    assert isinstance(run, m.CreateRun)
    assert run.listeners == ()


def listener(run_event: dict[str, Any], if_exp: str | None, **extra: Any) -> m.WaitRecord:
    run = m.RunRecord("run-1", "fn", "app", "evt-go", m.RUNNING, [run_event], 0)
    return m.WaitRecord(
        "run-1", "cancel:0", m.WAIT_CANCEL, "t/stop", if_exp, run_event=run_event, run=run, **extra
    )


def stop(data: dict[str, Any], at: int = 10) -> m.EventRecord:
    return m.EventRecord(internal_id="evt-stop", name="t/stop", data=data, ts=at, received_at=at)


def test_a_matching_event_cancels_the_run_by_event() -> None:
    found = listener({"data": {"id": 1}}, "event.data.id == async.data.id")
    finish, notice = plan_event(stop({"id": 1}), Registry(), [found])
    assert isinstance(finish, m.FinishRun)
    assert isinstance(notice, m.AddEvents)
    assert (finish.run_id, finish.status) == ("run-1", m.CANCELLED)
    assert finish.error is not None
    assert finish.error.name == "Cancelled"
    assert finish.error.message == "cancelled by event t/stop (event)"
    assert [event.name for event in notice.events] == ["tideflow/function.cancelled"]


def test_an_event_that_does_not_match_or_comes_too_late_cancels_nothing() -> None:
    keyed = listener({"data": {"id": 1}}, "event.data.id == async.data.id")
    assert plan_event(stop({"id": 2}), Registry(), [keyed]) == []
    late = listener({"data": {"id": 1}}, None, expires_at=10)
    assert plan_event(stop({"id": 1}, at=10), Registry(), [late]) == []
    assert len(plan_event(stop({"id": 1}, at=9), Registry(), [late])) == 2
