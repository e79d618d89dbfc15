"""Gates: flow-control rules that decide, when an event would start a run, whether it does
(rate limit, idempotency, singleton) and when (throttle).

A rule's decision is its own (a `Gate` the scheduler attaches to `CreateRun`); the store only
reads the state the decision needs, inside the transaction that applies it, and writes back
what the decision says. The state is a row per gate key in `gate_state` (locked in key order,
after runs and event keys, so two replicas deciding for one key take turns) and, for a
singleton, the runs that hold its key (`runs.singleton_key`, freed when the run ends).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from . import _codec as codec
from . import _models as m

if TYPE_CHECKING:
    from ._sql import Tx

RATE_LIMITED, IDEMPOTENT, SINGLETON = "rate_limited", "idempotent", "singleton"
"""Why an event started no run, as `refusals` tells it."""

_ACTIVE = (m.QUEUED, m.RUNNING)


@dataclasses.dataclass(frozen=True)
class GateRow:
    """A gate key's stored state; `value` and `scale` mean what its rule says. Once
    `expires_at` has passed the row reads as absent."""

    value: int
    scale: int
    expires_at: int


@dataclasses.dataclass(frozen=True)
class GateState:
    """What a gate decides from, as read in the transaction that applies its decision."""

    now: int
    row: GateRow | None
    holders: tuple[m.RunRecord, ...] = ()
    """The runs of this function, not ended, that hold the key (read for `reads_holders`)."""


@dataclasses.dataclass(frozen=True)
class GateVerdict:
    admit: bool
    row: GateRow | None = None
    """The key's new state, written if the run starts (None: left as it is)."""
    holds: bool = False
    """The new run holds the key until it ends (a singleton)."""
    cancel: tuple[m.RunRecord, ...] = ()
    """Runs cancelled as the new one starts (their workers are told)."""
    changes: tuple[m.Change, ...] = ()
    """What cancelling them takes: their end and its events, applied before the new run."""
    start_at: int | None = None
    """The run starts no earlier than this (a throttle): it is created, its first job is not."""


class Gate(Protocol):
    """One rule's say on one would-be run."""

    @property
    def key(self) -> str:
        """The state it decides from: one per rule, function and key value."""

    @property
    def reason(self) -> str:
        """Recorded for the event when this gate keeps the run from starting."""

    @property
    def reads_holders(self) -> bool: ...

    @property
    def may_cancel(self) -> bool:
        """Whether it may cancel the key's holders (they are then locked with the runs)."""

    def decide(self, state: GateState) -> GateVerdict: ...


LockRuns = Callable[["Tx", set[str]], Awaitable[dict[str, str]]]


class GatePass:
    """The gates of the runs one `process_events` transaction may create. Costs nothing when
    no change carries a gate."""

    def __init__(self, changes: Sequence[m.Change], *, locks_rows: bool) -> None:
        self._gates = [gate for change in changes for gate in _gates_of(change)]
        self._loaded: set[str] = set()
        self._locks_rows = locks_rows
        self._rows: dict[str, GateRow | None] = {}
        self._holders: dict[str, list[m.RunRecord]] = {}
        self._written: dict[str, GateRow] = {}
        self._holding: dict[str, str] = {}
        self._cancelling: list[m.RunRecord] = []
        self._refusals: list[dict[str, str | int]] = []

    async def runs_to_lock(self, tx: Tx) -> set[str]:
        """The runs a singleton may cancel, read before any lock so that they are locked in
        the lock order with the other runs; `admit` locks one that appeared since."""
        keys = sorted({gate.key for gate in self._gates if gate.may_cancel})
        if not keys or not self._locks_rows:
            return set()
        return {row["run_id"] for row in await tx.fetch("select_gate_holders", {"keys": keys})}

    async def lock(self, tx: Tx, now: int) -> None:
        """Locks (PostgreSQL) and reads every gate key's state, sorted by key."""
        await self._load(tx, self._gates, now)

    async def admit_started(
        self,
        tx: Tx,
        started: Sequence[m.CreateRun],
        now: int,
        runs: dict[str, str],
        lock_runs: LockRuns,
    ) -> list[m.Change]:
        """`admit` for runs a hold starts in this transaction (a debounce's or a batch's). Their
        keys are locked now, after the holds (the lock order) but out of order with keys this
        pass locked before: two replicas could deadlock there, which PostgreSQL breaks and the
        loser retries, as the message or timer is redelivered."""
        gates = [gate for run in started for gate in run.gates]
        if gates:
            self._gates.extend(gates)
            await self._load(tx, gates, now)
        return await self.admit(tx, started, now, runs, lock_runs)

    async def _load(self, tx: Tx, gates: Sequence[Gate], now: int) -> None:
        keys = sorted({gate.key for gate in gates} - self._loaded)
        if not keys:
            return
        self._loaded.update(keys)
        for key in keys:
            self._rows.setdefault(key, None)
        for row in await tx.fetch("lock_gate_state", {"keys": keys}):
            state = GateRow(int(row["value"]), int(row["scale"]), int(row["expires_at"]))
            self._rows[row["key"]] = state if state.expires_at > now else None
        holder_keys = sorted({gate.key for gate in gates if gate.reads_holders} & set(keys))
        if holder_keys:
            # Read under the keys' locks: a run another replica made for a key is committed.
            for row in await tx.fetch("select_gate_holders", {"keys": holder_keys}):
                self._holders.setdefault(row["singleton_key"], []).append(codec.run(row))

    async def admit(
        self,
        tx: Tx,
        changes: Sequence[m.Change],
        now: int,
        runs: dict[str, str],
        lock_runs: LockRuns,
    ) -> list[m.Change]:
        """`changes` with each gated run either refused (left out, its reason recorded) or
        admitted (its gates' state updated, and the runs it cancels ended before it)."""
        if not self._gates:
            return list(changes)
        admitted: list[m.Change] = []
        for change in changes:
            if _gated(change):
                assert isinstance(change, (m.CreateRun, m.HoldDebounced, m.AddToBatch))
                admitted.extend(await self._decide(tx, change, now, runs, lock_runs))
            else:
                admitted.append(change)
        return admitted

    async def _decide(
        self,
        tx: Tx,
        change: m.CreateRun | m.HoldDebounced | m.AddToBatch,
        now: int,
        runs: dict[str, str],
        lock_runs: LockRuns,
    ) -> list[m.Change]:
        verdicts: list[tuple[Gate, GateVerdict]] = []
        for gate in change.gates:
            holders = await self._current_holders(tx, gate, runs, lock_runs)
            verdict = gate.decide(GateState(now, self._rows.get(gate.key), holders))
            if not verdict.admit:
                self._refusals.append(
                    {
                        "event_id": change.event_id,
                        "function_id": change.function_id,
                        "reason": gate.reason,
                        "at": now,
                    }
                )
                return []
            verdicts.append((gate, verdict))
        admitted: list[m.Change] = []
        for gate, verdict in verdicts:
            if verdict.row is not None:
                self._rows[gate.key] = self._written[gate.key] = verdict.row
            admitted.extend(verdict.changes)
            self._cancelling.extend(verdict.cancel)
            if verdict.holds and isinstance(change, m.CreateRun):
                self._holders[gate.key] = [_record(change, now)]
                self._holding[change.run_id] = gate.key
        starts = [verdict.start_at for _, verdict in verdicts if verdict.start_at is not None]
        if starts and isinstance(change, m.CreateRun):
            change = dataclasses.replace(change, start_at=max(starts))
        admitted.append(change)
        return admitted

    async def _current_holders(
        self, tx: Tx, gate: Gate, runs: dict[str, str], lock_runs: LockRuns
    ) -> tuple[m.RunRecord, ...]:
        if not gate.reads_holders:
            return ()
        holders = self._holders.get(gate.key, [])
        if gate.may_cancel:
            # A holder that appeared after `runs_to_lock` is locked out of order: rare (another
            # replica started it in between), and a deadlock there is retried as any other.
            missing = {run.run_id for run in holders if run.run_id not in runs}
            if missing:
                runs.update(await lock_runs(tx, missing))
            holders = [run for run in holders if runs.get(run.run_id) in _ACTIVE]
            self._holders[gate.key] = holders
        return tuple(holders)

    async def finish(self, tx: Tx, applied: m.Applied, runs: dict[str, str]) -> None:
        """Writes the gates' new state, marks the runs that hold singleton keys, records the
        refusals, and names the runs cancelled (those whose end was applied)."""
        if not self._gates:
            return
        if self._written:
            states = [
                {"key": key, "value": row.value, "scale": row.scale, "expires_at": row.expires_at}
                for key, row in sorted(self._written.items())
            ]
            await tx.execute("write_gate_state", {"states": codec.dumps(states)})
        holding = [
            {"run_id": run_id, "key": key}
            for run_id, key in self._holding.items()
            if runs.get(run_id) in _ACTIVE
        ]
        if holding:
            await tx.execute("hold_gate_keys", {"holds": codec.dumps(holding)})
        if self._refusals:
            await tx.execute("insert_run_refusals", {"refusals": codec.dumps(self._refusals)})
            applied.flow.extend(
                m.FlowEffect(str(r["function_id"]), str(r["reason"])) for r in self._refusals
            )


def _gates_of(change: m.Change) -> tuple[Gate, ...]:
    """The gates a change must pass: a run's creation's, or an event's hold's."""
    if isinstance(change, (m.CreateRun, m.HoldDebounced, m.AddToBatch)):
        return change.gates
    return ()


def _gated(change: m.Change) -> bool:
    return bool(_gates_of(change))


def _record(change: m.CreateRun, now: int) -> m.RunRecord:
    """The run `change` creates, as a later event of the same batch sees it holding its key."""
    return m.RunRecord(
        run_id=change.run_id,
        function_id=change.function_id,
        app_id=change.app_id,
        event_id=change.event_id,
        status=m.QUEUED,
        events=change.events,
        queued_at=now,
        parent=change.parent,
    )
