"""A bulk cancellation's batch, decided from the runs it reads."""

from __future__ import annotations

from typing import Any

from tideflow.scheduler import _cancel_requests as cancel_requests
from tideflow.store import models as m

NOW = 1_700_000_000_000


def record(*, if_exp: str | None = None) -> m.CancellationRecord:
    return m.CancellationRecord(
        cancellation_id="c1",
        function_id="app-fn",
        started_after=NOW - 1000,
        started_before=NOW,
        if_exp=if_exp,
        created_at=NOW,
        cursor_at=NOW - 1000,
        cursor_id="",
    )


def run(run_id: str, at: int, *, status: str = m.RUNNING, data: Any = None) -> m.RunRecord:
    return m.RunRecord(
        run_id=run_id,
        function_id="app-fn",
        app_id="app",
        event_id=f"evt-{run_id}",
        status=status,
        events=[{"name": "app/thing", "data": data or {}}],
        queued_at=at,
    )


def cancelled_ids(batch: cancel_requests.Batch) -> list[str]:
    return [c.run_id for c in batch.changes if isinstance(c, m.FinishRun)]


def test_a_full_batch_cancels_live_runs_moves_the_cursor_and_asks_for_the_next() -> None:
    runs = [run("a", NOW - 900), run("b", NOW - 800, status=m.COMPLETED), run("c", NOW - 700)]

    batch = cancel_requests.plan_batch(record(), runs, NOW, limit=3)

    assert cancelled_ids(batch) == ["a", "c"]
    finishes = [c for c in batch.changes if isinstance(c, m.FinishRun)]
    assert {f.status for f in finishes} == {m.CANCELLED}
    assert {f.error.message if f.error else None for f in finishes} == {
        "cancelled by bulk cancellation c1 (bulk)"
    }
    (following,) = [c.timer for c in batch.changes if isinstance(c, m.AddTimer)]
    assert (following.kind, following.run_id, following.due_at) == (
        m.TIMER_BULK_CANCEL,
        "c1",
        NOW,
    )
    assert batch.cursor == (NOW - 700, "c")
    assert not batch.completed


def test_a_short_batch_is_the_last_and_asks_for_no_other() -> None:
    batch = cancel_requests.plan_batch(record(), [run("a", NOW - 900)], NOW, limit=3)

    assert cancelled_ids(batch) == ["a"]
    assert not [c for c in batch.changes if isinstance(c, m.AddTimer)]
    assert batch.completed


def test_an_empty_batch_keeps_the_cursor_and_completes() -> None:
    batch = cancel_requests.plan_batch(record(), [], NOW, limit=3)

    assert batch == cancel_requests.Batch([], (NOW - 1000, ""), True)


def test_if_exp_sees_the_runs_triggering_event() -> None:
    runs = [run("a", NOW - 3, data={"plan": "free"}), run("b", NOW - 2, data={"plan": "paid"})]
    runs.append(run("c", NOW - 1, data={"other": 1}))  # no `plan`: an error, so no match

    batch = cancel_requests.plan_batch(
        record(if_exp="event.data.plan == 'free'"), runs, NOW, limit=5
    )

    assert cancelled_ids(batch) == ["a"]
    assert batch.cursor == (NOW - 1, "c")
