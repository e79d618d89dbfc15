"""rate_limit, idempotency and singleton: their checks when a function is defined, and their
decisions as pure values of the state a transaction read."""

from __future__ import annotations

from typing import Any

import pytest
import tideflow
from tideflow import errors
from tideflow._core.protocol import ErrorInfo
from tideflow.scheduler._planning import plan_event
from tideflow.scheduler._registry import Registry, _spec
from tideflow.scheduler.flow import idempotency, rate_limit, run_gates, singleton
from tideflow.store import gates
from tideflow.store import models as m

NOW = 1_700_000_000_000


def handler(ctx: tideflow.Context) -> None:
    return None


def define(**options: Any) -> tideflow.Function:
    client = tideflow.Client(app_id="gates")
    return client.create_function(
        fn_id="guarded", trigger=tideflow.TriggerEvent(event="t/x"), **options
    )(handler)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        (
            {"rate_limit": tideflow.RateLimit(limit=0, period="1s")},
            errors.ConfigError,
            r"^guarded: rate_limit.limit must be an int in 1..100000, got 0$",
        ),
        (
            {"rate_limit": tideflow.RateLimit(limit=2, period="500ms")},
            errors.ConfigError,
            r"^guarded: rate_limit.period must be between 1s and 1m, got '500ms'$",
        ),
        (
            {"rate_limit": tideflow.RateLimit(limit=2, period="2m")},
            errors.ConfigError,
            r"^guarded: rate_limit.period must be between 1s and 1m, got '2m'$",
        ),
        (
            {"rate_limit": tideflow.RateLimit(limit=2, period="1s", key="event.data.(")},
            errors.ExpressionError,
            r"guarded: rate_limit.key",
        ),
        (
            {"rate_limit": 3},
            errors.ConfigError,
            r"^guarded: rate_limit must be a tideflow.RateLimit, got 3$",
        ),
        (
            {"idempotency": "event..id"},
            errors.ExpressionError,
            r"guarded: idempotency",
        ),
        (
            {"idempotency": 5},
            errors.ConfigError,
            r"^guarded: idempotency must be a CEL expression string, got 5$",
        ),
        (
            {"singleton": tideflow.Singleton(mode="queue")},  # type: ignore[arg-type]
            errors.ConfigError,
            r"^guarded: singleton.mode must be one of \('skip', 'cancel'\), got 'queue'$",
        ),
        (
            {"singleton": tideflow.Singleton(key="event.data.[")},
            errors.ExpressionError,
            r"guarded: singleton.key",
        ),
    ],
)
def test_a_bad_gate_option_is_refused_naming_function_and_option(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        define(**options)


def test_good_gate_options_reach_the_function_config() -> None:
    function = define(
        rate_limit=tideflow.RateLimit(limit=5, period="30s", key="event.data.user"),
        idempotency="event.data.order",
        singleton=tideflow.Singleton(mode="cancel"),
    )
    config = function.config()

    assert config["rate_limit"] == {"limit": 5, "period_ms": 30_000, "key": "event.data.user"}
    assert config["idempotency"] == "event.data.order"
    assert config["singleton"] == {"key": None, "mode": "cancel"}


def decide_in_turn(gate: Any, times: list[int]) -> list[bool]:
    """Decides for one event at each time, writing back the state as the store would."""
    row: gates.GateRow | None = None
    admitted = []
    for now in times:
        current = row if row is not None and row.expires_at > now else None
        verdict = gate.decide(gates.GateState(now, current))
        if verdict.admit and verdict.row is not None:
            row = verdict.row
        admitted.append(verdict.admit)
    return admitted


@pytest.mark.parametrize(("limit", "period_ms"), [(3, 1000), (400, 1000), (7, 60_000)])
def test_a_burst_admits_exactly_the_limit(limit: int, period_ms: int) -> None:
    gate = rate_limit.Gate("k", limit, period_ms)
    assert decide_in_turn(gate, [NOW] * (limit + 5)) == [True] * limit + [False] * 5


def test_rate_limit_capacity_returns_one_run_per_emission_interval() -> None:
    gate = rate_limit.Gate("k", 3, 1000)
    times = [NOW, NOW, NOW, NOW + 333, NOW + 334, NOW + 335, NOW + 1334]
    assert decide_in_turn(gate, times) == [True, True, True, False, True, False, True]


def test_rate_limit_after_a_quiet_period_admits_a_full_burst_again() -> None:
    gate = rate_limit.Gate("k", 2, 1000)
    times = [NOW, NOW, NOW, NOW + 2000, NOW + 2000, NOW + 2000]
    assert decide_in_turn(gate, times) == [True, True, False, True, True, False]


def test_rate_limit_state_written_under_another_limit_keeps_its_time() -> None:
    # One run at NOW under 2 per second: the TAT is NOW + 500 ms, in units of 1/2 ms.
    row: gates.GateRow | None = gates.GateRow(NOW * 2 + 1000, 2, NOW + 500)
    gate = rate_limit.Gate("k", 4, 1000)
    admitted = []
    for _ in range(3):
        verdict = gate.decide(gates.GateState(NOW, row))
        admitted.append(verdict.admit)
        row = verdict.row or row

    # Under 4 per second (250 ms apart) the TAT is 500 ms ahead: two more fit in the second.
    assert admitted == [True, True, False]
    assert row == gates.GateRow(NOW * 4 + 4000, 4, NOW + 1000)


def test_idempotency_admits_the_first_run_of_a_key_for_a_day() -> None:
    gate = idempotency.Gate("k")
    first = gate.decide(gates.GateState(NOW, None))
    again = gate.decide(gates.GateState(NOW + 5, first.row))

    assert first == gates.GateVerdict(
        admit=True, row=gates.GateRow(0, 1, NOW + idempotency.WINDOW_MS)
    )
    assert again == gates.GateVerdict(admit=False)


def holder() -> m.RunRecord:
    return m.RunRecord(
        run_id="run-1",
        function_id="gates-guarded",
        app_id="gates",
        event_id="evt-1",
        status=m.RUNNING,
        events=[{"name": "t/x", "data": {}}],
        queued_at=NOW - 10,
    )


def test_singleton_skip_refuses_while_a_run_holds_the_key() -> None:
    gate = singleton.Gate("k", may_cancel=False)

    assert gate.decide(gates.GateState(NOW, None)) == gates.GateVerdict(admit=True, holds=True)
    assert gate.decide(gates.GateState(NOW, None, (holder(),))) == gates.GateVerdict(admit=False)


def test_singleton_cancel_ends_the_holder_with_its_cancelled_event() -> None:
    gate = singleton.Gate("k", may_cancel=True)
    verdict = gate.decide(gates.GateState(NOW, None, (holder(),)))

    assert (verdict.admit, verdict.holds, verdict.cancel) == (True, True, (holder(),))
    finish, added = verdict.changes
    assert finish == m.FinishRun(
        "run-1",
        m.CANCELLED,
        error=ErrorInfo(
            "Cancelled", "cancelled by singleton: a new run with its key started (singleton)"
        ),
    )
    assert isinstance(added, m.AddEvents)
    assert [(e.name, e.data["run_id"]) for e in added.events] == [
        ("tideflow/function.cancelled", "run-1")
    ]


def test_a_runs_gates_come_in_flow_control_order_keyed_per_function_and_value() -> None:
    spec = _spec(
        {
            "function_id": "gates-guarded",
            "app_id": "gates",
            "triggers": [{"event": "t/x"}],
            "rate_limit": {"limit": 1, "period_ms": 1000, "key": "event.data.user"},
            "idempotency": "event.data.order",
            "singleton": {"key": None, "mode": "skip"},
        }
    )
    event = {"name": "t/x", "data": {"user": "a", "order": 7}}
    limited, once, single = run_gates.for_run(spec, event)
    other = run_gates.for_run(spec, {"name": "t/x", "data": {"user": "b", "order": 7}})

    assert [type(g) for g in (limited, once, single)] == [
        rate_limit.Gate,
        idempotency.Gate,
        singleton.Gate,
    ]
    assert limited.key == run_gates.gate_key("rate_limit", "gates-guarded", "a")
    assert once.key == run_gates.gate_key("idempotency", "gates-guarded", "7")
    assert other[0].key != limited.key
    assert other[1].key == once.key
    assert run_gates.gate_key("rate_limit", "gates-other", "a") != limited.key


def test_events_and_cron_ticks_pass_the_gates_invocations_do_not() -> None:
    registry = Registry()
    spec = _spec(
        {
            "function_id": "gates-guarded",
            "app_id": "gates",
            "triggers": [{"event": "t/x"}, {"cron": "* * * * *"}],
            "singleton": {"key": None, "mode": "skip"},
        }
    )
    registry._functions = {spec.function_id: spec}

    def planned(event: m.EventRecord) -> m.CreateRun:
        (change,) = plan_event(event, registry, [])
        assert isinstance(change, m.CreateRun)
        return change

    sent = m.EventRecord("e1", "t/x", {}, NOW, NOW)
    tick = m.EventRecord.targeted(
        "tideflow/scheduled.timer", {}, internal_id="e2", function_id=spec.function_id, now=NOW
    )
    invoked = m.EventRecord.targeted(
        "tideflow/function.invoked",
        {},
        internal_id="e3",
        function_id=spec.function_id,
        now=NOW,
        parent={"run_id": "parent", "step_hash": "h"},
    )

    assert [len(planned(event).gates) for event in (sent, tick, invoked)] == [1, 1, 0]
