"""Debounce and batching: their options are checked when the function is defined, and their
rules decide, as values, how a held burst or batch changes as events and time come."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
import tideflow
from tideflow import errors
from tideflow._core.ids import derived_id
from tideflow.scheduler import _planning as planning
from tideflow.scheduler._registry import Registry, _spec
from tideflow.scheduler.flow import batching, debounce
from tideflow.store import models as m


def define(**options: Any) -> tideflow.Function:
    client = tideflow.Client(app_id="holds")
    return client.create_function(
        fn_id="held", trigger=tideflow.TriggerEvent(event="t/x"), **options
    )(lambda ctx: None)


def test_valid_options_are_kept_in_the_function_config() -> None:
    function = define(
        debounce=tideflow.Debounce(period="2s", key="event.data.user", timeout="1m"),
    )
    assert function.config()["debounce"] == {
        "period_ms": 2000,
        "key": "event.data.user",
        "timeout_ms": 60_000,
    }
    batched = define(
        batch_events=tideflow.Batch(
            max_size=10, timeout=datetime.timedelta(seconds=5), if_exp="event.data.ok"
        )
    )
    assert batched.config()["batch_events"] == {
        "max_size": 10,
        "timeout_ms": 5000,
        "key": None,
        "if_exp": "event.data.ok",
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"debounce": tideflow.Debounce(period="500ms")}, r"debounce.period must be between 1s"),
        ({"debounce": tideflow.Debounce(period="8d")}, r"debounce.period must be between"),
        (
            {"debounce": tideflow.Debounce(period="10s", timeout="5s")},
            r"debounce.timeout must be between 10s",
        ),
        ({"debounce": tideflow.Debounce(period="1s", key="event.data.(")}, r"debounce.key"),
        ({"debounce": "1s"}, r"debounce must be a tideflow.Debounce"),
        ({"batch_events": tideflow.Batch(max_size=0, timeout="1s")}, r"max_size must be an int"),
        ({"batch_events": tideflow.Batch(max_size=101, timeout="1s")}, r"in 1..100, got 101"),
        (
            {"batch_events": tideflow.Batch(max_size=True, timeout="1s")},
            r"batch_events.max_size must be an int",
        ),
        ({"batch_events": tideflow.Batch(max_size=2, timeout="61s")}, r"timeout must be between"),
        ({"batch_events": tideflow.Batch(max_size=2, timeout="0s")}, r"timeout must be between"),
        (
            {"batch_events": tideflow.Batch(max_size=2, timeout="1s", key="event.data.[")},
            r"batch_events.key",
        ),
        (
            {"batch_events": tideflow.Batch(max_size=2, timeout="1s", if_exp="event ==")},
            r"batch_events.if_exp",
        ),
        (
            {
                "batch_events": tideflow.Batch(max_size=2, timeout="1s"),
                "debounce": tideflow.Debounce(period="1s"),
            },
            r"batch_events cannot be combined with debounce",
        ),
    ],
)
def test_bad_options_are_refused_naming_the_function_and_option(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(errors.ConfigError, match=rf"held: .*{message}"):
        define(**options)


def test_a_bad_key_expression_is_refused_with_its_text() -> None:
    with pytest.raises(errors.ExpressionError) as caught:
        define(debounce=tideflow.Debounce(period="1s", key="event.data.("))
    assert caught.value.expression == "event.data.("


DEBOUNCE = debounce.Spec(period_ms=1000, key=None, timeout_ms=2500)


def test_a_debounce_burst_restarts_its_window_at_each_event_up_to_the_timeout() -> None:
    burst = DEBOUNCE.on_event(None, "E1", 10_000)
    assert burst == m.Burst("E1", first_at=10_000, due_at=11_000)
    burst = DEBOUNCE.on_event(burst, "E2", 10_800)
    assert burst == m.Burst("E2", first_at=10_000, due_at=11_800)
    burst = DEBOUNCE.on_event(burst, "E3", 12_000)
    assert burst == m.Burst("E3", first_at=10_000, due_at=12_500)


def test_a_debounce_burst_keeps_its_newer_event_over_a_late_older_one() -> None:
    burst = m.Burst("E5", first_at=10_000, due_at=11_000)
    assert DEBOUNCE.on_event(burst, "E4", 10_500) == burst


def test_without_timeout_a_debounce_window_restarts_without_bound() -> None:
    spec = debounce.Spec(period_ms=1000, key=None, timeout_ms=None)
    burst = m.Burst("E1", first_at=0, due_at=1000)
    assert spec.on_event(burst, "E2", 60_000) == m.Burst("E2", first_at=0, due_at=61_000)


BATCH = batching.Spec(max_size=3, timeout_ms=1000, key=None, if_exp=None)


def test_a_batch_opens_with_its_first_event_and_is_full_at_max_size() -> None:
    batch = BATCH.on_event(None, "E1", 5000)
    assert batch == m.OpenBatch("E1", size=1, first_at=5000, due_at=6000)
    batch = BATCH.on_event(batch, "E2", 5500)
    assert batch == m.OpenBatch("E1", size=2, first_at=5000, due_at=6000)
    assert not BATCH.is_full(batch)
    assert BATCH.is_full(BATCH.on_event(batch, "E3", 5600))


def registry_of(config: dict[str, Any]) -> Registry:
    registry = Registry()
    spec = _spec({"function_id": "a-f", "app_id": "a", "triggers": [{"event": "t/x"}], **config})
    registry._functions = {spec.function_id: spec}
    return registry


def event(data: dict[str, Any]) -> m.EventRecord:
    return m.EventRecord(internal_id="E1", name="t/x", data=data, ts=1, received_at=1)


def test_an_event_of_a_debounced_function_is_held_under_its_key_value() -> None:
    registry = registry_of({"debounce": {"period_ms": 1000, "key": "event.data.user"}})
    (change,) = planning.plan_event(event({"user": "ada"}), registry, [])
    assert isinstance(change, m.HoldDebounced)
    assert (change.function_id, change.key, change.event_id) == ("a-f", "ada", "E1")


def test_a_held_run_is_made_as_any_run_from_its_first_event() -> None:
    config = {
        "debounce": {"period_ms": 1000, "key": "event.data.user"},
        "concurrency": [{"limit": 2, "key": "event.data.user", "scope": "fn"}],
        "priority": {"run": "event.data.vip ? 60 : 0"},
    }
    registry = registry_of(config)
    (change,) = planning.plan_event(event({"user": "ada"}), registry, [], env="prod")
    assert isinstance(change, m.HoldDebounced)
    later = {"name": "t/x", "data": {"user": "bob", "vip": True}, "id": "E9"}

    run = change.start("E9", [later])

    spec = registry.get("a-f")
    assert spec is not None
    direct = planning.new_run(
        spec,
        m.EventRecord(internal_id="E9", name="t/x", data=later["data"], ts=1, received_at=1),
        [later],
        "prod",
        gated=False,
    )
    assert run == direct
    assert (run.event_id, run.events, run.priority_ms) == ("E9", [later], 60_000)
    assert run.slots


def test_an_event_failing_the_batch_if_exp_starts_its_own_run() -> None:
    config = {"batch_events": {"max_size": 5, "timeout_ms": 1000, "if_exp": "event.data.ok"}}
    registry = registry_of(config)
    (held,) = planning.plan_event(event({"ok": True}), registry, [])
    (alone,) = planning.plan_event(event({"ok": False}), registry, [])
    assert isinstance(held, m.AddToBatch)
    assert held.key == ""
    assert isinstance(alone, m.CreateRun)
    assert alone.events == [event({"ok": False}).payload()]


def test_a_hold_timer_starts_its_function_and_key() -> None:
    registry = registry_of({"batch_events": {"max_size": 5, "timeout_ms": 1000}})
    timer = m.TimerRecord("T1", m.TIMER_BATCH, "a-f", "ada", 1000)
    (change,) = planning.plan_timer(timer, registry, 2000)
    assert isinstance(change, m.StartHeld)
    assert (change.kind, change.function_id, change.key) == (m.TIMER_BATCH, "a-f", "ada")
    assert change.start("E1", [{"id": "E1"}]).run_id == derived_id("E1", "a-f")
    gone = m.TimerRecord("T2", m.TIMER_DEBOUNCE, "a-gone", "", 1000)
    assert planning.plan_timer(gone, registry, 2000) == []
