"""The scheduler's flow-control metrics: what each effect counts, under which labels, and the
pending gauge going back to 0 for a function whose backlog drained."""

from __future__ import annotations

from typing import Any

import prometheus_client
from tideflow.scheduler import _metrics
from tideflow.store import models as m


def sample(name: str, **labels: str) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0


def test_each_effect_is_counted_once_under_its_function_and_reason_or_rule() -> None:
    names = {
        "refused": ("tideflow_scheduler_events_refused_total", {"reason": "rate_limited"}),
        "idem": ("tideflow_scheduler_events_refused_total", {"reason": "idempotent"}),
        "throttled": ("tideflow_scheduler_runs_throttled_total", {}),
        "debounced": ("tideflow_scheduler_events_held_total", {"rule": "debounce"}),
        "batched": ("tideflow_scheduler_events_held_total", {"rule": "batch"}),
    }
    before = {key: sample(name, function="fm-f", **labels) for key, (name, labels) in names.items()}

    _metrics.count_flow(
        [
            m.FlowEffect("fm-f", "rate_limited"),
            m.FlowEffect("fm-f", "rate_limited"),
            m.FlowEffect("fm-f", "idempotent"),
            m.FlowEffect("fm-f", m.THROTTLED),
            m.FlowEffect("fm-f", m.DEBOUNCED),
            m.FlowEffect("fm-f", m.BATCHED),
            m.FlowEffect("fm-other", m.BATCHED),
        ]
    )

    after = {key: sample(name, function="fm-f", **labels) for key, (name, labels) in names.items()}
    assert {key: after[key] - before[key] for key in names} == {
        "refused": 2,
        "idem": 1,
        "throttled": 1,
        "debounced": 1,
        "batched": 1,
    }


def test_admitted_jobs_are_counted_by_function() -> None:
    before = sample("tideflow_scheduler_jobs_admitted_total", function="fm-a")
    _metrics.count_admitted(
        [m.JobRecord("j1", "r1", "fm-a", "app"), m.JobRecord("j2", "r2", "fm-a", "app")]
    )
    assert sample("tideflow_scheduler_jobs_admitted_total", function="fm-a") == before + 2


class FakeStore:
    def __init__(self, answers: list[dict[str, int]]) -> None:
        self.answers = answers

    async def pending_jobs_by_function(self) -> dict[str, int]:
        return self.answers.pop(0)


async def test_the_pending_gauge_returns_to_zero_when_a_backlog_drains() -> None:
    store: Any = FakeStore([{"fm-p": 3, "fm-q": 1}, {"fm-q": 2}])
    seen = await _metrics._sample_pending(store, set())
    assert sample("tideflow_scheduler_jobs_pending", function="fm-p") == 3
    await _metrics._sample_pending(store, seen)
    assert sample("tideflow_scheduler_jobs_pending", function="fm-p") == 0
    assert sample("tideflow_scheduler_jobs_pending", function="fm-q") == 2


class SlotStore:
    async def slots_in_use_by_function(self) -> dict[str, int]:
        return {"fm-s": 2}


async def test_every_limited_function_has_a_slots_gauge_zero_when_it_holds_none() -> None:
    store: Any = SlotStore()
    await _metrics.sample_slots(store, ["fm-s", "fm-idle"])
    assert sample("tideflow_scheduler_slots_in_use", function="fm-s") == 2
    assert sample("tideflow_scheduler_slots_in_use", function="fm-idle") == 0
