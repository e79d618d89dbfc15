"""The concurrency rule's decisions, as values: which waiting jobs are admitted, and which
pools a run draws from."""

from __future__ import annotations

from tideflow._core.expressions import compile_expression
from tideflow.scheduler.flow import concurrency
from tideflow.store import models as m


def job(job_id: str, *slots: tuple[str, int], order_at: int = 0) -> m.PendingJob:
    return m.PendingJob(job_id, order_at, tuple(m.Slot(key, limit) for key, limit in slots))


def test_jobs_are_admitted_in_line_order_while_slots_are_free() -> None:
    waiting = [job("j1", ("a", 2)), job("j2", ("a", 2)), job("j3", ("a", 2))]
    assert concurrency.admit(waiting, {}) == ["j1", "j2"]
    assert concurrency.admit(waiting, {"a": 1}) == ["j1"]
    assert concurrency.admit(waiting, {"a": 2}) == []


def test_a_job_needs_a_slot_in_every_pool_and_a_full_pool_holds_back_only_its_own() -> None:
    waiting = [job("j1", ("all", 3), ("user-1", 1)), job("j2", ("all", 3), ("user-2", 1))]
    assert concurrency.admit(waiting, {"user-1": 1}) == ["j2"]
    assert concurrency.admit(waiting, {"all": 2}) == ["j1"]


def test_each_job_obeys_its_own_limit_in_a_shared_pool() -> None:
    waiting = [job("strict", ("shared", 1)), job("lenient", ("shared", 3))]
    assert concurrency.admit(waiting, {"shared": 1}) == ["lenient"]


def test_a_run_draws_from_one_pool_per_constraint_and_scope() -> None:
    per_user = concurrency.Constraint(1, compile_expression("event.data.user"), "fn")
    per_team = concurrency.Constraint(5, compile_expression("event.data.team"), "fn")
    shared = concurrency.Constraint(2, compile_expression("event.data.user"), "env")
    event = {"data": {"user": "u1", "team": "u1"}}

    slots = concurrency.slots([per_user, per_team], "app-f", "prod", event)
    # The same value under two key expressions is two pools.
    assert len({slot.key for slot in slots}) == 2
    assert [slot.limit for slot in slots] == [1, 5]
    (env_slot,) = concurrency.slots([shared], "app-f", "prod", event)
    (other_function,) = concurrency.slots([shared], "app-g", "prod", event)
    assert env_slot == other_function
    (other_env,) = concurrency.slots([shared], "app-f", "staging", event)
    assert other_env != env_slot


def test_one_pool_named_twice_obeys_the_lower_limit() -> None:
    loose = concurrency.Constraint(5, None, "fn")
    tight = concurrency.Constraint(2, None, "fn")
    (slot,) = concurrency.slots([loose, tight], "app-f", "prod", {"data": {}})
    assert slot.limit == 2
