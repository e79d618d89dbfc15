"""Wait and cancel-listener candidates (`Store.wait_candidates`): found by index among thousands
of non-matching ones, in a constant number of statements, on every backend."""

from __future__ import annotations

import itertools
from typing import Any

from tideflow._core import matching
from tideflow.store import Store
from tideflow.store import metrics as store_metrics
from tideflow.store import models as m

NOW = 1_700_000_000_000
WAITING = 3_000
KEYED = "event.data.user == async.data.user"
_counter = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_counter):06d}"


def event(name: str, data: dict[str, Any], at: int = NOW) -> m.EventRecord:
    return m.EventRecord(internal_id=unique("evt"), name=name, data=data, ts=at, received_at=at)


def listening_run(
    trigger: m.EventRecord,
    if_exp: str | None,
    *,
    name: str = "app/stop",
    timeout_ms: int | None = None,
) -> m.CreateRun:
    run_id = unique("run")
    payload = trigger.payload()
    index = matching.wait_index(if_exp, payload)
    wait = m.WaitRecord(
        run_id,
        "cancel:0",
        m.WAIT_CANCEL,
        event_name=name,
        if_exp=if_exp,
        run_event=payload,
        match_path=index[0] if index else None,
        match_key=index[1] if index else None,
    )
    return m.CreateRun(
        run_id=run_id,
        function_id="app-fn",
        app_id="app",
        event_id=trigger.internal_id,
        events=[payload],
        listeners=(m.Listener(wait, timeout_ms),),
    )


async def create(store: Store, runs: list[m.CreateRun], now: int = NOW) -> None:
    for start in range(0, len(runs), 500):
        await store.process_events([(event("app/go", {}, now), runs[start : start + 500])], now)


def statements() -> float:
    return sum(
        sample.value
        for metric in store_metrics.STATEMENTS.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def found(candidates: dict[str, list[m.WaitRecord]], evt: m.EventRecord) -> list[tuple[str, str]]:
    return sorted((wait.run_id, wait.kind) for wait in candidates[evt.internal_id])


async def test_candidates_are_found_by_key_among_thousands_of_waiting_runs(store: Store) -> None:
    keyed = [listening_run(event("app/go", {"user": f"u{n}"}), KEYED) for n in range(WAITING)]
    # A non-equality is found by name, whatever its value; a run with no value at the path
    # is too (its expression decides, and fails); an expired listener is not found.
    fallback = listening_run(event("app/go", {"level": 1}), "async.data.level > event.data.level")
    no_value = listening_run(event("app/go", {}), KEYED)
    expired = listening_run(event("app/go", {"user": "u7"}), KEYED, timeout_ms=1_000)
    other_name = listening_run(event("app/go", {"user": "u7"}), KEYED, name="app/other")
    await create(store, [*keyed, fallback, no_value, expired, other_name])
    # An event wait of the same run's kind of index: found with the listeners.
    waiting = keyed[7].run_id
    wait = m.WaitRecord(
        waiting,
        "h1",
        m.WAIT_EVENT,
        event_name="app/stop",
        if_exp=KEYED,
        run_event={"data": {"user": "u7"}},
        match_path=matching.path_text(("data", "user")),
        match_key=matching.key_of("u7"),
    )
    step = m.StepRecord("h1", "h1", "WaitForEvent", m.STEP_WAITING, started_at=NOW)
    await store.process_events([(event("app/go", {}), [m.AddWait(step, waiting, wait)])], NOW)

    u7 = event("app/stop", {"user": "u7"}, NOW + 5_000)
    u2999 = event("app/stop", {"user": "u2999"}, NOW + 5_000)
    typed = event("app/stop", {"user": 7}, NOW + 5_000)
    nobody = event("app/stop", {}, NOW + 5_000)
    unrelated = event("app/unrelated", {"user": "u7"}, NOW + 5_000)
    before = statements()
    candidates = await store.wait_candidates([u7, u2999, typed, nobody, unrelated], NOW + 5_000)
    spent = statements() - before

    unkeyed = [(fallback.run_id, m.WAIT_CANCEL), (no_value.run_id, m.WAIT_CANCEL)]
    assert found(candidates, u7) == sorted(
        [(waiting, m.WAIT_CANCEL), (waiting, m.WAIT_EVENT), *unkeyed]
    )
    assert found(candidates, u2999) == sorted([(keyed[-1].run_id, m.WAIT_CANCEL), *unkeyed])
    assert found(candidates, typed) == sorted(unkeyed)
    assert found(candidates, nobody) == sorted(unkeyed)
    assert found(candidates, unrelated) == []
    (listener,) = [w for w in candidates[u2999.internal_id] if w.run_id == keyed[-1].run_id]
    assert listener.run is not None
    assert listener.run.events == keyed[-1].events
    # The paths in use, then one probe per key: not one statement per waiting run or event.
    assert spent == 2

    # Events no run waits for: one statement.
    before = statements()
    assert await store.wait_candidates([unrelated], NOW + 5_000) == {}
    assert statements() - before == 1

    # Before its timeout, the expired listener was found.
    early = await store.wait_candidates([u7], NOW + 500)
    assert (expired.run_id, m.WAIT_CANCEL) in found(early, u7)


async def test_a_run_that_ends_drops_its_listeners(store: Store) -> None:
    run = listening_run(event("app/go", {"user": "gone"}), KEYED)
    kept = listening_run(event("app/go", {"user": "gone"}), KEYED)
    await create(store, [run, kept])
    stop = event("app/stop", {"user": "gone"})
    assert len((await store.wait_candidates([stop], NOW))[stop.internal_id]) == 2
    await store.process_events([(event("app/go", {}), [m.FinishRun(run.run_id, m.CANCELLED)])], NOW)
    assert found(await store.wait_candidates([stop], NOW), stop) == [(kept.run_id, m.WAIT_CANCEL)]
